"""Request classes and the class-aware fluid LP: which accelerator type should serve which requests.

The mix-average fluid bound (sim/fluid.py) saturates every instance with the same request mix.
Accelerator types differ in kind, not only speed: a small KV cache makes long requests cost far
more batch slots on an L4 than on an H100, and prefill (compute-bound) and decode (bandwidth-bound)
scale differently per type. Binning requests into classes by shape and letting each type serve the
classes it is relatively best at (its comparative advantage) can raise the ceiling. This module
holds the pure parts: the binning, the per-class cost of a configuration from the throughput model
(`steady_state`, the planner's formula), and the LP. The simulator-measured costs live in
sim/class_bound.py. Plain Python + numpy; scipy (HiGHS) is imported where the LP is solved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from hetserve.model.throughput import Workload, steady_state
from hetserve.records import LatencyCoeffs

__all__ = [
    "ClassLP",
    "RequestClasses",
    "model_class_rates",
    "same_mix_rate",
    "solve_class_lp",
]


@dataclass(frozen=True)
class RequestClasses:
    """Bins by prompt length, then by a second length within each prompt bin:
    class = offset[prompt_bin] + second_bin.

    `prompt_edges` are interior edges, increasing; `second_edges[b]` the interior edges of the
    second length inside prompt bin b (empty: one class for the bin). A value v falls in bin
    searchsorted(edges, v, side="right"). The second length is the true output length when the
    classes describe the workload (the oracle bound), or the client's max_tokens when a router
    must classify a request before it runs (all it can see). Second edges per prompt bin keep
    the classes near equal in size when the lengths are correlated.
    """

    prompt_edges: tuple[int, ...]
    second_edges: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.second_edges and len(self.second_edges) != self.num_prompt_bins:
            raise ValueError(
                f"second_edges: one tuple per prompt bin ({self.num_prompt_bins}), got {len(self.second_edges)}"
            )

    @property
    def num_prompt_bins(self) -> int:
        return len(self.prompt_edges) + 1

    def _second(self, b: int) -> tuple[int, ...]:
        return self.second_edges[b] if self.second_edges else ()

    @property
    def _offsets(self) -> list[int]:
        out, acc = [], 0
        for b in range(self.num_prompt_bins):
            out.append(acc)
            acc += len(self._second(b)) + 1
        return out

    @property
    def num_classes(self) -> int:
        return sum(len(self._second(b)) + 1 for b in range(self.num_prompt_bins))

    def assign(self, prompts: np.ndarray, seconds: np.ndarray | None = None) -> np.ndarray:
        """Class index of every request (vectorised)."""
        pb = np.searchsorted(np.asarray(self.prompt_edges), np.asarray(prompts), side="right")
        out = np.asarray(self._offsets, dtype=np.int64)[pb]
        if seconds is None or not self.second_edges:
            return out
        seconds = np.asarray(seconds)
        for b in range(self.num_prompt_bins):
            m = pb == b
            out[m] += np.searchsorted(np.asarray(self._second(b)), seconds[m], side="right")
        return out

    def index(self, prompt: int, second: int = 0) -> int:
        """Class of one request (the router's per-request call; bisect on a few edges)."""
        pb = _bin(self.prompt_edges, prompt)
        return self._offsets[pb] + _bin(self._second(pb), second)

    def label(self, k: int) -> str:
        offs = self._offsets
        pb = max(b for b in range(self.num_prompt_bins) if offs[b] <= k)
        p = _range_label(self.prompt_edges, pb)
        sec = self._second(pb)
        if not sec:
            return f"prompt {p}"
        return f"prompt {p}, 2nd {_range_label(sec, k - offs[pb])}"

    @classmethod
    def from_quantiles(
        cls,
        prompts: np.ndarray,
        seconds: np.ndarray | None = None,
        num_prompt_bins: int = 4,
        num_second_bins: int = 3,
    ) -> RequestClasses:
        """Equal-count bins: quantile edges on the prompt, then on the second length within each
        prompt bin (duplicate edges dropped, so a bin of equal values stays one class)."""
        prompts = np.asarray(prompts)
        pe = _quantile_edges(prompts, num_prompt_bins)
        if seconds is None or num_second_bins <= 1:
            return cls(pe)
        seconds = np.asarray(seconds)
        pb = np.searchsorted(np.asarray(pe), prompts, side="right")
        se = tuple(_quantile_edges(seconds[pb == b], num_second_bins) for b in range(len(pe) + 1))
        return cls(pe, se)


def _bin(edges: tuple[int, ...], v: int) -> int:
    lo, hi = 0, len(edges)
    while lo < hi:
        mid = (lo + hi) // 2
        if v >= edges[mid]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _range_label(edges: tuple[int, ...], b: int) -> str:
    lo = 0 if b == 0 else edges[b - 1]
    return f"[{lo}, {edges[b]})" if b < len(edges) else f">={lo}"


def _quantile_edges(values: np.ndarray | None, num_bins: int) -> tuple[int, ...]:
    if values is None or num_bins <= 1 or len(values) == 0:
        return ()
    qs = np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, num_bins + 1)[1:-1])
    edges = sorted({int(math.ceil(q)) for q in qs})
    lo = int(np.min(values))
    return tuple(e for e in edges if e > lo)


