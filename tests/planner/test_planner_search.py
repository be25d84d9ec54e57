"""search_plan against an independent brute force, plus determinism, SLOs, costs and refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from planner_factories import brute_force_cost, brute_force_throughput, random_cluster

from hetserve.cluster import load_cluster, resolve_cluster
from hetserve.config import ClusterSpec, ConfigError
from hetserve.model import LatencyModel
from hetserve.planner import Objective, search_plan

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"
SEEDS = range(12)


@pytest.fixture(scope="module")
def lm() -> LatencyModel:
    return LatencyModel.default()


def small_spec(nodes: list[dict], model: str = "llama-3.1-8b", **extra) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": "t",
            "model": model,
            "nodes": nodes,
            "workload": {"mean_input_tokens": 1155, "mean_output_tokens": 211, "max_request_tokens": 4096},
            **extra,
        }
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mixed", [False, True])
def test_throughput_equals_brute_force(seed: int, mixed: bool, lm: LatencyModel) -> None:
    """The planner's total equals the best of every per-node combination, uniform and mixed."""
    cluster = random_cluster(seed)
    expected = brute_force_throughput(cluster, lm, mixed=mixed)
    if expected == 0.0:
        with pytest.raises(ConfigError):
            search_plan(cluster, latency_model=lm, mixed_partitions=mixed)
        return
    plan = search_plan(cluster, latency_model=lm, mixed_partitions=mixed)
    assert plan.output_tokens_per_s == pytest.approx(expected, rel=1e-9)
    # Every instance sits on a node of its accelerator type, and no node is over-subscribed.
    nodes = {n.name: n for n in cluster.nodes}
    used: dict[str, int] = {}
    for d in plan.deployments:
        for name in d.node_names:
            assert nodes[name].accelerator == d.config.accelerator
            used[name] = used.get(name, 0) + d.config.tp
    assert all(used[name] == nodes[name].count for name in used)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.9])
@pytest.mark.parametrize("mixed", [False, True])
def test_cost_equals_brute_force(seed: int, fraction: float, mixed: bool, lm: LatencyModel) -> None:
    """The cheapest plan meeting a target costs what the exhaustive enumeration finds."""
    cluster = random_cluster(seed)
    best_rate = brute_force_throughput(cluster, lm, mixed=mixed)
    if best_rate == 0.0:
        pytest.skip("model fits nowhere on this random cluster")
    target = fraction * best_rate
    expected = brute_force_cost(cluster, lm, target, mixed=mixed)
    plan = search_plan(cluster, "cost", latency_model=lm, target_output_tokens_per_s=target, mixed_partitions=mixed)
    assert plan.price_per_hour == pytest.approx(expected, abs=1e-6)
    assert plan.output_tokens_per_s >= target * (1 - 1e-12)
    # The plan's price is what its nodes cost.
    nodes = {n.name: n for n in cluster.nodes}
    used = {name for d in plan.deployments for name in d.node_names}
    price = sum(nodes[n].count * cluster.catalog.accelerator(nodes[n].accelerator).price_per_hour for n in used)
    assert plan.price_per_hour == pytest.approx(price)


@pytest.mark.parametrize("seed", SEEDS)
def test_mixed_partitions_never_worse(seed: int, lm: LatencyModel) -> None:
    cluster = random_cluster(seed + 100)
    try:
        uniform = search_plan(cluster, latency_model=lm)
    except ConfigError:
        pytest.skip("model fits nowhere on this random cluster")
    mixed = search_plan(cluster, latency_model=lm, mixed_partitions=True)
    assert mixed.output_tokens_per_s >= uniform.output_tokens_per_s * (1 - 1e-12)


def test_mixed_partitions_use_nodes_uniform_splits_cannot(lm: LatencyModel) -> None:
    """qwen2.5-32b (40 heads) on L4 nodes of 6: only TP4 and TP5 fit, neither divides 6.

    Uniform splits leave the node idle; mixed partitions run one TP4 or TP5 instance and say
    that the leftover accelerators are idle.
    """
    spec = small_spec(
        [{"name": "a", "accelerator": "L4", "count": 6}, {"name": "h", "accelerator": "H100-SXM5-80GB", "count": 1}],
        model="qwen2.5-32b",
    )
    cluster = resolve_cluster(spec)
    uniform = search_plan(cluster, latency_model=lm)
    assert {n for d in uniform.deployments for n in d.node_names} == {"h"}
    mixed = search_plan(cluster, latency_model=lm, mixed_partitions=True)
    assert mixed.output_tokens_per_s == pytest.approx(brute_force_throughput(cluster, lm, mixed=True))
    l4 = [d for d in mixed.deployments if d.config.accelerator == "L4"]
    assert len(l4) == 1 and l4[0].config.tp in (4, 5) and l4[0].node_names == ("a",)
    assert any(f"{6 - l4[0].config.tp} of 6 accelerators idle" in line for line in mixed.infeasible)
    assert mixed.output_tokens_per_s > uniform.output_tokens_per_s


