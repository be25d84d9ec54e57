"""The vLLM-v1-like step: one token budget for decodes and prompt chunks, chunked prefill,
one price per mixed step, FCFS admission and newest-first preemption."""

from __future__ import annotations

import random

import pytest

from hetserve.engines.batching import ContinuousBatcher, Sequence, step_time_s
from hetserve.records import LatencyCoeffs

COEFFS = LatencyCoeffs(a_p=1e-5, b_p=0.004, a_d=2e-5, c_d=2e-8, b_d=0.012, q_p=1e-10)


def _run_to_decoding(batcher: ContinuousBatcher) -> None:
    """Step until every running sequence is decoding."""
    while any(s.prefilling for s in batcher.running) or batcher.waiting:
        batcher.complete_step(batcher.plan_step())


def test_a_long_prompt_is_chunked_and_decodes_continue_in_the_same_steps():
    budget = 2048
    b = ContinuousBatcher(COEFFS, kv_capacity_tokens=200_000, max_num_seqs=64, max_num_batched_tokens=budget)
    for i in range(8):
        b.add(Sequence(f"d{i}", 100, 10_000))
    _run_to_decoding(b)
    long = Sequence("long", 32_000, 4)
    b.add(long)
    steps = 0
    while long.num_output_tokens == 0:
        before = {s.request_id: s.num_output_tokens for s in b.running if s is not long}
        plan = b.plan_step()
        assert plan.num_batched_tokens <= budget
        assert plan.num_decode_seqs == 8 and plan.num_prefill_tokens == min(
            budget - 8, 32_000 - long.num_computed_tokens
        )
        res = b.complete_step(plan)
        decoded = {s.request_id for s in res.emitted if s is not long}
        assert decoded == set(before)  # every decode advanced in this step
        steps += 1
    assert steps == -(-32_000 // (budget - 8))  # ceil: the prompt went through in chunks
    assert long.num_computed_tokens == 32_000 and long.num_output_tokens == 1


def test_a_chunk_rides_in_the_decode_step_for_one_price():
    b = ContinuousBatcher(COEFFS, kv_capacity_tokens=100_000, max_num_seqs=8, max_num_batched_tokens=512)
    b.add(Sequence("a", 50, 100))
    _run_to_decoding(b)
    b.add(Sequence("p", 2000, 5))
    plan = b.plan_step()
    assert (plan.num_prefill_tokens, plan.num_decode_seqs) == (511, 1)
    a = b.running[0]
    assert plan.step_s == pytest.approx(step_time_s(COEFFS, 511, 511**2, 1, a.num_kv_tokens))
    # One pass, cheaper than a prefill pass plus a decode pass.
    assert plan.step_s < COEFFS.prefill_s(511) + COEFFS.decode_s(1, a.num_kv_tokens)


def test_chunked_attention_totals_the_unchunked_prompt():
    """(k + c)**2 - k**2 per chunk: a prompt's attention term is q_p * l**2 however it is chunked."""
    coeffs = LatencyCoeffs(a_p=0.0, b_p=0.0, a_d=0.0, c_d=0.0, b_d=0.0, q_p=1.0)
    b = ContinuousBatcher(coeffs, kv_capacity_tokens=100_000, max_num_seqs=8, max_num_batched_tokens=300)
    b.add(Sequence("p", 1000, 2))
    total = 0.0
    while b.running or b.waiting:
        plan = b.plan_step()
        if plan.num_prefill_tokens:
            total += plan.step_s
        b.complete_step(plan)
    assert total == pytest.approx(1000**2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_step_never_exceeds_the_token_budget_or_the_kv_cache(seed):
    rng = random.Random(seed)
    budget, capacity = 700, 12_000
    b = ContinuousBatcher(COEFFS, kv_capacity_tokens=capacity, max_num_seqs=24, max_num_batched_tokens=budget)
    for i in range(150):
        b.add(Sequence(str(i), rng.randint(1, 3000), rng.randint(1, 300)))
    steps = preempted = 0
    while not b.idle:
        plan = b.plan_step()
        assert plan is not None
        assert plan.num_batched_tokens == sum(plan.num_new_tokens) <= budget
        assert len(b.running) <= 24
        assert b.kv_used_tokens == sum(s.num_kv_tokens for s in b.running) <= capacity
        preempted += len(plan.preempted)
        b.complete_step(plan, now_s=float(steps))
        steps += 1
    assert preempted > 0  # the KV cache was tight enough to exercise preemption
    assert b.kv_used_tokens == 0


def test_kv_pressure_preempts_the_newest_and_admits_nothing_that_step():
    b = ContinuousBatcher(COEFFS, kv_capacity_tokens=330, max_num_seqs=8, max_num_batched_tokens=4096)
    for name in "abc":
        b.add(Sequence(name, 100, 50))
    b.complete_step(b.plan_step())  # all three prefilled: 300 tokens of KV, one token each
    b.add(Sequence("d", 40, 5))  # 300 + 3 decodes + 40 > 330: waits
    for _ in range(10):  # 300 + 3 per step: the 11th decode step no longer fits
        plan = b.plan_step()
        assert not plan.preempted
        b.complete_step(plan)
    plan = b.plan_step()
    assert [s.request_id for s in plan.preempted] == ["c"]  # newest first, as vLLM's FCFS
    assert [s.request_id for s in b.waiting] == ["c", "d"]  # at the front; nothing admitted
    assert b.waiting[0].num_computed_tokens == 0


def _clone(seqs):
    return [Sequence(s.request_id, s.num_prompt_tokens, s.num_target_tokens) for s in seqs]


def test_fast_forwarded_decode_runs_equal_stepping():
    """The simulator's fast path on the batcher itself: same states and bit-identical times."""
    rng = random.Random(3)
    seqs = [Sequence(str(i), rng.randint(10, 900), rng.randint(1, 200)) for i in range(60)]
    kw = dict(kv_capacity_tokens=9_000, max_num_seqs=12, max_num_batched_tokens=512)
    fast, slow = ContinuousBatcher(COEFFS, **kw), ContinuousBatcher(COEFFS, **kw)
    for s in seqs:
        fast.add(s)
    by_id = {}
    for s in _clone(seqs):
        slow.add(s)
        by_id[s.request_id] = s
    t_fast = t_slow = 0.0
    runs = 0
    while not fast.idle:
        limit = fast.decode_run_limit()
        if limit >= 1:
            steps, t_fast = fast.decode_run_span(limit, t_fast, float("inf"))
            fast.advance_decode(steps, t_fast)
            runs += 1
            for _ in range(steps):
                plan = slow.plan_step()
                assert plan.num_prefill_tokens == 0 and not plan.preempted
                t_slow += plan.step_s
                slow.complete_step(plan, t_slow)
        else:
            plan = fast.plan_step()
            t_fast += plan.step_s
            fast.complete_step(plan, t_fast)
            plan = slow.plan_step()
            t_slow += plan.step_s
            slow.complete_step(plan, t_slow)
        assert t_fast == t_slow
        assert fast.kv_used_tokens == slow.kv_used_tokens
    assert slow.idle and runs > 5
    for s in seqs:
        twin = by_id[s.request_id]
        assert (s.first_token_s, s.finish_s, s.num_preemptions) == (
            twin.first_token_s,
            twin.finish_s,
            twin.num_preemptions,
        )