def model_class_rates(
    coeffs: LatencyCoeffs,
    kv_capacity_tokens: int,
    max_num_seqs: int,
    mean_prompt_tokens: ArrayLike,
    mean_output_tokens: ArrayLike,
) -> np.ndarray:
    """Saturated requests/s of one instance serving only class k, from the throughput model:
    the planner's batch rule (B = min(max_num_seqs, KV / (l_in + l_out))) and `steady_state`.
    The class's KV footprint enters through B: a long class fits fewer sequences in the cache."""
    prompts = np.asarray(mean_prompt_tokens, dtype=float)
    outputs = np.asarray(mean_output_tokens, dtype=float)
    out = np.zeros(len(prompts))
    for k, (l_in, l_out) in enumerate(zip(prompts.tolist(), outputs.tolist(), strict=True)):
        b = max(1, min(max_num_seqs, math.floor(kv_capacity_tokens / max(l_in + l_out, 1.0))))
        wl = Workload(float(l_in), float(max(l_out, 1.0)), int(l_in + l_out))
        out[k] = steady_state(coeffs, b, wl).requests_per_s
    return out


@dataclass(frozen=True)
class ClassLP:
    """The solved LP. rates[j, k]: requests/s of class k served by configuration j (all its
    instances together); share[j, k]: the fraction of class k routed to configuration j;
    busy[j, k]: instance-equivalents of configuration j spent on class k."""

    requests_per_s: float  # lambda: total rate served in the workload's class proportions
    rates: np.ndarray
    share: np.ndarray
    busy: np.ndarray

    def mix_of(self, j: int) -> np.ndarray:
        """Request fractions by class that configuration j serves (zeros if it serves nothing)."""
        tot = self.rates[j].sum()
        return self.rates[j] / tot if tot > 0 else np.zeros_like(self.rates[j])


def solve_class_lp(mu: np.ndarray, counts: ArrayLike, proportions: ArrayLike) -> ClassLP:
    """max lambda  s.t.  sum_j mu[j,k] x[j,k] >= lambda p_k (every class),
    sum_k x[j,k] <= n_j (every configuration's time budget), x >= 0.

    mu[j, k] is one instance of configuration j saturated with class k alone (requests/s); x[j, k]
    the instances' worth of time configuration j spends on class k. Time-sharing is the fluid
    assumption: an instance serving a mix delivers the time-weighted pure-class rates. Solved with
    scipy's HiGHS (`linprog`, method "highs"), then re-solved for the least class sorting that
    keeps lambda (`_least_sorting`).
    """
    from scipy.optimize import linprog

    mu = np.asarray(mu, dtype=float)
    n = np.asarray(counts, dtype=float)
    p = np.asarray(proportions, dtype=float)
    p = p / p.sum()
    nj, nk = mu.shape
    nv = nj * nk + 1  # x[j,k] row-major, then lambda
    c = np.zeros(nv)
    c[-1] = -1.0
    a_ub = np.zeros((nk + nj, nv))
    b_ub = np.zeros(nk + nj)
    for k in range(nk):  # lambda p_k - sum_j mu x <= 0
        for j in range(nj):
            a_ub[k, j * nk + k] = -mu[j, k]
        a_ub[k, -1] = p[k]
    for j in range(nj):
        a_ub[nk + j, j * nk : (j + 1) * nk] = 1.0
        b_ub[nk + j] = n[j]
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=[(0, None)] * nv, method="highs")
    if res.status != 0:
        raise ValueError(f"class LP failed: {res.message}")
    lam = float(res.x[-1])
    x = _least_sorting(mu, n, p, a_ub, b_ub, lam)
    rates = mu * x
    served = rates.sum(axis=0)
    share = np.divide(rates, served, out=np.zeros_like(rates), where=served > 0)
    return ClassLP(lam, rates, share, x)


def _least_sorting(
    mu: np.ndarray, n: np.ndarray, p: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray, lam: float
) -> np.ndarray:
    """Among the splits reaching lambda (to 1e-6), the one closest (L1) to every instance serving
    the workload's mix. The LP is often degenerate (identical or proportional types can swap
    classes at no cost in the fluid model), and a split that sorts classes without need loses
    what a batch gains by mixing long and short requests (measured in the simulator: ~6% for two
    identical instances given one class each)."""
    from scipy.optimize import linprog

    nj, nk = mu.shape
    m = nj * nk
    inv = p[None, :] / np.maximum(mu, 1e-12)
    xbar = n[:, None] * inv / inv.sum(axis=1, keepdims=True)  # same-mix time shares
    # variables: x (m), lambda, t (m) with t >= |x - xbar|; minimise sum t
    nv = 2 * m + 1
    c = np.zeros(nv)
    c[m + 1 :] = 1.0
    a = np.zeros((a_ub.shape[0] + 2 * m, nv))
    a[: a_ub.shape[0], : m + 1] = a_ub
    b = np.concatenate([b_ub, np.zeros(2 * m)])
    for i in range(m):
        r = a_ub.shape[0] + 2 * i
        a[r, i], a[r, m + 1 + i], b[r] = 1.0, -1.0, xbar.flat[i]  # x - t <= xbar
        a[r + 1, i], a[r + 1, m + 1 + i], b[r + 1] = -1.0, -1.0, -xbar.flat[i]  # -x - t <= -xbar
    bounds = [(0, None)] * m + [(lam * (1 - 1e-6), None)] + [(0, None)] * m
    res = linprog(c, A_ub=a, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0:
        raise ValueError(f"class LP (second stage) failed: {res.message}")
    return np.maximum(res.x[:m].reshape(nj, nk), 0.0)


def same_mix_rate(mu: np.ndarray, counts: ArrayLike, proportions: ArrayLike) -> float:
    """The mix-average bound in the same fluid model: every instance serves the workload's mix,
    so one instance of j delivers 1 / sum_k p_k / mu[j,k] requests/s (time-sharing the classes)."""
    mu = np.asarray(mu, dtype=float)
    p = np.asarray(proportions, dtype=float)
    p = p / p.sum()
    per = np.array([1.0 / float(np.sum(p / np.maximum(row, 1e-12))) for row in mu])
    return float(np.dot(np.asarray(counts, dtype=float), per))
