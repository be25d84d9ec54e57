"""cheapest_cover (the cost objective's solver) against itertools enumeration, on both of its paths."""

from __future__ import annotations

import itertools
import random

import pytest

from hetserve.planner import cheapest_cover
from hetserve.planner import cover as cover_module


def brute(items, target):
    best = None
    for ks in itertools.product(*[range(n + 1) for n, _, _ in items]):
        rate = sum(k * v for k, (_, _, v) in zip(ks, items))
        cost = sum(k * c for k, (_, c, _) in zip(ks, items))
        if rate >= target and (best is None or cost < best):
            best = cost
    return best


def random_items(rng: random.Random, near_equal: bool):
    m = rng.randint(1, 4)
    if near_equal:  # the hard case for branch and bound: every pool almost as cost-effective
        return [(rng.randint(0, 5), 8_000_000, 1000 * (1 + rng.uniform(-0.01, 0.01))) for _ in range(m)]
    return [(rng.randint(0, 5), rng.choice([0, 1, 2, 3, 5, 8]) * 350_000, rng.uniform(100, 5000)) for _ in range(m)]


@pytest.mark.parametrize("path", ["dp", "branch-and-bound"])
def test_matches_enumeration(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path != "dp":
        monkeypatch.setattr(cover_module, "DP_MAX_STATES", 0)
    rng = random.Random(7)
    for trial in range(150):
        items = random_items(rng, near_equal=trial % 3 == 0)
        target = sum(n * v for n, _, v in items) * rng.uniform(0.01, 1.1)
        expected = brute(items, target)
        got = cheapest_cover(items, target)
        if expected is None:
            assert got is None
            continue
        assert got.cost == expected, (items, target)
        assert got.rate >= target and got.proven_optimal
        assert all(0 <= k <= n for k, (n, _, _) in zip(got.counts, items))
        if target > 0 and any(c for _, c, _ in items):
            assert got.method.startswith(path) or got.method == "free nodes"


def test_equal_cost_prefers_more_tokens() -> None:
    """Two pools at the same price per node: the faster one is used."""
    items = [(3, 1_000_000, 100.0), (3, 1_000_000, 150.0)]
    got = cheapest_cover(items, 250.0)
    assert got.counts == (0, 2) and got.cost == 2_000_000


def test_free_nodes_always_used() -> None:
    got = cheapest_cover([(2, 0, 10.0), (4, 5, 10.0)], 15.0)
    assert got.counts == (2, 0) and got.cost == 0


def test_near_equal_large_instance_is_fast_and_exact() -> None:
    """Hundreds of nodes per pool with near-equal efficiency: the DP answers exactly, at once."""
    rng = random.Random(1)
    items = [
        (rng.randint(200, 1000), 8_000_000 + rng.choice([0, 100_000, 200_000]), 1000 * (1 + rng.uniform(-0.01, 0.01)))
        for _ in range(12)
    ]
    target = sum(n * v for n, _, v in items) * 0.37
    got = cheapest_cover(items, target)
    assert got.method == "dp" and got.proven_optimal and got.rate >= target
    # No single node can be dropped: the plan is at least locally minimal.
    for i, k in enumerate(got.counts):
        if k:
            assert got.rate - items[i][2] < target


def test_budget_exhaustion_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """When branch and bound runs out of budget it keeps a feasible plan and says it is unproven."""
    monkeypatch.setattr(cover_module, "DP_MAX_STATES", 0)
    monkeypatch.setattr(cover_module, "BNB_MAX_BRANCHES", 50)
    rng = random.Random(3)
    items = [(300, 8_000_000 + 1000 * i, 1000 * (1 + rng.uniform(-0.01, 0.01))) for i in range(8)]
    target = sum(n * v for n, _, v in items) * 0.5
    got = cheapest_cover(items, target)
    assert not got.proven_optimal and "budget" in got.method
    assert got.rate >= target


def test_unreachable_returns_none() -> None:
    assert cheapest_cover([(2, 1, 10.0)], 20.5) is None
