"""Steady-state throughput of one instance for a workload, optionally under SLOs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hetserve.config import AcceleratorSpec, ModelSpec, SLOSpec
from hetserve.model.memory import memory_fit
from hetserve.records import DEFAULT_MAX_NUM_BATCHED_TOKENS, InstancePrediction, LatencyCoeffs, Workload

__all__ = ["Workload", "predict_instance", "saturated_batch", "steady_state"]


@dataclass(frozen=True, slots=True)
class SteadyState:
    batch_size: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_s: float
    tpot_s: float


def steady_state(
    coeffs: LatencyCoeffs, batch_size: int, wl: Workload, max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
) -> SteadyState:
    """Continuous batching with B sequences in flight, stepped as engines/batching.py steps them
    (DESIGN.md): each of the B slots cycles through its prompt in n chunks (each at most the step
    budget left after the other B-1 decodes; the last chunk samples the first token) and then
    l_out - 1 decode steps. A chunk rides in a decode step and adds
    delta = step_time_s(chunk, B-1 decodes) - T_d(B-1), so B requests take
      cycle = (n + l_out - 1) * T_d(B - m, S) + B * n * delta,   m = B * n / (n + l_out - 1)
    (m: slots prefilling in an average step), X_req = B / cycle. TPOT is the mean step time;
    TTFT is n mean steps, with no queueing.
    """
    from hetserve.engines.batching import step_time_s  # pure; no cycle at import time

    b = max(1, batch_size)
    l_in, l_out = max(1.0, wl.mean_input_tokens), max(1.0, wl.mean_output_tokens)
    ctx = l_in + l_out / 2.0  # mean KV context of a decoding sequence
    chunk = max(1.0, min(l_in, max_num_batched_tokens - (b - 1)))
    n = math.ceil(l_in / chunk)
    chunk = l_in / n
    decodes = coeffs.decode_s(b - 1, (b - 1) * ctx)
    delta = step_time_s(coeffs, chunk, l_in * l_in / n, b - 1, (b - 1) * ctx) - decodes
    steps = n + l_out - 1
    m = b * n / steps
    cycle = steps * coeffs.decode_s(b - m, (b - m) * ctx) + b * n * delta
    x_req = b / cycle
    step_s = cycle / steps
    return SteadyState(b, x_req, x_req * l_out, n * step_s, step_s)


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
