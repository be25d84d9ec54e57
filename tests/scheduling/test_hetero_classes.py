"""`hetero_classes` in the simulator: it uses the comparative advantage hetero cannot, and it keeps
hetero's balance when the plan's speeds are wrong (overflow)."""

from __future__ import annotations

import numpy as np
import pytest

from hetserve.model.classes import RequestClasses
from hetserve.records import LatencyCoeffs, RequestInfo
from hetserve.scheduling import make_policy, policy_names
from hetserve.scheduling.base import InstanceView
from hetserve.scheduling.hetero_classes import ClassTable, HeteroClassesPolicy
from hetserve.sim import PlannedInstance, SimConfig, SimRequests, Simulator, summarize
from hetserve.sim.class_bound import class_bound, class_table

pytest.importorskip("scipy")

COEFFS = LatencyCoeffs(a_p=5e-5, b_p=2e-3, a_d=2e-4, c_d=1e-8, b_d=1e-2)


def _slow(c: LatencyCoeffs, f: float) -> LatencyCoeffs:
    return LatencyCoeffs(c.a_p * f, c.b_p * f, c.a_d * f, c.c_d * f, c.b_d * f, c.q_p * f)


def _spec(name: str, kv: int, coeffs: LatencyCoeffs = COEFFS) -> PlannedInstance:
    return PlannedInstance(name, name, name, coeffs, kv, 64, 1.0)


def _bimodal(n: int, rate: float = 1.0, seed: int = 1) -> SimRequests:
    rng = np.random.default_rng(seed)
    long_ = rng.random(n) < 0.5
    prompts = np.where(long_, 3000, 100) + rng.integers(0, 50, n)
    outputs = np.where(long_, 100, 200) + rng.integers(0, 10, n)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    return SimRequests("bimodal", arrival - arrival[0], prompts, outputs, outputs)


def _setup(specs):
    reqs = _bimodal(4000)
    cls = RequestClasses.from_quantiles(reqs.num_prompt_tokens, None, 2, 1)
    bound = class_bound(specs, reqs, cls, labels=cls.assign(reqs.num_prompt_tokens))
    seeded = [
        PlannedInstance(s.instance_id, s.deployment, s.accelerator, s.coeffs, s.kv_capacity_tokens, s.max_num_seqs, c)
        for s, c in zip(specs, bound.mu_sim @ bound.proportions * bound.mean_output_tokens, strict=True)
    ]
    return bound, seeded


def _throughput(specs, policy, bound, load: float = 1.3) -> float:
    reqs = _bimodal(6000, rate=load * bound.validated)
    res = Simulator(specs, policy, reqs, SimConfig()).run()
    return summarize(res).output_tokens_per_s


def test_registered_by_name_and_hetero_without_a_table():
    assert "hetero_classes" in policy_names()
    views = [InstanceView("a", "a", "x", 100.0, 10_000), InstanceView("b", "b", "x", 300.0, 10_000)]
    req = RequestInfo("r", 100, 50, 0.0)
    assert make_policy("hetero_classes").select(req, views, 0.0) == make_policy("hetero").select(req, views, 0.0)


def test_comparative_advantage_beats_hetero_at_saturation():
    bound, specs = _setup([_spec("big", 400_000), _spec("small", 20_000)])
    assert bound.headroom > 0.05
    table = class_table(bound)
    hetero = _throughput(specs, make_policy("hetero"), bound)
    classes = _throughput(specs, HeteroClassesPolicy(0, table), bound)
    # Without its table it is hetero: the gain comes from the class split, not from elsewhere.
    blind = _throughput(specs, HeteroClassesPolicy(0, None), bound)
    assert classes > 1.04 * hetero
    assert blind == pytest.approx(hetero, rel=0.01)
    assert classes >= 0.95 * bound.validated * bound.mean_output_tokens


def _wrong(specs, slowed: str, factor: float = 3.0):
    """The same instances with `slowed` really `factor` times slower than its table row and seed say."""
    return [
        PlannedInstance(
            s.instance_id,
            s.deployment,
            s.accelerator,
            _slow(s.coeffs, factor) if s.instance_id == slowed else s.coeffs,
            s.kv_capacity_tokens,
            s.max_num_seqs,
            s.predicted_tokens_per_s,
        )
        for s in specs
    ]


def test_misplan_of_the_big_type_keeps_hetero_level():
    bound, specs = _setup([_spec("big", 400_000), _spec("small", 20_000)])
    wrong = _wrong(specs, "big")
    hetero = _throughput(wrong, make_policy("hetero"), bound, load=1.0)
    guarded = _throughput(wrong, HeteroClassesPolicy(0, class_table(bound)), bound, load=1.0)
    assert guarded >= 0.97 * hetero


def test_overflow_moves_work_off_a_slowed_type():
    # The small-KV instance, which the LP gives every short request, runs 3x slower than planned.
    # Overflow (its backlog of in-flight work outgrowing the other's) moves work away; without it
    # the LP keeps feeding it. Measured: overflow 1273 tok/s, none 1015, hetero 1349 (hetero_classes
    # still trails hetero here by ~6%: the LP's shares keep the plan's speeds; see the module doc).
    bound, specs = _setup([_spec("big", 400_000), _spec("small", 20_000)])
    wrong = _wrong(specs, "small")
    table = class_table(bound)
    guarded = _throughput(wrong, HeteroClassesPolicy(0, table), bound, load=1.0)
    blind = _throughput(wrong, HeteroClassesPolicy(0, table, overflow=float("inf")), bound, load=1.0)
    assert guarded > 1.15 * blind


def test_lp_follows_the_observed_mix():
    table = ClassTable(RequestClasses((1000,)), ("a", "b"), np.array([[4.0, 1.0], [1.0, 1.0]]), np.array([0.5, 0.5]))
    pol = HeteroClassesPolicy(0, table, resolve_every=50)
    views = [InstanceView("a/0", "a", "x", 100.0, 100_000), InstanceView("b/0", "b", "x", 100.0, 100_000)]
    for i in range(3000):  # only short requests arrive
        pol.select(RequestInfo(str(i), 10, 10, float(i)), views, float(i))
    assert pol._mix[0] > 0.9
    assert pol.num_solves > 10
