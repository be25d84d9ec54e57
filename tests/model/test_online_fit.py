"""The online step-time fit: recovers an instance's true coefficients from its step records
whatever the prior, forgets a change of speed within seconds of engine time, and the planner's
fits and this one share one least-squares function."""

from __future__ import annotations

import numpy as np
import pytest

from hetserve.model import latency
from hetserve.model.online_fit import OnlineFit, StepAccumulator, coeff_vector, saturated_capacity_tokens_per_s
from hetserve.records import LatencyCoeffs

TRUE = LatencyCoeffs(a_p=6e-5, b_p=3e-3, a_d=2.5e-4, c_d=2e-8, b_d=1.2e-2)


def scaled(c: LatencyCoeffs, f: float) -> LatencyCoeffs:
    return LatencyCoeffs(c.a_p * f, c.b_p * f, c.a_d * f, c.c_d * f, c.b_d * f, c.q_p * f)


def steps(acc: StepAccumulator, coeffs: LatencyCoeffs, n: int, seed: int = 0) -> None:
    """Varied steps: some with prefill, batch sizes and contexts spread out."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        b = int(rng.integers(1, 48))
        ctx = int(b * rng.integers(100, 2000))
        pre = int(rng.integers(50, 3000)) if rng.random() < 0.3 else 0
        acc.add_step(pre, b, ctx, coeffs.prefill_s(pre) + coeffs.decode_s(b, ctx))


@pytest.mark.parametrize("prior_factor", [1 / 3, 1.0, 3.0])
def test_fit_recovers_the_true_coefficients_whatever_the_prior(prior_factor):
    acc = StepAccumulator()
    steps(acc, TRUE, 400)
    fit = OnlineFit(scaled(TRUE, prior_factor))
    assert fit.update(acc.totals())
    for name in ("a_p", "b_p", "a_d", "c_d", "b_d"):
        assert getattr(fit.coeffs, name) == pytest.approx(getattr(TRUE, name), rel=0.02), name
    assert fit.speed == pytest.approx(1 / prior_factor, rel=0.01)
    assert fit.rel_rmse < 1e-3
    assert fit.plan_rel_rmse == pytest.approx(abs(prior_factor - 1), rel=0.05, abs=1e-3)


def test_with_uninformative_steps_the_fit_keeps_the_prior_shape_at_the_measured_speed():
    """Only decode steps of one batch size and context per sequence: a_d, c_d and b_d cannot be
    told apart, so the prior's split holds, scaled to the measured step time."""
    acc = StepAccumulator()
    true = scaled(TRUE, 2.0)
    for _ in range(200):
        acc.add_step(0, 8, 8 * 500, true.decode_s(8, 8 * 500))
    fit = OnlineFit(TRUE)
    fit.update(acc.totals())
    assert fit.speed == pytest.approx(2.0, rel=1e-6)
    assert fit.coeffs.decode_s(8, 4000) == pytest.approx(true.decode_s(8, 4000), rel=1e-3)
    assert fit.coeffs.b_d == pytest.approx(true.b_d, rel=0.05)


def test_a_decode_run_adds_what_its_steps_add():
    one, run = StepAccumulator(), StepAccumulator()
    b, s0, k = 12, 12 * 300, 40
    for i in range(k):
        one.add_step(0, b, s0 + i * b, TRUE.decode_s(b, s0 + i * b))
    run.add_decode_run(b, s0, k, TRUE.decode_s(b, s0), TRUE.decode_s(b, s0 + (k - 1) * b))
    a, r = one.totals(), run.totals()
    assert r.num_steps == a.num_steps and r.busy_s == pytest.approx(a.busy_s)
    assert np.allclose(r.gram, a.gram, rtol=0.02) and np.allclose(r.moment, a.moment, rtol=0.02)
    fit = OnlineFit(scaled(TRUE, 3.0))
    acc = StepAccumulator()
    steps(acc, TRUE, 100)
    acc.add_decode_run(b, s0, k, TRUE.decode_s(b, s0), TRUE.decode_s(b, s0 + (k - 1) * b))
    fit.update(acc.totals())
    assert fit.coeffs.decode_s(b, s0) == pytest.approx(TRUE.decode_s(b, s0), rel=1e-3)


def test_a_change_of_speed_shows_within_20_s_of_engine_time():
    acc = StepAccumulator()
    fit = OnlineFit(TRUE)
    for k in range(60):  # minutes of engine time at the old speed, reported every 50 steps
        steps(acc, TRUE, 50, seed=100 + k)
        fit.update(acc.totals())
    slow = scaled(TRUE, 2.0)
    t0 = acc.totals().busy_s
    rng_seed = 2
    while acc.totals().busy_s - t0 < 20.0:
        steps(acc, slow, 50, seed=rng_seed)  # one stats period's worth
        rng_seed += 1
        fit.update(acc.totals())
    c_fit, _ = saturated_capacity_tokens_per_s(fit.coeffs, 300, 60, 60_000, 32)
    c_true, _ = saturated_capacity_tokens_per_s(slow, 300, 60, 60_000, 32)
    assert c_fit == pytest.approx(c_true, rel=0.1)


