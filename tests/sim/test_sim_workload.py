"""Request streams: trace replay (rate scaling, context clipping, client max_tokens) and the
seeded Poisson process; and the fluid bound against the steady-state throughput model."""

from __future__ import annotations

import numpy as np
import pytest
from sim_factories import FAST, MAX_MODEL_LEN, make_requests

from hetserve.model.throughput import Workload, steady_state
from hetserve.sim import PlannedInstance, poisson_requests, requests_from_trace, saturated_capacity
from hetserve.traces import Trace


def trace() -> Trace:
    return Trace("t", np.array([0.0, 1.0, 3.0, 4.0]), np.array([100, 5000, 200, 4000]), np.array([10, 50, 700, 96]))


def test_trace_replay_keeps_the_arrival_pattern_scaled_by_the_rate_multiplier():
    reqs = requests_from_trace(trace(), max_model_len=4096, rate_scale=2.0)
    assert reqs.arrival_s.tolist() == [0.0, 0.5, 1.5, 2.0]
    assert reqs.num_output_tokens.tolist() == [10, 50, 700, 96]
    assert reqs.scaled(0.5).arrival_s.tolist() == [0.0, 1.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="rate_scale must be > 0"):
        reqs.scaled(0.0)


def test_prompts_are_clipped_to_fit_the_context_with_their_output():
    reqs = requests_from_trace(trace(), max_model_len=4096)
    assert reqs.num_prompt_tokens.tolist() == [100, 4096 - 50, 200, 4000]
    assert reqs.num_clipped == 1
    assert np.all(reqs.num_prompt_tokens + reqs.num_output_tokens <= 4096)


def test_client_max_tokens_never_reveal_less_than_the_true_output():
    """ "cap": a fixed 2048 or the context left, whichever is smaller (never below the true output);
    "pow2": the true output rounded up to a power of two."""
    cap = requests_from_trace(trace(), max_model_len=4096, max_tokens_rule="cap")
    assert cap.max_tokens.tolist() == [2048, 50, 2048, 96]
    pow2 = requests_from_trace(trace(), max_model_len=4096, max_tokens_rule="pow2")
    assert pow2.max_tokens.tolist() == [16, 50, 1024, 96]  # 64 and 128 capped by the context left
    for r in (cap, pow2):
        assert np.all(r.max_tokens >= r.num_output_tokens)


def test_poisson_stream_is_seeded_with_the_requested_rate_and_means():
    a = poisson_requests(20.0, 20_000, 500, 100, MAX_MODEL_LEN, seed=1)
    b = poisson_requests(20.0, 20_000, 500, 100, MAX_MODEL_LEN, seed=1)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.num_prompt_tokens, b.num_prompt_tokens)
    assert a.requests_per_s == pytest.approx(20.0, rel=0.03)
    assert a.mean_prompt_tokens == pytest.approx(500, rel=0.05)
    assert a.mean_output_tokens == pytest.approx(100, rel=0.05)
    fixed = poisson_requests(5.0, 10, 300, 40, MAX_MODEL_LEN, lengths="fixed")
    assert set(fixed.num_prompt_tokens.tolist()) == {300} and set(fixed.num_output_tokens.tolist()) == {40}


def test_saturated_instance_matches_the_steady_state_throughput_model():
    """Fixed-length requests saturating one batch-limited instance: the simulated rate agrees with
    the model's X = B / (l_out * T_d(B, B*(l_in + l_out/2)) + B * T_p(l_in)) within 5%."""
    reqs = make_requests(1.0, 1500, mean_prompt_tokens=600, mean_output_tokens=150, lengths="fixed")
    spec = PlannedInstance(
        "one",
        "d",
        "fake",
        FAST,
        kv_capacity_tokens=500_000,
        max_num_seqs=48,
        predicted_tokens_per_s=1.0,
        max_num_batched_tokens=600,
    )
    cap = saturated_capacity(spec, reqs)
    model = steady_state(FAST, 48, Workload(600, 150, 1000), max_num_batched_tokens=600)
    assert cap.output_tokens_per_s == pytest.approx(model.output_tokens_per_s, rel=0.05)
    assert cap.requests_per_s == pytest.approx(model.requests_per_s, rel=0.05)
    assert cap.total_tokens_per_s == pytest.approx(cap.requests_per_s * 750, rel=0.05)


def test_shuffled_lengths_keep_arrivals_and_the_length_multiset():
    reqs = make_requests(3.0, 500, seed=7)
    a, b = reqs.shuffled_lengths(1), reqs.shuffled_lengths(1)
    assert np.array_equal(a.arrival_s, reqs.arrival_s)
    assert np.array_equal(a.num_output_tokens, b.num_output_tokens)
    assert not np.array_equal(a.num_output_tokens, reqs.num_output_tokens)
    pairs = lambda r: sorted(zip(r.num_prompt_tokens.tolist(), r.num_output_tokens.tolist(), r.max_tokens.tolist()))  # noqa: E731
    assert pairs(a) == pairs(reqs)


def test_tiled_stream_repeats_the_pattern_back_to_back():
    reqs = requests_from_trace(trace(), max_model_len=4096)
    t = reqs.tiled(3)
    gap = reqs.duration_s / (len(reqs) - 1)
    assert len(t) == 12 and t.num_clipped == 3
    assert t.arrival_s[4] == pytest.approx(reqs.duration_s + gap)
    assert np.all(np.diff(t.arrival_s) > 0)
    assert t.num_output_tokens.tolist() == reqs.num_output_tokens.tolist() * 3