def test_mixed_partition_beats_uniform_when_degrees_differ(lm: LatencyModel) -> None:
    """A node of 6 where TP2 and TP4 run: mixed considers 4+2 beside uniform 3xTP2."""
    spec = small_spec([{"name": "a", "accelerator": "A100-SXM4-40GB", "count": 6}], model="qwen2.5-32b")
    cluster = resolve_cluster(spec)
    mixed = search_plan(cluster, latency_model=lm, mixed_partitions=True)
    assert mixed.output_tokens_per_s == pytest.approx(brute_force_throughput(cluster, lm, mixed=True))
    assert mixed.output_tokens_per_s >= search_plan(cluster, latency_model=lm).output_tokens_per_s


def test_same_inputs_same_plan() -> None:
    """Two searches with fresh latency models and a reloaded cluster give equal Plan records."""
    for path in ("paper_mixed.yaml", "large.yaml"):
        a = search_plan(load_cluster(CONFIGS / path), latency_model=LatencyModel.default())
        b = search_plan(load_cluster(CONFIGS / path), latency_model=LatencyModel.default())
        assert a == b
        ca = search_plan(load_cluster(CONFIGS / path), "cost", target_output_tokens_per_s=a.output_tokens_per_s / 3)
        cb = search_plan(load_cluster(CONFIGS / path), "cost", target_output_tokens_per_s=a.output_tokens_per_s / 3)
        assert ca == cb


def test_cost_tie_uses_nodes_in_cluster_order(lm: LatencyModel) -> None:
    """Identical nodes tie on price: the first ones listed in the config are used."""
    spec = small_spec(
        [
            {"name": "zeta", "accelerator": "L4", "count": 1},
            {"name": "alpha", "accelerator": "L4", "count": 1},
            {"name": "mid", "accelerator": "L4", "count": 1},
        ]
    )
    cluster = resolve_cluster(spec)
    one = search_plan(cluster, latency_model=lm).deployments[0].prediction.output_tokens_per_s
    plan = search_plan(cluster, "cost", latency_model=lm, target_output_tokens_per_s=1.5 * one)
    assert plan.deployments[0].node_names == ("zeta", "alpha")
    assert plan.price_per_hour == pytest.approx(2 * cluster.catalog.accelerator("L4").price_per_hour)
    assert any("mid" in line and "not needed" in line for line in plan.infeasible)


def test_model_that_fits_nowhere_is_refused_per_type(lm: LatencyModel) -> None:
    """llama-2-70b on T4 and L4 nodes of 4: the error names the model and each type's reasons."""
    spec = small_spec(
        [
            {"name": "t4", "accelerator": "T4", "count": 4, "num_nodes": 3},
            {"name": "l4", "accelerator": "L4", "count": 4},
        ],
        model="llama-2-70b",
    )
    with pytest.raises(ConfigError) as err:
        search_plan(resolve_cluster(spec), latency_model=lm)
    msg = str(err.value)
    assert "llama-2-70b" in msg
    assert "T4x4 (3 nodes)" in msg and "L4x4 (1 node)" in msg
    assert "TP4: weights need 32.1 GiB per device" in msg
    assert "T4 offers 12.9 GiB" in msg


def test_partly_feasible_cluster_reports_idle_nodes(lm: LatencyModel) -> None:
    spec = small_spec(
        [
            {"name": "t4", "accelerator": "T4", "count": 4},
            {"name": "h100", "accelerator": "H100-SXM5-80GB", "count": 4},
        ],
        model="llama-2-70b",
    )
    plan = search_plan(resolve_cluster(spec), latency_model=lm)
    assert {n for d in plan.deployments for n in d.node_names} == {"h100"}
    assert len(plan.infeasible) == 1 and plan.infeasible[0].startswith("t4 (T4x4): no feasible configuration")
    refused = [r for r in plan.runners_up if r.description.endswith("T4x4 pool")]
    assert [r.description.split()[0] for r in refused] == ["TP1", "TP2", "TP4"]
    assert all(r.why.startswith("infeasible: weights need") for r in refused)


