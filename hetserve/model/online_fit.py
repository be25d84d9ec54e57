"""Online, per-instance fit of the step-time model to what the instance's engine steps measurably did.

Engine side, `StepAccumulator`: every step adds its row x = (prefill tokens, 1 if any prefill,
decode sequences, context tokens held, 1 if any decode) and its duration y to cumulative
sufficient statistics (`StepTotals`), which travel in the engine's stats report. A mixed step
is one forward pass priced max(memory-bound decode, compute-bound pass over all its tokens)
(`engines.batching.step_time_s`), not the sum of a prefill and a decode: its row is the branch
that binds, (P + D, 1, 0, S, 0) or (0, 0, D, S, 1), chosen by the step function at the plan's
coefficients (`shape`). Which branch binds does not change when every term is off by one
factor, so a uniformly wrong plan still classifies every step right.

Router side, `OnlineFit`: folds in the difference between consecutive reports, forgetting old
steps with a half-life in engine busy time (so a change of speed shows within seconds of engine
time, not minutes), and fits the latency coefficients with the planner's own least-squares
function (`hetserve.model.latency.fit_nonneg`), regularised toward the plan's coefficients as a
prior. The prior is centred on the plan's coefficients scaled by one measured speed factor (the
least-squares ratio of measured to plan-predicted step time): at low load, when the steps seen
cannot separate the per-sequence from the per-step cost, the fit keeps the plan's shape at the
measured speed; with varied steps the data overrules it.

`saturated_capacity_tokens_per_s` turns coefficients into C: the throughput model's steady-state
output tokens/s (`model.throughput.steady_state`) of this instance at its saturated batch for the
request mix currently observed. Plain Python (numpy), no ray, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hetserve.model.latency import fit_nonneg
from hetserve.model.throughput import Workload, saturated_batch, steady_state
from hetserve.records import LatencyCoeffs, StepTotals

__all__ = [
    "FEATURES",
    "CapacityEstimate",
    "OnlineFit",
    "StepAccumulator",
    "coeff_vector",
    "saturated_capacity_tokens_per_s",
]

# The columns of a step row and the coefficient each one prices. The attention term q_p is not
# fitted (engines report prefill tokens, not per-sequence squares); it keeps the prior's value
# scaled by the measured speed factor.
FEATURES = ("prefill_tokens", "prefill_step", "decode_seqs", "context_tokens", "decode_step")
_COEFFS = ("a_p", "b_p", "a_d", "c_d", "b_d")
_N = len(FEATURES)
_TRI = [(i, j) for i in range(_N) for j in range(i, _N)]

# Steps older than this much engine busy time weigh half (the forgetting of `OnlineFit`).
DEFAULT_HALF_LIFE_S = 4.0
# Strength of the prior, in steps' worth of relative squared error per coefficient.
DEFAULT_PRIOR_STEPS = 5.0
# Change detection: when a report's new steps take, in least squares, more than this fraction
# longer or shorter than the current fit predicts, the instance changed speed (a throttled card,
# a noisy neighbour), and the remembered steps are cut to CHANGE_KEEP of their weight at once
# instead of fading with the half-life; a report needs CHANGE_MIN_STEPS new steps to count.
CHANGE_TOLERANCE = 0.15
CHANGE_KEEP = 0.125
CHANGE_MIN_STEPS = 5


def coeff_vector(c: LatencyCoeffs) -> np.ndarray:
    return np.array([c.a_p, c.b_p, c.a_d, c.c_d, c.b_d], dtype=float)


def _row(
    prefill_tokens: float, decode_seqs: float, context_tokens: float, shape: LatencyCoeffs | None = None
) -> tuple[float, ...]:
    if shape is not None and prefill_tokens > 0 and decode_seqs > 0:
        from hetserve.engines.batching import step_time_s  # pure; no cycle at import time

        if step_time_s(shape, prefill_tokens, 0.0, decode_seqs, context_tokens) > shape.decode_s(
            decode_seqs, context_tokens
        ):
            return (float(prefill_tokens + decode_seqs), 1.0, 0.0, float(context_tokens), 0.0)
        return (0.0, 0.0, float(decode_seqs), float(context_tokens), 1.0)
    return (
        float(prefill_tokens),
        1.0 if prefill_tokens > 0 else 0.0,
        float(decode_seqs),
        float(context_tokens),
        1.0 if decode_seqs > 0 else 0.0,
    )


class StepAccumulator:
    """Cumulative sufficient statistics of an engine's steps (engine side; cheap per step).

    `shape`: the plan's coefficients for this instance, which say which branch of a mixed step
    binds (module docstring); without them a mixed step's row is the sum of both passes."""

    __slots__ = ("_gram", "_moment", "_sum_sq", "_num_steps", "_busy_s", "_prefill_tokens", "_decode_tokens", "shape")

    def __init__(self, shape: LatencyCoeffs | None = None) -> None:
        self.shape = shape
        self._gram = [0.0] * len(_TRI)
        self._moment = [0.0] * _N
        self._sum_sq = 0.0
        self._num_steps = 0
        self._busy_s = 0.0
        self._prefill_tokens = 0
        self._decode_tokens = 0

    def add_step(self, prefill_tokens: int, decode_seqs: int, context_tokens: int, duration_s: float) -> None:
        """One engine step: its prefill tokens, decode sequences, context tokens held and wall
        duration (engine time), weighted 1/duration (relative error)."""
        if duration_s <= 0:
            return
        x = _row(prefill_tokens, decode_seqs, context_tokens, self.shape)
        inv = 1.0 / duration_s
        xs = [v * inv for v in x]
        g = self._gram
        for k, (i, j) in enumerate(_TRI):
            g[k] += xs[i] * xs[j]
        for i in range(_N):
            self._moment[i] += xs[i]
        self._sum_sq += 1.0
        self._num_steps += 1
        self._busy_s += duration_s
        self._prefill_tokens += int(prefill_tokens)
        self._decode_tokens += int(decode_seqs)

    def add_decode_run(
        self, num_seqs: int, first_context_tokens: int, num_steps: int, first_step_s: float, last_step_s: float
    ) -> None:
        """`num_steps` decode steps of one batch of `num_seqs` (the context grows by num_seqs per
        step; step times grow linearly from `first_step_s` to `last_step_s`), in O(1): the
        simulator's fast-forwarded runs. Rows are weighted by the run's mean step time."""
        k = int(num_steps)
        if k <= 0:
            return
        if k == 1:
            self.add_step(0, num_seqs, first_context_tokens, first_step_s)
            return
        b, s0 = float(num_seqs), float(first_context_tokens)
        y0 = float(first_step_s)
        dy = (float(last_step_s) - y0) / (k - 1)
        total = k * y0 + dy * k * (k - 1) / 2.0
        if total <= 0:
            return
        inv = k / total  # 1 / mean step time
        w2 = inv * inv
        si = k * (k - 1) / 2.0  # sum of i
        sii = (k - 1) * k * (2 * k - 1) / 6.0  # sum of i^2
        sum_s = k * s0 + b * si
        sum_ss = k * s0 * s0 + 2.0 * s0 * b * si + b * b * sii
        sum_y = total
        sum_sy = s0 * sum_y + b * (y0 * si + dy * sii)
        sum_yy = k * y0 * y0 + 2.0 * y0 * dy * si + dy * dy * sii
        # x = (0, 0, b, s_i, 1): only the decode block of the Gram matrix and moment moves.
        full = {(2, 2): k * b * b, (2, 3): b * sum_s, (2, 4): k * b, (3, 3): sum_ss, (3, 4): sum_s, (4, 4): float(k)}
        for idx, (i, j) in enumerate(_TRI):
            if (i, j) in full:
                self._gram[idx] += w2 * full[(i, j)]
        self._moment[2] += w2 * b * sum_y
        self._moment[3] += w2 * sum_sy
        self._moment[4] += w2 * sum_y
        self._sum_sq += w2 * sum_yy
        self._num_steps += k
        self._busy_s += total
        self._decode_tokens += k * int(num_seqs)

    def totals(self) -> StepTotals:
        return StepTotals(
            num_steps=self._num_steps,
            busy_s=self._busy_s,
            gram=tuple(self._gram),
            moment=tuple(self._moment),
            sum_sq=self._sum_sq,
            prefill_tokens=self._prefill_tokens,
            decode_tokens=self._decode_tokens,
        )


