"""The class-aware fluid bound measured and validated in the simulator (hetserve.sim.class_bound)."""

from __future__ import annotations

import numpy as np
import pytest

from hetserve.model.classes import RequestClasses
from hetserve.records import LatencyCoeffs
from hetserve.sim import PlannedInstance, SimRequests
from hetserve.sim.class_bound import class_bound

pytest.importorskip("scipy")

COEFFS = LatencyCoeffs(a_p=5e-5, b_p=2e-3, a_d=2e-4, c_d=1e-8, b_d=1e-2)


def _bimodal(n: int = 4000) -> SimRequests:
    rng = np.random.default_rng(1)
    long_ = rng.random(n) < 0.5
    prompts = np.where(long_, 3000, 100) + rng.integers(0, 50, n)
    outputs = np.where(long_, 100, 200) + rng.integers(0, 10, n)
    return SimRequests("bimodal", np.zeros(n), prompts, outputs, outputs)


def _spec(name: str, kv: int) -> PlannedInstance:
    return PlannedInstance(name, name, name, COEFFS, kv, 64, 1.0)


def test_small_kv_instance_takes_short_requests_and_the_bound_rises():
    reqs = _bimodal()
    cls = RequestClasses.from_quantiles(reqs.num_prompt_tokens, None, 2, 1)
    b = class_bound([_spec("big", 400_000), _spec("small", 20_000)], reqs, cls)
    short = cls.index(100)
    assert b.lp_sim.share[1, short] > 0.9  # the small cache serves (almost) only short requests
    assert b.headroom > 0.05  # validated in the simulator, not only in the LP
    assert b.validated == pytest.approx(b.lp_sim.requests_per_s, rel=0.05)


def test_identical_instances_have_no_headroom():
    reqs = _bimodal()
    cls = RequestClasses.from_quantiles(reqs.num_prompt_tokens, None, 2, 1)
    b = class_bound([_spec("a", 400_000), _spec("b", 400_000)], reqs, cls)
    assert b.headroom_lp == pytest.approx(0.0, abs=1e-6)
    assert abs(b.headroom) < 0.02
