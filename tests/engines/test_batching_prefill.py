"""Prefill pricing of a step that admits several prompts at once."""

from hetserve.engines.batching import ContinuousBatcher, Sequence
from hetserve.records import LatencyCoeffs


def test_batched_prefill_charges_attention_per_sequence():
    """Two 1,000-token prompts admitted together cost a_p*2000 + q_p*(2*1000^2) + b_p, not
    q_p*2000^2: attention is quadratic in each sequence's length, not in the batch's."""
    coeffs = LatencyCoeffs(a_p=1e-5, b_p=0.01, a_d=0.0, c_d=0.0, b_d=0.0, q_p=1e-8)
    batcher = ContinuousBatcher(coeffs, kv_capacity_tokens=100_000, max_num_seqs=8)
    batcher.add(Sequence("a", 1000, 4))
    batcher.add(Sequence("b", 1000, 4))
    plan = batcher.plan_step()
    assert plan.num_prefill_tokens == 2000
    expected = 1e-5 * 2000 + 1e-8 * 2 * 1000**2 + 0.01
    assert abs(plan.step_s - expected) < 1e-12
    assert plan.step_s < coeffs.prefill_s(2000)


def test_single_prompt_prefill_matches_prefill_s():
    """A step that only prefills is one prefill pass (it samples the first token in the same pass;
    before chunked prefill it was also charged a decode pass)."""
    coeffs = LatencyCoeffs(a_p=2e-5, b_p=0.005, a_d=1e-4, c_d=1e-7, b_d=0.02, q_p=3e-9)
    batcher = ContinuousBatcher(coeffs, kv_capacity_tokens=100_000, max_num_seqs=8)
    batcher.add(Sequence("a", 700, 4))
    plan = batcher.plan_step()
    assert abs(plan.step_s - coeffs.prefill_s(700)) < 1e-12
