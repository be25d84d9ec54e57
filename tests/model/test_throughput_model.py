"""Steady-state throughput of one instance (hetserve.model.throughput): sanity and SLO caps."""

from __future__ import annotations

import math

import pytest

from hetserve.catalog import default_catalog
from hetserve.config import SLOSpec
from hetserve.model.latency import LatencyModel
from hetserve.model.throughput import Workload, predict_instance, steady_state
from hetserve.records import LatencyCoeffs

COEFFS = LatencyCoeffs(a_p=20e-6, b_p=3e-3, a_d=15e-6, c_d=40e-9, b_d=8e-3, q_p=1e-9)
WORKLOAD = Workload(mean_input_tokens=1000, mean_output_tokens=250, max_request_tokens=4096)


@pytest.fixture(scope="module")
def catalog():
    return default_catalog()


def test_steady_state_matches_the_design_formula():
    """Unchunked prompts (1000 tokens fit the 8192-token budget), all requests alike: a step
    carries the prompts of the k ~ Binomial(B, 1/l_out) slots freed the step before beside
    B - k decodes, priced by the engine's own step function; every step emits B tokens."""
    from scipy.stats import binom

    from hetserve.engines.batching import step_time_s

    b, l_in, l_out = 32, 1000.0, 250.0
    state = steady_state(COEFFS, b, WORKLOAD)
    ctx = l_in + l_out / 2
    mean_step = sum(
        binom.pmf(k, b, 1 / l_out) * step_time_s(COEFFS, k * l_in, k * l_in**2, b - k, (b - k) * ctx)
        for k in range(b + 1)
    )
    assert state.output_tokens_per_s == pytest.approx(b / mean_step, rel=1e-6)
    assert state.requests_per_s == pytest.approx(b / mean_step / l_out, rel=1e-6)
    assert state.tpot_s == pytest.approx(mean_step, rel=1e-6)


def test_a_spread_of_prompt_lengths_costs_more_than_their_mean():
    """The step price is convex in its prompt tokens (a short chunk rides under the memory-bound
    decode, a long one is compute-bound), so a lognormal mix of the same means delivers less."""
    spread = Workload(1000, 250, 4096, input_tokens_cv=1.3, output_tokens_cv=1.3)
    assert steady_state(COEFFS, 32, spread).output_tokens_per_s < steady_state(COEFFS, 32, WORKLOAD).output_tokens_per_s


def test_bigger_batches_raise_throughput_and_tpot():
    states = [steady_state(COEFFS, b, WORKLOAD) for b in (1, 2, 4, 8, 16, 64, 256)]
    tput = [s.output_tokens_per_s for s in states]
    tpot = [s.tpot_s for s in states]
    assert tput == sorted(tput) and tput[0] < tput[-1]
    assert tpot == sorted(tpot) and tpot[0] < tpot[-1]


def test_more_memory_never_means_fewer_tokens_per_second(catalog):
    model = catalog.model("llama-3.1-8b")
    base = catalog.accelerator("L40S")
    coeffs = LatencyModel.default().coeffs(model, base, 1)
    previous = -1.0
    for memory_gib in (20, 24, 32, 48, 80, 141):
        accel = base.model_copy(update={"memory_gib": float(memory_gib)})
        pred = predict_instance(model, accel, coeffs, 1, 256, 0.9, 1.5, WORKLOAD)
        assert pred.feasible
        assert pred.output_tokens_per_s >= previous
        previous = pred.output_tokens_per_s
    assert previous > 0


def test_batch_is_capped_by_kv_capacity_and_max_num_seqs(catalog):
    model, accel = catalog.model("llama-3.1-8b"), catalog.accelerator("L4")
    coeffs = LatencyModel.default().coeffs(model, accel, 1)
    pred = predict_instance(model, accel, coeffs, 1, 512, 0.9, 1.5, WORKLOAD)
    assert pred.feasible
    assert pred.batch_size == math.floor(pred.kv_capacity_tokens / 1250)
    capped = predict_instance(model, accel, coeffs, 1, 4, 0.9, 1.5, WORKLOAD)
    assert capped.batch_size == 4


