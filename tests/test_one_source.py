"""One source for every instance fact: the plan's coefficients and KV capacity are exactly what the
simulator and the emulated engine run with, and a changed profile changes all three together."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hetserve.catalog import default_catalog
from hetserve.cluster import load_cluster
from hetserve.engines import EngineSpec, create_engine
from hetserve.model import LatencyModel
from hetserve.model.latency import load_profiles
from hetserve.planner import search_plan
from hetserve.records import Plan
from hetserve.scheduling import make_policy
from hetserve.sim import SimRequests, Simulator, instances_from_plan

LAPTOP = Path(__file__).resolve().parents[1] / "cluster_configs" / "laptop.yaml"
A100 = "A100-SXM4-80GB"


def _facts_everywhere(plan: Plan) -> dict[str, tuple]:
    """Per instance: (plan's coefficients, KV) and what the simulator and the emulated engine use."""
    cluster = load_cluster(LAPTOP)
    reqs = SimRequests("one", np.zeros(1), np.ones(1, np.int64), np.ones(1, np.int64), np.ones(1, np.int64))
    sim = Simulator(instances_from_plan(plan), make_policy("round_robin"), reqs)
    out = {}
    for inst, sim_inst in zip(plan.instances(), sim._insts, strict=True):
        dp = plan.deployment(inst.deployment)
        engine = create_engine("emulated", EngineSpec(cluster.model, dp, plan.max_model_len))
        planned = (dp.coeffs, dp.kv_capacity_tokens)
        simulated = (sim_inst.batcher.coeffs, sim_inst.batcher.kv_capacity_tokens)
        emulated = (engine.coeffs, engine.kv_capacity_tokens)
        out[inst.instance_id] = (planned, simulated, emulated)
    return out


def test_plan_simulator_and_emulated_engine_share_coefficients_and_kv():
    plan = search_plan(load_cluster(LAPTOP))
    facts = _facts_everywhere(plan)
    assert len(facts) == 4
    for planned, simulated, emulated in facts.values():
        assert planned == simulated == emulated


def test_changing_a_profile_changes_the_plan_the_simulator_and_the_engine():
    cluster = load_cluster(LAPTOP)
    profiles = list(load_profiles())
    (k,) = [i for i, p in enumerate(profiles) if (p.model, p.accelerator, p.tp) == (cluster.model.name, A100, 1)]
    slower = dataclasses.replace(profiles[k].coeffs, a_d=2 * profiles[k].coeffs.a_d, b_d=2 * profiles[k].coeffs.b_d)
    profiles[k] = dataclasses.replace(profiles[k], coeffs=slower)
    models = default_catalog().models
    base = search_plan(cluster, latency_model=LatencyModel(load_profiles(), models))
    changed = search_plan(cluster, latency_model=LatencyModel(profiles, models))

    assert changed.deployment(f"{A100}-tp1").coeffs == slower
    assert changed.deployment(f"{A100}-tp1").coeffs_source == "profile"
    assert (
        changed.deployment(f"{A100}-tp1").prediction.output_tokens_per_s
        < base.deployment(f"{A100}-tp1").prediction.output_tokens_per_s
    )
    for iid, (planned, simulated, emulated) in _facts_everywhere(changed).items():
        assert planned == simulated == emulated
        if iid.startswith(A100):
            assert planned[0] == slower
        else:  # the other types' profiles did not change
            assert planned == _facts_everywhere(base)[iid][0]
