"""Memory fit of one instance: do the weights fit on TP devices, and how many KV tokens remain."""

from __future__ import annotations

from dataclasses import dataclass

from hetserve.config import AcceleratorSpec, ModelSpec

GIB = float(1 << 30)


@dataclass(frozen=True, slots=True)
class MemoryFit:
    feasible: bool
    reason: str
    kv_capacity_tokens: int
    weight_gib_per_device: float


def memory_fit(
    model: ModelSpec,
    accel: AcceleratorSpec,
    tp: int,
    gpu_memory_utilization: float,
    reserve_gib: float,
    max_request_tokens: int,
) -> MemoryFit:
    """K(t) = t * (u*M - W/t - r) / kv_bytes_per_token  (DESIGN.md, throughput model).

    Feasible only if the heads split evenly over t devices and K holds one longest request.
    """
    weight_per_dev = model.weight_bytes / tp
    if model.num_heads % tp:
        return MemoryFit(False, f"num_heads={model.num_heads} not divisible by tp={tp}", 0, weight_per_dev / GIB)
    usable = gpu_memory_utilization * accel.memory_gib * GIB
    free_per_dev = usable - weight_per_dev - reserve_gib * GIB
    if free_per_dev <= 0:
        return MemoryFit(
            False,
            f"weights need {weight_per_dev / GIB:.1f} GiB per device at tp={tp}, "
            f"{accel.name} offers {usable / GIB - reserve_gib:.1f} GiB "
            f"({gpu_memory_utilization:.0%} of {accel.memory_gib:g} GiB less {reserve_gib:g} GiB reserve)",
            0,
            weight_per_dev / GIB,
        )
    capacity = int(tp * free_per_dev / model.kv_bytes_per_token)
    if capacity < max_request_tokens:
        return MemoryFit(
            False,
            f"KV cache holds {capacity} tokens at tp={tp}, less than one request of {max_request_tokens}",
            capacity,
            weight_per_dev / GIB,
        )
    return MemoryFit(True, "", capacity, weight_per_dev / GIB)