def test_a_lost_report_loses_no_steps_and_a_restart_starts_over():
    acc = StepAccumulator()
    steps(acc, TRUE, 50)
    fit = OnlineFit(scaled(TRUE, 3.0), half_life_s=float("inf"))
    fit.update(acc.totals())
    steps(acc, TRUE, 50, seed=3)
    steps(acc, TRUE, 50, seed=4)  # the report in between never arrived
    assert fit.update(acc.totals())
    assert fit.num_steps == pytest.approx(150, rel=0.01)
    assert not fit.update(acc.totals())  # the same report twice adds nothing
    fresh = StepAccumulator()  # the engine restarted: its totals went back to zero
    steps(fresh, TRUE, 10, seed=5)
    assert fit.update(fresh.totals())


def test_the_planner_fits_and_the_online_fit_share_one_function(monkeypatch):
    calls = []
    real = latency.fit_nonneg

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(latency, "fit_nonneg", spy)
    import hetserve.model.online_fit as online

    monkeypatch.setattr(online, "fit_nonneg", spy)
    latency.fit_decode([1, 2, 4, 8], [100, 300, 500, 900], [0.011, 0.012, 0.0135, 0.017])
    assert calls
    calls.clear()
    acc = StepAccumulator()
    steps(acc, TRUE, 20)
    OnlineFit(TRUE).update(acc.totals())
    assert calls


def test_prior_regularisation_pulls_toward_the_prior_only_where_data_is_silent():
    x = np.array([[1.0, 0.0], [2.0, 0.0]])
    y = np.array([2.0, 4.0])
    w = np.ones(2)
    sol = latency.fit_nonneg(x, y, w, prior=np.array([1.0, 5.0]), prior_weight=np.array([1e-6, 1.0]))
    assert sol[0] == pytest.approx(2.0, rel=1e-4) and sol[1] == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize("true_factor", [1 / 3, 3.0])
def test_speed_vs_plan_is_recovered_from_steps_priced_as_the_engine_prices_them(true_factor):
    """Steps priced by the engines' own step function (one pass for a mixed step): the fitted
    speed against the plan is still the true factor within 10%."""
    from hetserve.engines.batching import step_time_s

    true = scaled(TRUE, true_factor)
    rng = np.random.default_rng(0)
    acc = StepAccumulator()
    for _ in range(400):
        b = int(rng.integers(1, 48))
        ctx = int(b * rng.integers(100, 2000))
        pre = int(rng.integers(50, 3000)) if rng.random() < 0.3 else 0
        acc.add_step(pre, b, ctx, step_time_s(true, pre, pre * pre, b, ctx))
    fit = OnlineFit(TRUE)
    assert fit.update(acc.totals())
    assert fit.speed == pytest.approx(true_factor, rel=0.1)


@pytest.mark.parametrize("true_factor", [1 / 3, 3.0])
def test_one_pass_mixed_steps_are_fitted_exactly_with_the_plans_shape(true_factor):
    """A mixed step costs max(decode, one pass over all its tokens); with the plan's coefficients
    as the accumulator's shape each row is the branch that binds, so a plan off by one factor
    recovers the true coefficients (live, without it, the speed read 2.69 for 3x and 0.272 for
    1/3, and C ran up to 25% high: the sum of both passes is not what the engine prices)."""
    from hetserve.engines.batching import step_time_s

    true = scaled(TRUE, true_factor)
    rng = np.random.default_rng(0)
    acc = StepAccumulator(TRUE)
    for _ in range(400):
        b = int(rng.integers(1, 48))
        ctx = int(b * rng.integers(100, 2000))
        pre = int(rng.integers(50, 3000)) if rng.random() < 0.3 else 0
        acc.add_step(pre, b, ctx, step_time_s(true, pre, 0.0, b, ctx))
    fit = OnlineFit(TRUE)
    assert fit.update(acc.totals())
    assert fit.speed == pytest.approx(true_factor, rel=1e-6)
    for got, want in zip(coeff_vector(fit.coeffs), coeff_vector(true), strict=True):
        assert got == pytest.approx(want, rel=1e-3)


def test_a_change_of_speed_is_detected_and_shows_within_three_reports():
    """Steps 2x slower than the fit predicts cut the remembered steps at once (change detection),
    so C follows within three stats periods, not several half-lives."""
    acc = StepAccumulator()
    fit = OnlineFit(TRUE)
    for k in range(60):
        steps(acc, TRUE, 50, seed=100 + k)
        fit.update(acc.totals())
    slow = scaled(TRUE, 2.0)
    for k in range(3):
        steps(acc, slow, 50, seed=2 + k)
        fit.update(acc.totals())
    assert fit.num_changes >= 1
    c_fit, _ = saturated_capacity_tokens_per_s(fit.coeffs, 300, 60, 60_000, 32)
    c_true, _ = saturated_capacity_tokens_per_s(slow, 300, 60, 60_000, 32)
    assert c_fit == pytest.approx(c_true, rel=0.1)