def test_runner_up_totals_match_forcing_that_choice(lm: LatencyModel) -> None:
    """A runner-up's total is exactly the plan obtained by forcing that pool onto that TP."""
    spec = load_cluster(CONFIGS / "paper_mixed.yaml")
    plan = search_plan(spec, latency_model=lm)
    alt = next(r for r in plan.runners_up if r.output_tokens_per_s > 0)
    tp = int(alt.description.split()[0].removeprefix("TP"))
    accel = alt.description.split(" on the ")[1].split("x")[0]
    raw = ClusterSpec.model_validate(
        __import__("yaml").safe_load((CONFIGS / "paper_mixed.yaml").read_text())
    ).model_dump(exclude_none=True)
    for node in raw["nodes"]:
        if node["accelerator"] == accel:
            node["overrides"] = {"tp_degrees": [tp]}
    forced = search_plan(resolve_cluster(ClusterSpec.model_validate(raw)), latency_model=lm)
    assert forced.output_tokens_per_s == pytest.approx(alt.output_tokens_per_s, rel=1e-9)
    assert alt.output_tokens_per_s <= plan.output_tokens_per_s
    assert "%" in alt.why and f"{plan.output_tokens_per_s:,.0f}" in alt.why


def test_throughput_slo_caps_batches(lm: LatencyModel) -> None:
    """A TPOT cap below what the unconstrained plan predicts shrinks batches until it holds."""
    nodes = [{"name": "a", "accelerator": "A100-SXM4-80GB", "count": 2}, {"name": "l", "accelerator": "L4", "count": 2}]
    free = search_plan(resolve_cluster(small_spec(nodes)), latency_model=lm)
    cap_ms = 0.7 * max(d.prediction.tpot_s for d in free.deployments) * 1e3
    cluster = resolve_cluster(small_spec(nodes, slo={"tpot_ms": cap_ms}))
    assert search_plan(cluster, latency_model=lm) == free  # plain throughput ignores the SLO
    capped = search_plan(cluster, Objective.THROUGHPUT_SLO, latency_model=lm)
    assert capped.objective == "throughput_slo"
    assert all(d.prediction.tpot_s * 1e3 <= cap_ms for d in capped.deployments)
    assert capped.output_tokens_per_s < free.output_tokens_per_s


def test_throughput_slo_without_slo_is_refused(lm: LatencyModel) -> None:
    cluster = load_cluster(CONFIGS / "laptop.yaml")
    with pytest.raises(ConfigError, match="slo"):
        search_plan(cluster, "throughput_slo", latency_model=lm)


def test_cost_refusals_name_the_target(lm: LatencyModel) -> None:
    cluster = load_cluster(CONFIGS / "laptop.yaml")
    with pytest.raises(ConfigError, match="target"):
        search_plan(cluster, "cost", latency_model=lm)
    best = search_plan(cluster, latency_model=lm).output_tokens_per_s
    with pytest.raises(ConfigError, match=r"target_output_tokens_per_s: .* unreachable"):
        search_plan(cluster, "cost", latency_model=lm, target_output_tokens_per_s=best * 1.01)
    with pytest.raises(ConfigError, match="objective"):
        search_plan(cluster, "latency", latency_model=lm)


def test_cost_at_full_rate_uses_every_node(lm: LatencyModel) -> None:
    cluster = load_cluster(CONFIGS / "paper_npu.yaml")
    best = search_plan(cluster, latency_model=lm)
    plan = search_plan(cluster, "cost", latency_model=lm, target_output_tokens_per_s=best.output_tokens_per_s)
    assert plan.price_per_hour == pytest.approx(best.price_per_hour)
    assert not plan.infeasible


def test_deployment_names_unique_when_settings_differ(lm: LatencyModel) -> None:
    cluster = resolve_cluster(
        small_spec(
            [
                {"name": "a", "accelerator": "L4", "count": 1},
                {"name": "b", "accelerator": "L4", "count": 1, "overrides": {"max_num_seqs": 8}},
            ]
        )
    )
    plan = search_plan(cluster, latency_model=lm)
    names = [d.name for d in plan.deployments]
    assert len(names) == 2 and len(set(names)) == 2
    assert all(n.startswith("L4-tp1") for n in names)


def test_large_config_plans_every_feasible_node(lm: LatencyModel) -> None:
    cluster = load_cluster(CONFIGS / "large.yaml")
    assert len(cluster.nodes) >= 1000 and len(cluster.accelerator_types) >= 8
    plan = search_plan(cluster, latency_model=lm)
    placed = {n for d in plan.deployments for n in d.node_names}
    t4 = {n.name for n in cluster.nodes if n.accelerator == "T4"}
    assert placed == {n.name for n in cluster.nodes} - t4
    assert math.isclose(plan.num_accelerators, sum(n.count for n in cluster.nodes) - 4 * len(t4))
