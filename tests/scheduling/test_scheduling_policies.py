"""Each policy does what its name says, deterministically for a seed; the registry refuses misuse."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from scheduling_factories import request, view

from hetserve.records import RequestInfo
from hetserve.scheduling import NoInstanceError, SchedulingPolicy, make_policy, policy_names
from hetserve.scheduling.policies import HeteroPolicy

BUILTIN = {"hetero", "round_robin", "random", "least_requests", "pow2", "weighted_round_robin"}


def test_registry_lists_builtins_and_refuses_unknown_and_duplicate_names():
    assert BUILTIN <= set(policy_names())
    with pytest.raises(ValueError, match="unknown scheduling policy 'nope'.*hetero.*round_robin"):
        make_policy("nope")
    with pytest.raises(TypeError, match="registered twice"):

        class Again(SchedulingPolicy, name="hetero"):  # noqa: F811
            def choose(self, request, instances, now_s):
                return instances[0].instance_id


def test_round_robin_cycles_in_id_order_and_skips_ineligible_instances():
    """a, b, c, a, ...; an instance whose KV cannot hold the request is skipped, not waited for."""
    rr = make_policy("round_robin")
    views = [view("b"), view("a"), view("c")]
    assert [rr.select(request(k), views, 0.0) for k in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    small = [view("a"), view("b", kv_capacity_tokens=50), view("c")]
    assert [rr.select(request(k, prompt=100), small, 0.0) for k in range(4)] == ["c", "a", "c", "a"]


def test_least_requests_picks_the_minimum_and_spreads_ties_with_its_seed():
    lr = make_policy("least_requests", seed=3)
    views = [view("a", num_outstanding=4), view("b", num_outstanding=1), view("c", num_outstanding=2)]
    assert {lr.select(request(k), views, 0.0) for k in range(50)} == {"b"}
    tied = [view("a", num_outstanding=1), view("b", num_outstanding=5), view("c", num_outstanding=1)]
    picks = Counter(lr.select(request(k), tied, 0.0) for k in range(400))
    assert set(picks) == {"a", "c"} and min(picks.values()) > 120


def test_pow2_takes_the_better_of_two_seeded_samples():
    """Replaying the policy's generator gives the two samples; the choice is the one with fewer
    outstanding requests (the first on a tie), so the strictly busiest instance is never chosen."""
    loads = [7, 3, 3, 9, 0, 5]
    views = [view(f"i{k}", num_outstanding=n) for k, n in enumerate(loads)]
    policy = make_policy("pow2", seed=11)
    replay = np.random.default_rng(11)
    for k in range(300):
        i, j = replay.choice(len(views), size=2, replace=False)
        expected = views[j] if loads[j] < loads[i] else views[i]
        assert policy.select(request(k), views, 0.0) == expected.instance_id
    other = make_policy("pow2", seed=1)
    chosen = Counter(other.select(request(k), views, 0.0) for k in range(600))
    assert "i3" not in chosen  # 9 outstanding: worse than any partner
    # The idle one wins all 5 pairs it is in (1/3 of all pairs), the 7-outstanding one only 1 (vs i3).
    assert 150 < chosen["i4"] < 250 and chosen["i0"] < 80


def test_weighted_round_robin_matches_static_weights_smoothly():
    """Weights 5:3:1 from the plan's predictions: every 9 consecutive choices hold exactly 5, 3
    and 1 of each, and changing the measured capacity C does not move them (static)."""
    wrr = make_policy("weighted_round_robin")
    views = [
        view("a", capacity=1.0, predicted=500.0),
        view("b", capacity=999.0, predicted=300.0),
        view("c", capacity=5.0, predicted=100.0),
    ]
    picks = [wrr.select(request(k), views, 0.0) for k in range(90)]
    for start in range(0, 90, 9):
        assert Counter(picks[start : start + 9]) == {"a": 5, "b": 3, "c": 1}
    # Smooth: the heaviest instance never gets two in a row (plain WRR would give a,a,a,a,a,b,b,b,c).
    assert "".join(picks[:9]) == "abacababa"


def test_random_is_reproducible_for_a_seed_and_uses_every_instance():
    views = [view(f"i{k}") for k in range(4)]
    a, b, c = make_policy("random", seed=5), make_policy("random", seed=5), make_policy("random", seed=6)
    seq_a = [a.select(request(k), views, 0.0) for k in range(200)]
    seq_b = [b.select(request(k), views, 0.0) for k in range(200)]
    seq_c = [c.select(request(k), views, 0.0) for k in range(200)]
    assert seq_a == seq_b and seq_a != seq_c
    assert min(Counter(seq_a).values()) > 30


def test_hetero_minimises_capacity_normalised_outstanding_work():
    """score = (Q + w) / C with w the typical request's work: an idle fast instance beats an idle
    slow one; a fast one stays preferred until its backlog outweighs its speed."""
    h = make_policy("hetero")
    fast, slow = view("fast", capacity=2000.0), view("slow", capacity=100.0)
    assert h.select(request(), [slow, fast], 0.0) == "fast"
    w = fast.mean_work_tokens
    # (Q + w)/2000 vs w/100: the fast one wins while Q < 19 w.
    fast.outstanding_tokens = 18 * w
    assert h.select(request(), [slow, fast], 0.0) == "fast"
    fast.outstanding_tokens = 20 * w
    assert h.select(request(), [slow, fast], 0.0) == "slow"
    # Equal C: the smaller backlog wins.
    a, b = view("a", capacity=500.0, outstanding_tokens=900.0), view("b", capacity=500.0, outstanding_tokens=300.0)
    assert h.select(request(), [a, b], 0.0) == "b"


def test_hetero_size_aware_sends_long_requests_to_fast_instances():
    """With per-request work, a long prompt tips a near-tie towards the fast instance and a short
    one towards the slow instance; the default (typical work) does not look at the size."""
    sized = HeteroPolicy(size_aware=True)
    # Backlogs of 2 s (fast) and 1 s (slow): w/100 - w/1000 < 1 s sends the request to the slow one.
    fast = view("fast", capacity=1000.0, outstanding_tokens=2000.0)
    slow = view("slow", capacity=100.0, outstanding_tokens=100.0)
    assert sized.select(request(prompt=4000, max_tokens=200), [fast, slow], 0.0) == "fast"
    assert sized.select(request(prompt=10, max_tokens=20), [fast, slow], 0.0) == "slow"
    plain = HeteroPolicy()
    assert plain.select(request(prompt=4000), [fast, slow], 0.0) == plain.select(request(prompt=10), [fast, slow], 0.0)


def test_hetero_breaks_ties_by_free_kv_then_by_seed():
    h = make_policy("hetero", seed=2)
    tied = [view("a", kv_used_tokens=500), view("b", kv_used_tokens=100), view("c", kv_used_tokens=500)]
    assert {h.select(request(k), tied, 0.0) for k in range(20)} == {"b"}
    same = [view("a"), view("b"), view("c")]
    assert set(Counter(h.select(request(k), same, 0.0) for k in range(60))) == {"a", "b", "c"}


def test_select_skips_unhealthy_and_too_small_instances_and_says_why_when_none_is_left():
    for name in sorted(BUILTIN):
        p = make_policy(name)
        views = [view("a", healthy=False), view("b", kv_capacity_tokens=50), view("c")]
        assert p.select(request(prompt=100), views, 0.0) == "c", name
        with pytest.raises(NoInstanceError, match="no healthy instance can hold request r0.*1/2 healthy"):
            p.select(request(prompt=100), views[:2], 0.0)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_same_seed_same_choices(name):
    """Policies draw only from their seeded generator and never read a clock."""
    rng = np.random.default_rng(0)
    states = [
        [
            view(
                f"i{k}",
                capacity=float(rng.integers(50, 500)),
                outstanding_tokens=float(rng.integers(0, 900)),
                num_outstanding=int(rng.integers(0, 6)),
                predicted=float(rng.integers(50, 500)),
            )
            for k in range(5)
        ]
        for _ in range(100)
    ]

    def run():
        p = make_policy(name, seed=9)
        return [p.select(request(k), states[k], float(k)) for k in range(100)]

    assert run() == run()


def test_scheduling_and_sim_import_without_ray_or_vllm():
    """model/, scheduling/, sim/ and the batching step are plain Python: with ray and vllm made
    unimportable, the policies, the load tracker and a small simulation still run."""
    code = """
import sys
sys.modules['ray'] = None
sys.modules['vllm'] = None
import hetserve.scheduling, hetserve.scheduling.policies, hetserve.scheduling.load
import hetserve.sim, hetserve.engines.batching, hetserve.model
from hetserve.scheduling import make_policy, policy_names
from hetserve.sim import PlannedInstance, poisson_requests, simulate
from hetserve.records import LatencyCoeffs
specs = [PlannedInstance('a', 'd', 'x', LatencyCoeffs(1e-4, 1e-3, 1e-4, 1e-8, 1e-2), 50_000, 16, 500.0)]
reqs = poisson_requests(5.0, 50, 100, 20, 2048, seed=0)
for name in policy_names():
    simulate(specs, make_policy(name), reqs)
assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules if sys.modules[m] is not None)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_can_hold_needs_prompt_plus_max_output_in_an_empty_cache():
    """The KV filter is what its docstring says: prompt + max_tokens must fit the whole cache."""
    from hetserve.scheduling.base import InstanceView

    view = InstanceView("i", "d", "x", 100.0, 1000)
    assert view.can_hold(RequestInfo("fits", 900, 100))
    assert not view.can_hold(RequestInfo("prompt fits, output does not", 900, 101))