def _unpack(t: StepTotals) -> tuple[np.ndarray, np.ndarray]:
    g = np.zeros((_N, _N))
    if t.gram:
        for k, (i, j) in enumerate(_TRI):
            g[i, j] = g[j, i] = t.gram[k]
    m = np.asarray(t.moment, dtype=float) if t.moment else np.zeros(_N)
    return g, m


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """C of one instance with what it rests on."""

    tokens_per_s: float
    rel_uncertainty: float  # 1-sigma, relative
    batch_size: int


def saturated_capacity_tokens_per_s(
    coeffs: LatencyCoeffs,
    mean_input_tokens: float,
    mean_output_tokens: float,
    kv_capacity_tokens: int,
    max_num_seqs: int | None,
    input_tokens_cv: float = 0.0,
    output_tokens_cv: float = 0.0,
) -> tuple[float, int]:
    """The throughput model's steady-state output tokens/s at the instance's saturated batch
    (KV- or max_num_seqs-limited) for the mix (means and coefficients of variation of its
    lengths); and that batch size."""
    wl = Workload(max(1.0, mean_input_tokens), max(1.0, mean_output_tokens), 0, input_tokens_cv, output_tokens_cv)
    b = saturated_batch(kv_capacity_tokens, max_num_seqs or 1_000_000, wl)
    return steady_state(coeffs, b, wl).output_tokens_per_s, b


