"""The simulator's clock and bookkeeping: exact step times, fast-forward identical to stepping,
reproducible runs, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from sim_factories import FAST, make_instances, make_requests, scaled

from hetserve.engines.batching import step_time_s
from hetserve.records import LatencyCoeffs
from hetserve.scheduling import make_policy
from hetserve.sim import PlannedInstance, SimConfig, SimRequests, Simulator, simulate, summarize


def one_instance(coeffs: LatencyCoeffs = FAST, kv: int = 50_000, max_num_seqs: int = 8) -> list[PlannedInstance]:
    return [PlannedInstance("only", "dep", "fake", coeffs, kv, max_num_seqs, 500.0)]


def stream(arrivals, prompts, outputs, max_tokens: int = 2048) -> SimRequests:
    n = len(arrivals)
    return SimRequests(
        "hand",
        np.asarray(arrivals, float),
        np.asarray(prompts, np.int64),
        np.asarray(outputs, np.int64),
        np.full(n, max_tokens, np.int64),
    )


def test_one_request_takes_one_prefill_step_then_one_decode_step_per_token():
    """First token after one prefill step T_p(P) (it samples the first token); then one decode
    step per token, each pricing the context as it grows (T_d(B=1, S=P+i))."""
    c = FAST
    res = simulate(one_instance(c), make_policy("round_robin"), stream([2.0], [500], [40]))
    t = 2.0 + c.prefill_s(500)
    assert res.first_token_s[0] == pytest.approx(t, abs=1e-12)
    for i in range(1, 40):
        t += c.decode_s(1, 500 + i)
    assert res.finish_s[0] == pytest.approx(t, abs=1e-9)
    assert res.total_output_tokens.tolist() == [40]
    assert res.total_busy_s[0] == pytest.approx(t - 2.0, abs=1e-9)


def test_a_request_arriving_mid_step_waits_for_the_step_to_end():
    c = FAST
    first_step = c.prefill_s(100)
    res = simulate(one_instance(c), make_policy("round_robin"), stream([0.0, first_step / 2], [100, 200], [5, 5]))
    # Admitted at the end of the first step, prefilled together with the first request's decode:
    # one mixed step (engines/batching.py: step_time_s).
    second = first_step + step_time_s(c, 200, 200**2, 1, 101)
    assert res.first_token_s[1] == pytest.approx(second, abs=1e-12)


def _arrays(res):
    return (
        res.instance_of,
        res.first_token_s,
        res.finish_s,
        res.num_preemptions,
        res.window_output_tokens,
        res.window_busy_s,
        res.total_output_tokens,
        res.total_busy_s,
    )


@pytest.mark.parametrize("policy", ["hetero", "pow2", "round_robin"])
def test_fast_forward_gives_identical_results_to_stepping(policy):
    """Runs of decode steps applied at once must give bit-identical times, tokens, routing and
    preemptions (small KV caches force preemptions; hetero reads the tracker on every arrival)."""
    reqs = make_requests(30.0, 500, seed=4, mean_prompt_tokens=400, mean_output_tokens=120)
    specs = make_instances([1, 3, 7], kv_capacity_tokens=9_000, max_num_seqs=16, predicted=[900, 300, 120])
    ff = Simulator(specs, make_policy(policy, seed=1), reqs, SimConfig(fast_forward=True)).run()
    step = Simulator(specs, make_policy(policy, seed=1), reqs, SimConfig(fast_forward=False)).run()
    assert ff.num_preemptions.sum() > 0  # the case is not trivial
    for a, b in zip(_arrays(ff), _arrays(step)):
        assert np.array_equal(a, b, equal_nan=True)
    assert ff.num_steps == step.num_steps
    assert ff.num_events < step.num_events / 2  # and it did skip work


def test_a_seeded_simulation_is_reproducible():
    reqs = make_requests(40.0, 800, seed=2)
    specs = make_instances([1, 2, 5], predicted=[1000, 500, 200])
    runs = [summarize(simulate(specs, make_policy("random", seed=7), reqs)) for _ in range(2)]
    assert runs[0] == runs[1]
    other = summarize(simulate(specs, make_policy("random", seed=8), reqs))
    assert other.instances != runs[0].instances


def test_requests_no_instance_can_hold_are_refused_and_counted():
    specs = one_instance(kv=1_000)
    # prompt + max_tokens must fit the empty cache: 100 + 100 does, 5,000 + 100 does not.
    res = simulate(specs, make_policy("hetero"), stream([0.0, 1.0, 2.0], [100, 5_000, 100], [10, 10, 10], 100))
    assert res.instance_of.tolist() == [0, -1, 0]
    rep = summarize(res)
    assert rep.num_rejected == 1
    assert np.isnan(res.finish_s[1])


def test_window_excludes_ramp_up_and_drain():
    reqs = make_requests(20.0, 400, seed=0)
    res = simulate(make_instances([1, 4], predicted=[800, 200]), make_policy("hetero"), reqs)
    t0, t1 = res.window_s
    span = reqs.arrival_s[-1] - reqs.arrival_s[0]
    assert t0 == pytest.approx(reqs.arrival_s[0] + 0.25 * span) and t1 == reqs.arrival_s[-1]
    assert res.end_s > t1  # the drain happened, outside the window
    assert 0 < res.window_output_tokens.sum() < res.total_output_tokens.sum()


def test_slower_coefficients_give_proportionally_longer_runs():
    reqs = stream([0.0], [300], [50])
    fast = simulate(one_instance(FAST), make_policy("round_robin"), reqs)
    slow = simulate(one_instance(scaled(FAST, 5.0)), make_policy("round_robin"), reqs)
    assert slow.finish_s[0] == pytest.approx(5.0 * fast.finish_s[0], rel=1e-9)
