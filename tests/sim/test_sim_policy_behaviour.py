"""Policies against fake instances of very different speeds, in the simulator: hetero keeps every
instance busy in proportion to its capacity, learns capacities the plan got wrong, and no policy
beats the fluid bound. (The fake instances are step-time coefficients, not GPUs.)"""

from __future__ import annotations

import pytest
from sim_factories import make_instances, make_requests

from hetserve.scheduling import make_policy, policy_names
from hetserve.sim import SimConfig, fluid_bound, rate_scale_for_load, simulate, summarize
from hetserve.sim.instances import with_true_speed

CONFIG = SimConfig()


def run_at(load, specs, reqs, policy="hetero", seed=0, config=CONFIG, bound=None):
    bound = bound or fluid_bound(specs, reqs)
    scale = rate_scale_for_load(reqs, bound, load, config)
    return summarize(simulate(specs, make_policy(policy, seed), reqs.scaled(scale), config), bound, rate_scale=scale)


@pytest.mark.parametrize("slowdowns", [[1, 20], [1, 1, 1, 1], [1, 2, 4, 8]], ids=["20x-gap", "equal", "ladder"])
def test_hetero_keeps_every_instance_busy_in_proportion_to_its_capacity(slowdowns):
    """At 1.3x the fluid bound every instance is busy the whole window and delivers its capacity
    share of the tokens (within 12%), the 20x slower one included: none is starved."""
    reqs = make_requests(1.0, 5000, seed=1)
    specs = make_instances(slowdowns, requests=reqs)
    rep = run_at(1.3, specs, reqs)
    for inst in rep.instances:
        assert inst.busy_fraction > 0.97, inst
        assert inst.token_share == pytest.approx(inst.capacity_share, rel=0.12), inst
    assert rep.fraction_of_bound > 0.97


def test_hetero_learns_capacities_the_plan_got_wrong():
    """The plan believes two equal instances (same coefficients, same prediction); the second
    really runs 6x slower. The engine's step records teach the tracker the real speeds: the
    token shares follow the real capacities at 1.3x load, and at 0.7x p99 TTFT is far lower
    than with learning off, which queues as much work on the slow instance as on the fast one.
    (Changed with the online fit: the plan's coefficients are now wrong too, not only its
    prediction, since C is priced from coefficients; at 1.3x both instances saturate whatever
    C says, so shares alone could not tell learning on from off.)"""
    reqs = make_requests(1.0, 6000, seed=2)
    true = make_instances([1, 6], requests=reqs)
    wrong = make_instances([1, 1], requests=reqs)
    wrong = [wrong[0], with_true_speed(wrong[1], 6.0)]
    bound = fluid_bound(wrong, reqs)
    rep = run_at(1.3, wrong, reqs, bound=bound)
    cap_fast = true[0].predicted_tokens_per_s / (true[0].predicted_tokens_per_s + true[1].predicted_tokens_per_s)
    assert rep.instances[0].token_share == pytest.approx(cap_fast, abs=0.05)
    assert rep.fraction_of_bound > 0.95
    on = run_at(0.7, wrong, reqs, bound=bound)
    off = run_at(0.7, wrong, reqs, config=SimConfig(learn_capacity=False), bound=bound)
    assert on.ttft_s.p99 < 0.5 * off.ttft_s.p99, (on.ttft_s.p99, off.ttft_s.p99)


def test_at_light_load_hetero_serves_from_the_fast_instance():
    """With a 20x gap and 30% load, waiting behind a short backlog on the fast instance beats
    decoding 20x slower: the slow one only takes overflow, and latency stays low."""
    reqs = make_requests(1.0, 3000, seed=3)
    specs = make_instances([1, 20], requests=reqs)
    bound = fluid_bound(specs, reqs)
    hetero, rr = run_at(0.3, specs, reqs, bound=bound), run_at(0.3, specs, reqs, "round_robin", bound=bound)
    assert hetero.instances[0].token_share > hetero.instances[0].capacity_share
    assert hetero.ttft_s.p99 < rr.ttft_s.p99 / 10
    assert hetero.e2e_s.p99 < rr.e2e_s.p99


@pytest.mark.parametrize("load", [0.7, 1.3])
def test_no_policy_exceeds_the_fluid_bound(load):
    """Per-instance saturated rates, summed, bound every policy (1% tolerance: the bound is itself
    measured, over a finite run)."""
    reqs = make_requests(1.0, 3000, seed=4)
    specs = make_instances([1, 2, 4, 8], requests=reqs)
    no_drain = SimConfig(drain=False)  # throughput only: skip the (long, for round robin) drain
    bound = fluid_bound(specs, reqs)
    for name in policy_names():
        rep = run_at(load, specs, reqs, name, config=no_drain, bound=bound)
        assert rep.fraction_of_bound <= 1.01, (name, rep.fraction_of_bound)


def test_hetero_beats_round_robin_on_a_heterogeneous_cluster_at_saturation():
    reqs = make_requests(1.0, 4000, seed=5)
    specs = make_instances([1, 1, 5, 5], requests=reqs)
    bound = fluid_bound(specs, reqs)
    hetero, rr = run_at(1.3, specs, reqs, bound=bound), run_at(1.3, specs, reqs, "round_robin", bound=bound)
    assert hetero.fraction_of_bound > 0.97
    # Round robin offers each instance 1.3/4 of the total capacity 2.4 (fast = 1): the fast ones
    # get 0.78 and idle the rest, the slow ones deliver 0.2: (2 * 0.78 + 0.4) / 2.4 = 0.82.
    assert rr.fraction_of_bound < 0.85
    assert hetero.output_tokens_per_s > 1.2 * rr.output_tokens_per_s
