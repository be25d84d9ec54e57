"""The cost objective's core: the cheapest node counts per pool whose summed rate meets a target.

min sum(k_i * c_i)  s.t.  sum(k_i * v_i) >= target,  0 <= k_i <= n_i integer
(a bounded covering knapsack). Costs are integer micro-dollars, so cost sums are exact and every
plan's cost is a multiple of g = gcd(c_i). Plain Python + numpy: no ray import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CoverResult", "cheapest_cover"]

# Exact dynamic programme over cost levels (multiples of g) when the table stays this small.
DP_MAX_STATES = 2_000_000
DP_MAX_CELLS = 400_000_000  # states x binary chunks, stored as bits (50 MB)
# Branch and bound beyond that; stops (keeping the best plan found) after this many branches.
BNB_MAX_BRANCHES = 2_000_000


@dataclass(frozen=True, slots=True)
class CoverResult:
    """Node counts per item (input order), their cost and rate, and how the answer was found."""

    counts: tuple[int, ...]
    cost: int
    rate: float
    proven_optimal: bool
    method: str  # "dp", "branch-and-bound" or "branch-and-bound (budget exhausted)"


def _greedy(items: Sequence[tuple[int, int, float]], order: Sequence[int], target: float) -> list[int]:
    """Cheapest tok/s first, whole nodes, until the target is met: a feasible upper bound."""
    counts = [0] * len(items)
    residual = target
    for i in order:
        if residual <= 0:
            break
        n, _, v = items[i]
        counts[i] = min(n, math.ceil(residual / v))
        residual -= counts[i] * v
    return counts


def _dp(items: Sequence[tuple[int, int, float]], target: float, g: int, num_states: int) -> list[int] | None:
    """best[c] = most tok/s at cost exactly c*g (0/1 DP over binary chunks of each pool's count).

    The smallest c with best[c] >= target is the optimum; among equally cheap plans it is the one
    with the most tok/s. Which chunks improved which cost level is kept as bits to rebuild counts.
    """
    chunks: list[tuple[int, int]] = []  # (item, multiplicity): 1, 2, 4, ..., rest
    for i, (n, _, _) in enumerate(items):
        mult = 1
        while n > 0:
            take = min(mult, n)
            chunks.append((i, take))
            n -= take
            mult *= 2
    best = np.full(num_states, -np.inf)
    best[0] = 0.0
    taken: list[tuple[int, np.ndarray | None]] = []
    for i, mult in chunks:
        w = mult * items[i][1] // g
        if w >= num_states:
            taken.append((w, None))
            continue
        cand = best[: num_states - w] + mult * items[i][2]
        better = cand > best[w:]
        best[w:][better] = cand[better]
        taken.append((w, np.packbits(better)))
    reached = np.flatnonzero(best >= target)
    if not len(reached):
        return None
    c = int(reached[0])
    counts = [0] * len(items)
    for (i, mult), (w, bits) in zip(reversed(chunks), reversed(taken), strict=True):
        if bits is None or c < w:
            continue
        pos = c - w
        if (bits[pos >> 3] >> (7 - (pos & 7))) & 1:
            counts[i] += mult
            c -= w
    return counts


def _branch_and_bound(
    items: Sequence[tuple[int, int, float]], order: Sequence[int], target: float, g: int, start: list[int]
) -> tuple[list[int], bool]:
    """Depth-first over pools in order of price per tok/s, counts from the most useful down.

    A branch is cut when its cost plus the fractional-knapsack bound of what is still missing,
    rounded up to a multiple of g, cannot beat the best plan so far. Returns (counts, completed).
    """
    ns = [items[i][0] for i in order]
    cs = [items[i][1] for i in order]
    vs = [items[i][2] for i in order]
    m = len(order)

    def lower_bound(first: int, residual: float) -> float:
        total = 0.0
        for j in range(first, m):
            cap = ns[j] * vs[j]
            if cap >= residual:
                return total + residual / vs[j] * cs[j]
            total += ns[j] * cs[j]
            residual -= cap
        return math.inf

    best_counts = [start[i] for i in order]
    best_cost = sum(k * c for k, c in zip(best_counts, cs, strict=True))
    best_rate = sum(k * v for k, v in zip(best_counts, vs, strict=True))
    counts = [0] * m
    branches = 0

    def dfs(i: int, cost: int, rate: float) -> bool:
        nonlocal best_cost, best_rate, best_counts, branches
        branches += 1
        if branches > BNB_MAX_BRANCHES:
            return False
        residual = target - rate
        if residual <= 0:
            if cost < best_cost or (cost == best_cost and rate > best_rate):
                best_cost, best_rate, best_counts = cost, rate, counts.copy()
            return True
        if i == m:
            return True
        bound = cost + lower_bound(i, residual)
        if bound == math.inf or g * math.ceil(bound / g - 1e-9) >= best_cost:
            return True
        for k in range(min(ns[i], math.ceil(residual / vs[i])), -1, -1):
            counts[i] = k
            if not dfs(i + 1, cost + k * cs[i], rate + k * vs[i]):
                return False
        counts[i] = 0
        return True

    completed = dfs(0, 0, 0.0)
    result = [0] * len(items)
    for pos, i in enumerate(order):
        result[i] = best_counts[pos]
    return result, completed


def cheapest_cover(items: Sequence[tuple[int, int, float]], target: float) -> CoverResult | None:
    """Cheapest counts k_i (0..n_i) with sum(k_i*v_i) >= target; None when all nodes fall short.

    items: (n_i nodes, c_i integer micro-dollars per node >= 0, v_i tok/s per node > 0).
    Free nodes (c_i = 0) are always used. Exact: a DP over cost levels when the table is small
    (always on realistic price lists), else branch and bound, which reports when its budget ran
    out before it proved the plan optimal. Ties: cheapest, then most tok/s, then input order.
    """
    if sum(n * v for n, _, v in items) < target:
        return None
    counts = [n if c == 0 else 0 for n, c, _ in items]
    free_rate = sum(k * v for k, (_, _, v) in zip(counts, items, strict=True))
    paid = [i for i, (n, c, _) in enumerate(items) if c > 0 and n > 0]
    residual = target - free_rate
    if residual <= 0 or not paid:
        return CoverResult(tuple(counts), 0, free_rate, True, "free nodes")
    sub = [items[i] for i in paid]
    order = sorted(range(len(sub)), key=lambda j: (sub[j][1] / sub[j][2], j))
    start = _greedy(sub, order, residual)
    g = 0
    for _, c, _ in sub:
        g = math.gcd(g, c)
    num_states = sum(k * c for k, (_, c, _) in zip(start, sub, strict=True)) // g + 1
    num_chunks = sum(n.bit_length() for n, _, _ in sub)
    chosen = None
    if num_states <= DP_MAX_STATES and num_states * num_chunks <= DP_MAX_CELLS:
        chosen = _dp(sub, residual, g, num_states)
        method, proven = "dp", True
    if chosen is None:
        chosen, proven = _branch_and_bound(sub, order, residual, g, start)
        method = "branch-and-bound" if proven else "branch-and-bound (budget exhausted)"
    for j, i in enumerate(paid):
        counts[i] = chosen[j]
    cost = sum(k * c for k, (_, c, _) in zip(counts, items, strict=True))
    rate = sum(k * v for k, (_, _, v) in zip(counts, items, strict=True))
    return CoverResult(tuple(counts), cost, rate, proven, method)
