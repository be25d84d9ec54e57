"""Steady-state throughput of one instance for a workload, optionally under SLOs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hetserve.config import AcceleratorSpec, ModelSpec, SLOSpec
from hetserve.model.memory import memory_fit
from hetserve.records import InstancePrediction, LatencyCoeffs

__all__ = ["Workload", "predict_instance", "saturated_batch", "steady_state"]


@dataclass(frozen=True, slots=True)
class Workload:
    """Mean request shape plus the longest request the instance must hold."""

    mean_input_tokens: float
    mean_output_tokens: float
    max_request_tokens: int


@dataclass(frozen=True, slots=True)
class SteadyState:
    batch_size: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_s: float
    tpot_s: float


def steady_state(coeffs: LatencyCoeffs, batch_size: int, wl: Workload) -> SteadyState:
    """Continuous batching with B sequences in flight (DESIGN.md):

    every request costs one prefill of l_in tokens and l_out decode steps, so
    X_req = B / (l_out * T_d(B, B*(l_in + l_out/2)) + B * T_p(l_in)).
    TPOT counts the prefills that stall each decode step (B/l_out of them per step); TTFT is
    one step in progress plus the request's own prefill, with no queueing.
    """
    b = max(1, batch_size)
    l_in, l_out = wl.mean_input_tokens, wl.mean_output_tokens
    t_d = coeffs.decode_s(b, b * (l_in + l_out / 2.0))
    t_p = coeffs.prefill_s(l_in)
    cycle = l_out * t_d + b * t_p
    x_req = b / cycle
    tpot = t_d + (b / l_out) * t_p
    ttft = t_d + t_p
    return SteadyState(b, x_req, x_req * l_out, ttft, tpot)


def saturated_batch(kv_capacity_tokens: int, max_num_seqs: int, wl: Workload) -> int:
    """The batch a saturated instance holds: max_num_seqs, or fewer when the KV cache fills
    first (each sequence sized at its full prompt + output)."""
    per_seq = wl.mean_input_tokens + wl.mean_output_tokens
    return max(1, min(max_num_seqs, math.floor(kv_capacity_tokens / per_seq)))


def predict_instance(
    model: ModelSpec,
    accel: AcceleratorSpec,
    coeffs: LatencyCoeffs,
    tp: int,
    max_num_seqs: int,
    gpu_memory_utilization: float,
    reserve_gib: float,
    workload: Workload,
    slo: SLOSpec | None = None,
) -> InstancePrediction:
    """Memory fit, then the largest batch the KV cache, max_num_seqs and the SLOs allow."""
    fit = memory_fit(model, accel, tp, gpu_memory_utilization, reserve_gib, workload.max_request_tokens)
    if not fit.feasible:
        return InstancePrediction(False, fit.reason, fit.kv_capacity_tokens, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    per_seq = workload.mean_input_tokens + workload.mean_output_tokens
    b_max = saturated_batch(fit.kv_capacity_tokens, max_num_seqs, workload)
    state = steady_state(coeffs, b_max, workload)
    if slo is not None and (slo.tpot_ms or slo.ttft_ms):

        def meets(s: SteadyState) -> bool:
            return (slo.tpot_ms is None or s.tpot_s * 1e3 <= slo.tpot_ms) and (
                slo.ttft_ms is None or s.ttft_s * 1e3 <= slo.ttft_ms
            )

        if not meets(state):
            # TPOT and TTFT both grow with B: bisect for the largest B that meets them.
            lo, hi = 0, b_max
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if meets(steady_state(coeffs, mid, workload)):
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                one = steady_state(coeffs, 1, workload)
                return InstancePrediction(
                    False,
                    f"SLO unreachable even at batch 1 (TTFT {one.ttft_s * 1e3:.0f} ms, TPOT {one.tpot_s * 1e3:.1f} ms)",
                    fit.kv_capacity_tokens,
                    0,
                    0.0,
                    0.0,
                    0.0,
                    one.ttft_s,
                    one.tpot_s,
                )
            state = steady_state(coeffs, lo, workload)
    total = state.requests_per_s * per_seq
    return InstancePrediction(
        True,
        "",
        fit.kv_capacity_tokens,
        state.batch_size,
        state.output_tokens_per_s,
        state.requests_per_s,
        total,
        state.ttft_s,
        state.tpot_s,
    )
