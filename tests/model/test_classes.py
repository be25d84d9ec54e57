"""Request classes and the class-aware fluid LP (hetserve.model.classes)."""

from __future__ import annotations

import numpy as np
import pytest

from hetserve.model.classes import RequestClasses, model_class_rates, same_mix_rate, solve_class_lp
from hetserve.records import LatencyCoeffs

pytest.importorskip("scipy")


def test_quantile_classes_are_near_equal_and_assign_matches_index():
    rng = np.random.default_rng(0)
    prompts = rng.lognormal(6, 1, 6000).astype(int) + 1
    outputs = (rng.lognormal(4, 1, 6000) + prompts / 50).astype(int) + 1  # correlated with the prompt
    cls = RequestClasses.from_quantiles(prompts, outputs, 4, 3)
    assert cls.num_classes == 12
    labels = cls.assign(prompts, outputs)
    sizes = np.bincount(labels, minlength=cls.num_classes)
    assert sizes.min() > 0.7 * len(prompts) / 12 and sizes.max() < 1.3 * len(prompts) / 12
    for i in range(0, 6000, 97):
        assert cls.index(int(prompts[i]), int(outputs[i])) == labels[i]
    assert cls.label(0).startswith("prompt [0,")


def test_prompt_only_classes():
    cls = RequestClasses((100, 1000))
    assert cls.num_classes == 3
    assert list(cls.assign(np.array([5, 100, 999, 5000]))) == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="second_edges"):
        RequestClasses((100,), ((10,),))


def test_lp_uses_comparative_advantage():
    # Instance A is twice as fast on class 0, B twice as fast on class 1: each should take its own.
    mu = np.array([[2.0, 1.0], [1.0, 2.0]])
    lp = solve_class_lp(mu, [1, 1], [0.5, 0.5])
    assert lp.requests_per_s == pytest.approx(4.0)
    assert same_mix_rate(mu, [1, 1], [0.5, 0.5]) == pytest.approx(8.0 / 3.0)
    assert lp.share[0, 0] == pytest.approx(1.0, abs=1e-5) and lp.share[1, 1] == pytest.approx(1.0, abs=1e-5)
    assert lp.rates.sum(axis=0) == pytest.approx([2.0, 2.0], rel=1e-5)
    assert lp.busy.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_lp_equals_same_mix_without_comparative_advantage():
    # Proportional rows: one type is uniformly faster; sorting classes cannot help.
    mu = np.array([[3.0, 1.0, 0.5], [1.5, 0.5, 0.25]])
    p = [0.2, 0.5, 0.3]
    assert solve_class_lp(mu, [2, 3], p).requests_per_s == pytest.approx(same_mix_rate(mu, [2, 3], p), rel=1e-7)


def test_model_class_rates_charge_kv_footprint():
    coeffs = LatencyCoeffs(a_p=5e-5, b_p=2e-3, a_d=2e-4, c_d=1e-8, b_d=1e-2)
    short, long_ = model_class_rates(coeffs, 20_000, 64, [100, 3000], [200, 200])
    big_short, big_long = model_class_rates(coeffs, 400_000, 64, [100, 3000], [200, 200])
    assert big_short == pytest.approx(short)  # both batches hit max_num_seqs
    assert big_long > 2 * long_  # 6 long sequences fit a 20k cache, 64 fit 400k