class OnlineFit:
    """Forgetting, prior-regularised least-squares fit of one instance's step-time coefficients."""

    def __init__(
        self,
        prior: LatencyCoeffs,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        prior_steps: float = DEFAULT_PRIOR_STEPS,
    ):
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0 (got {half_life_s})")
        self.prior = prior
        self.half_life_s = half_life_s
        self.prior_steps = prior_steps
        self._p = coeff_vector(prior)
        self._g = np.zeros((_N, _N))
        self._m = np.zeros(_N)
        self._sy = 0.0
        self._n = 0.0
        self._last: StepTotals | None = None
        self.coeffs = prior
        self.speed = 1.0  # measured / plan step time (least squares)
        self._cov = np.zeros((_N, _N))
        self.rel_rmse = 0.0  # the fit's relative RMS step-time error over the remembered steps
        self.plan_rel_rmse = 0.0  # the same for the plan's coefficients
        self.num_changes = 0  # speed changes detected (see CHANGE_TOLERANCE)

    @property
    def num_steps(self) -> float:
        """Remembered steps (decayed count)."""
        return self._n

    def update(self, totals: StepTotals | None) -> bool:
        """Fold in the steps since the previous report; True when there were any (and refit)."""
        if totals is None:
            return False
        last = self._last
        if last is None or totals.num_steps < last.num_steps:  # first report, or engine restarted
            last = StepTotals()
        self._last = totals
        dn = totals.num_steps - last.num_steps
        if dn <= 0:
            return False
        g1, m1 = _unpack(totals)
        g0, m0 = _unpack(last)
        decay = 0.5 ** (max(0.0, totals.busy_s - last.busy_s) / self.half_life_s)
        if self._n > 0 and dn >= CHANGE_MIN_STEPS:
            c = coeff_vector(self.coeffs)
            predicted = float(c @ (g1 - g0) @ c)
            ratio = float(c @ (m1 - m0)) / predicted if predicted > 0 else 1.0  # measured / fit
            if abs(math.log(max(ratio, 1e-9))) > math.log1p(CHANGE_TOLERANCE):
                decay = min(decay, CHANGE_KEEP)
                self.num_changes += 1
        self._g = self._g * decay + (g1 - g0)
        self._m = self._m * decay + (m1 - m0)
        self._sy = self._sy * decay + (totals.sum_sq - last.sum_sq)
        self._n = self._n * decay + dn
        self._refit()
        return True

    def _sse(self, c: np.ndarray) -> float:
        return max(0.0, self._sy - 2.0 * float(c @ self._m) + float(c @ self._g @ c))

    def _refit(self) -> None:
        g, m, p = self._g, self._m, self._p
        gp = float(p @ g @ p)
        self.speed = float(p @ m) / gp if gp > 0 else 1.0
        center = self.speed * p
        # The remembered steps as equivalent rows (eigen-decomposition of the column-scaled Gram
        # matrix), so the planner's row-based fit function solves the online problem too.
        d = np.sqrt(np.diag(g))
        d = np.where(d > 0, 1.0 / np.maximum(d, 1e-300), 1.0)
        gs = g * d[:, None] * d[None, :]
        lam, vec = np.linalg.eigh(gs)
        keep = lam > 1e-12 * max(float(lam.max()), 1e-300)
        root = np.sqrt(lam[keep])
        rows = (root[:, None] * vec[:, keep].T) / d[None, :]
        target = (vec[:, keep].T @ (d * m)) / root
        weight = np.where(center > 0, self.prior_steps / np.maximum(center, 1e-300) ** 2, 0.0)
        c = fit_nonneg(rows, target, np.ones(len(target)), prior=center, prior_weight=weight)
        self.coeffs = LatencyCoeffs(
            a_p=float(c[0]), b_p=float(c[1]), a_d=float(c[2]), c_d=float(c[3]), b_d=float(c[4]),
            q_p=self.prior.q_p * self.speed,
        )  # fmt: skip
        n = max(self._n, 1.0)
        self.rel_rmse = math.sqrt(self._sse(c) / n)
        self.plan_rel_rmse = math.sqrt(self._sse(p) / n)
        dof = max(1.0, self._n - _N)
        sigma2 = max(self._sse(c) / dof, 1e-6)  # a noiseless emulator still has float error
        self._cov = sigma2 * np.linalg.pinv(g + np.diag(weight))

    def capacity(
        self,
        mean_input_tokens: float,
        mean_output_tokens: float,
        kv_capacity_tokens: int,
        max_num_seqs: int | None,
        input_tokens_cv: float = 0.0,
        output_tokens_cv: float = 0.0,
    ) -> CapacityEstimate:
        """C from the fitted coefficients, with its relative 1-sigma uncertainty: one request's
        share of a saturated cycle, l_out*T_d(B, S) + B*T_p(l_in), is linear in the coefficients,
        so its variance is x^T Cov x (a linear stand-in for the steady state's uncertainty)."""
        tok, b = saturated_capacity_tokens_per_s(
            self.coeffs,
            mean_input_tokens,
            mean_output_tokens,
            kv_capacity_tokens,
            max_num_seqs,
            input_tokens_cv,
            output_tokens_cv,
        )
        l_in, l_out = max(1.0, mean_input_tokens), max(1.0, mean_output_tokens)
        ctx = b * (l_in + l_out / 2.0)
        x = np.array([b * l_in, float(b), l_out * b, l_out * ctx, l_out])
        c = coeff_vector(self.coeffs)
        cycle = float(c @ x)
        if self._n <= 0 or cycle <= 0:
            return CapacityEstimate(tok, float("nan"), b)
        rel = math.sqrt(max(0.0, float(x @ self._cov @ x))) / cycle
        return CapacityEstimate(tok, rel, b)

    def summary(self) -> dict[str, float]:
        """What `/v1/hetserve/instances` shows of the fit."""
        out = {f"fit_{k}": float(v) for k, v in zip(_COEFFS, coeff_vector(self.coeffs), strict=True)}
        out.update(
            {
                "fit_speed_vs_plan": self.speed,
                "fit_steps": self._n,
                "fit_step_rel_rmse": self.rel_rmse,
                "plan_step_rel_rmse": self.plan_rel_rmse,
            }
        )
        return out
