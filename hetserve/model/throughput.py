"""Steady-state throughput of one instance for a workload, optionally under SLOs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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


# Gauss-Hermite nodes for expectations over a lognormal length (probabilists' weights, summing to 1).
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(10)
_GH_W = _GH_W / _GH_W.sum()
_NO_PROMPT = (np.zeros(1), np.ones(1))
# Iterations for the admissions per step lambda, the root of E[tokens](lambda) / l_out = lambda.
# The plain fixed point is exact at once when prompts never spill over the step budget and
# converges in a few steps when they spill a little. With long prompts, a few output tokens and a
# large batch it overshoots: admitting every slot leaves no decodes, admitting few leaves room
# for all, so it alternates (and kept one of two wrong answers: 0.14x the simulator's rate on a
# 2055-in / 7-out class) or spirals in slowly (0.90x after 4 steps on 1011 in / 13 out). From its
# first overshoot on, the root is bracketed and bisected.
_MAX_ITERATIONS = 40


def _lognormal_points(mean: float, cv: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature of a lognormal length of this mean and coefficient of variation (one point at
    the mean when cv is 0): the traces' lengths are heavy-tailed, roughly lognormal."""
    if cv <= 1e-9:
        return np.array([mean]), np.array([1.0])
    s2 = math.log1p(cv * cv)
    return mean * np.exp(math.sqrt(s2) * _GH_X - s2 / 2.0), _GH_W


def _binomial_pmf(n: int, p: float) -> list[float]:
    """P(k of n slots), k = 0..n, each independently with probability p (0 < p < 1)."""
    q = 1.0 - p
    out = [q**n]
    for k in range(1, n + 1):
        out.append(out[-1] * (n - k + 1) / k * p / q)
    return out


def steady_state(
    coeffs: LatencyCoeffs, batch_size: int, wl: Workload, max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
) -> SteadyState:
    """Continuous batching with B sequences in flight, stepped as engines/batching.py steps them,
    each step priced by that step's own function (`step_time_s`), in expectation over what a step
    of a saturated instance carries.

    A slot freed by a finish is refilled in the next step (its whole prompt, chunked by the
    token budget), so a step carries the prompts of the k slots that finished in the step before,
    with B - k decodes: k ~ Binomial(B, lambda/B), lambda the admissions per step. The k prompts
    add up to S tokens (lognormal of mean k*l_in, coefficient of variation cv_in/sqrt(k)); when S
    exceeds the budget left after the decodes it spills over j steps, each full but the last, and
    the decodes emit in all of them. So one admission "event" takes
      time(k, S) = sum of the j steps' step_time_s,   tokens(k, S) = j*(B - k) + k,
    output tokens/s = E[tokens] / E[time], and lambda = E[tokens] / l_out (finishes per event),
    solved by fixed point. Because a mixed step costs max(memory-bound decode, compute-bound pass
    over all tokens), a step's price is convex in S: several prompts in one step, and long ones,
    cost more than the mean prompt riding alone (that was the old model's 1.18x on a lognormal mix).

    When prompts alone would fill every step's budget (prefill-bound: B*l_in/l_out > budget - D),
    every step is full: D = budget*(l_out-1)/(l_in+l_out-1) decodes and budget - D prompt tokens,
    X = (budget - D)/l_in requests per step; the lower of the two answers holds.

    A decoding sequence's mean context is l_in + E[l_out**2]/(2 E[l_out]) (slots are held in
    proportion to output length). TPOT is the mean step time; TTFT the mean time of an event that
    admits (prefill-bound: plus the wait for budget inside the batch); no queueing before admission.
    """
    from hetserve.engines.batching import step_time_s  # pure; no cycle at import time

    b = max(1, batch_size)
    budget = max(1, max_num_batched_tokens)
    l_in, l_out = max(1.0, wl.mean_input_tokens), max(1.0, wl.mean_output_tokens)
    cv_in, cv_out = max(0.0, wl.input_tokens_cv), max(0.0, wl.output_tokens_cv)
    ctx = l_in + l_out * (1.0 + cv_out * cv_out) / 2.0
    mean_sq = l_in * l_in * (1.0 + cv_in * cv_in)  # E[l_in**2]: a prompt's attention term

    def event(k: int, total: float) -> tuple[float, float, int]:
        """Time, output tokens and steps of the steps that prefill k prompts of `total` tokens."""
        d = b - k
        if k == 0:
            return coeffs.decode_s(d, d * ctx), float(d), 1
        room = float(max(1, budget - d))
        # Attention of k prompts of this total: sum of squares ~ total**2 * E[sum l^2] / E[S^2].
        attention = total * total * mean_sq / (mean_sq + (k - 1) * l_in * l_in)
        j = max(1, math.ceil(total / room - 1e-9))
        rest = total - (j - 1) * room
        t = step_time_s(coeffs, rest, attention * rest / total, d, d * ctx)
        if j > 1:
            t += (j - 1) * step_time_s(coeffs, room, attention * room / total, d, d * ctx)
        return t, float(j * d + k), j

    lam = b / l_out
    e_time = e_tokens = e_admit_time = e_steps = 0.0
    lo, hi, bisecting = 0.0, float(b), False  # the root lies in [lo, hi]
    for _ in range(_MAX_ITERATIONS):
        p = min(1.0, lam / b)
        pmf = [0.0] * b + [1.0] if p >= 1.0 else _binomial_pmf(b, p)
        e_time = e_tokens = e_admit_time = e_steps = 0.0
        for k, w in enumerate(pmf):
            if w < 1e-9:
                continue
            points, weights = _lognormal_points(k * l_in, cv_in / math.sqrt(k)) if k else _NO_PROMPT
            for total, wt in zip(points.tolist(), weights.tolist(), strict=True):
                t, tok, j = event(k, total)
                e_time += w * wt * t
                e_tokens += w * wt * tok
                e_steps += w * wt * j
                e_admit_time += w * wt * k * t
        new = min(float(b), e_tokens / l_out)
        if abs(new - lam) <= 1e-4 * lam or hi - lo <= 1e-4 * lam:
            break
        if new > lam:
            lo = lam
        else:
            hi = lam
        if not lo < new < hi:  # overshoots the bracket: from here on, bisect it
            bisecting = True
        lam = 0.5 * (lo + hi) if bisecting else new
    x_req = e_tokens / l_out / e_time
    tpot = e_time / e_steps
    ttft = e_admit_time / max(lam, 1e-9)
    d_full = budget * (l_out - 1.0) / (l_in + l_out - 1.0)
    if d_full < b - lam:  # prefill-bound: check every step full
        room = budget - d_full
        t = step_time_s(coeffs, room, room * mean_sq / l_in, d_full, d_full * ctx)
        x_full = room / l_in / t
        if x_full < x_req:
            waiting_steps = (b - d_full) / (room / l_in)  # Little: slots waiting for budget
            return SteadyState(b, x_full, x_full * l_out, waiting_steps * t, t)
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