def test_tpot_slo_caps_the_batch_and_is_met(catalog):
    model, accel = catalog.model("llama-3.1-8b"), catalog.accelerator("H100-SXM5-80GB")
    coeffs = LatencyModel.default().coeffs(model, accel, 1)
    free = predict_instance(model, accel, coeffs, 1, 256, 0.9, 1.5, WORKLOAD)
    slo_ms = free.tpot_s * 1e3 / 2
    capped = predict_instance(model, accel, coeffs, 1, 256, 0.9, 1.5, WORKLOAD, SLOSpec(tpot_ms=slo_ms))
    assert capped.feasible
    assert capped.batch_size < free.batch_size
    assert capped.tpot_s * 1e3 <= slo_ms
    # the cap is the largest batch that meets it
    assert steady_state(coeffs, capped.batch_size + 1, WORKLOAD).tpot_s * 1e3 > slo_ms
    assert capped.output_tokens_per_s < free.output_tokens_per_s


def test_ttft_slo_caps_the_batch_and_is_met(catalog):
    model, accel = catalog.model("qwen2.5-32b"), catalog.accelerator("H100-SXM5-80GB")
    coeffs = LatencyModel.default().coeffs(model, accel, 2)
    free = predict_instance(model, accel, coeffs, 2, 256, 0.9, 1.5, WORKLOAD)
    slo_ms = (free.ttft_s * 1e3 + steady_state(coeffs, 1, WORKLOAD).ttft_s * 1e3) / 2
    capped = predict_instance(model, accel, coeffs, 2, 256, 0.9, 1.5, WORKLOAD, SLOSpec(ttft_ms=slo_ms))
    assert capped.feasible and capped.ttft_s * 1e3 <= slo_ms and capped.batch_size < free.batch_size


def test_unreachable_slo_is_infeasible_with_a_reason(catalog):
    model, accel = catalog.model("llama-3.1-8b"), catalog.accelerator("T4")
    coeffs = LatencyModel.default().coeffs(model, accel, 2)
    pred = predict_instance(model, accel, coeffs, 2, 256, 0.9, 1.5, WORKLOAD, SLOSpec(tpot_ms=1.0))
    assert not pred.feasible
    assert "SLO unreachable" in pred.reason
    assert pred.output_tokens_per_s == 0.0


def test_faster_accelerator_predicts_more_throughput(catalog):
    """Same model and TP: the fitted profiles order H200 > H100 > A100 > L40S on tokens/s."""
    model = catalog.model("llama-3.1-8b")
    latency = LatencyModel.default()
    tput = {}
    for name in ("H200-SXM-141GB", "H100-SXM5-80GB", "A100-SXM4-80GB", "L40S"):
        accel = catalog.accelerator(name)
        tput[name] = predict_instance(
            model, accel, latency.coeffs(model, accel, 1), 1, 256, 0.9, 1.5, WORKLOAD
        ).output_tokens_per_s
    assert tput["H200-SXM-141GB"] > tput["H100-SXM5-80GB"] > tput["A100-SXM4-80GB"] > tput["L40S"]


@pytest.mark.parametrize("l_in,l_out,rel", [(2000, 7, 0.05), (3600, 8, 0.12), (1000, 13, 0.05), (200, 8, 0.05)])
def test_few_output_tokens_on_a_large_batch_match_the_batching_loop(l_in, l_out, rel):
    """A large batch of requests that emit a few tokens each: admitting every slot per step
    leaves no decodes and admitting few leaves room for all, so the plain fixed point alternated
    between the two and kept the wrong one (2000 in / 7 out: 1.10x the simulator's tokens/s,
    3600 / 8: 1.65x; on an H100-tp4 plan, 2055 / 7: 0.14x), or spiralled in and was cut off
    after 4 steps (1000 / 13: 0.91x, 200 / 8: 1.13x). The model must agree with the engine's
    own batching loop (the simulator, saturated) within these bounds."""
    import numpy as np

    from hetserve.records import PlannedInstance
    from hetserve.sim import SimRequests
    from hetserve.sim.fluid import saturated_capacity

    n = 3000
    reqs = SimRequests("long-few", np.zeros(n), np.full(n, l_in), np.full(n, l_out), np.full(n, l_out))
    sim = saturated_capacity(PlannedInstance("i", "d", "a", COEFFS, 2_000_000, 256, 1.0), reqs).output_tokens_per_s
    model = steady_state(COEFFS, 256, Workload(l_in, l_out, l_in + l_out)).output_tokens_per_s
    assert model == pytest.approx(sim, rel=rel)
