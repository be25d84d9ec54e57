"""Pools, TP degrees and node options: what the planner searches over."""

from __future__ import annotations

import sys

import pytest

from hetserve.cluster import resolve_cluster
from hetserve.config import ClusterSpec
from hetserve.model import LatencyModel
from hetserve.planner import enumerate_candidates, group_pools
from hetserve.planner.candidates import partitions


def spec(nodes: list[dict], model: str = "llama-3.1-8b") -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": "c",
            "model": model,
            "nodes": nodes,
            "workload": {"mean_input_tokens": 1155, "mean_output_tokens": 211, "max_request_tokens": 4096},
        }
    )


class CountingLatencyModel:
    """The real default latency model, counting how often the planner asks it for coefficients."""

    def __init__(self) -> None:
        self.inner = LatencyModel.default()
        self.calls: list[tuple[str, int]] = []

    def resolve(self, model, accel, tp):
        self.calls.append((accel.name, tp))
        return self.inner.resolve(model, accel, tp)


def test_partitions_of_eight() -> None:
    assert sorted(partitions(8, [4, 2])) == [(2, 2, 2, 2), (4, 2, 2), (4, 4)]
    assert list(partitions(8, [8])) == [(8,)]
    assert len(list(partitions(8, [1, 2, 4, 8]))) == 10  # binary partitions of 8
    assert list(partitions(3, [4])) == []
    assert sorted(partitions(6, [4, 5])) == [(4,), (5,)]  # 2 or 1 left idle, nothing else fits


def test_pools_group_identical_nodes_only() -> None:
    cluster = resolve_cluster(
        spec(
            [
                {"name": "a", "accelerator": "L4", "count": 2, "num_nodes": 3},
                {"name": "b", "accelerator": "L4", "count": 2},
                {"name": "c", "accelerator": "L4", "count": 4},
                {"name": "d", "accelerator": "L4", "count": 2, "overrides": {"max_num_seqs": 8}},
                {"name": "e", "accelerator": "T4", "count": 2, "overrides": {"tp_degrees": [2]}},
            ]
        )
    )
    pools = group_pools(cluster.nodes)
    by_nodes = {p.node_names: p for p in pools}
    assert set(by_nodes) == {("a-0", "a-1", "a-2", "b"), ("c",), ("d",), ("e",)}
    assert len({p.label for p in pools}) == len(pools)
    assert by_nodes[("c",)].label == "L4x4"
    assert "max_num_seqs=8" in by_nodes[("d",)].label


def test_predictions_once_per_accelerator_tp_and_settings() -> None:
    """2,000 nodes of 2 types cost as many predictions as 2 nodes: pools share them."""
    cluster = resolve_cluster(
        spec(
            [
                {"name": "a", "accelerator": "A100-SXM4-80GB", "count": 8, "num_nodes": 1000},
                {"name": "b", "accelerator": "L4", "count": 4, "num_nodes": 999},
                {"name": "c", "accelerator": "L4", "count": 2},
            ]
        )
    )
    lm = CountingLatencyModel()
    cands = enumerate_candidates(cluster, lm)
    assert sorted(lm.calls) == sorted(set(lm.calls))  # never twice
    assert set(lm.calls) == {("A100-SXM4-80GB", t) for t in (1, 2, 4, 8)} | {("L4", t) for t in (1, 2, 4)}
    assert [c.pool.num_nodes for c in cands] == [1000, 1, 999]


def test_degrees_respect_override_heads_and_memory() -> None:
    cluster = resolve_cluster(
        spec(
            [
                {"name": "t", "accelerator": "T4", "count": 4},
                {"name": "l", "accelerator": "L4", "count": 4, "overrides": {"tp_degrees": [2, 4]}},
            ],
            model="qwen2.5-32b",
        )
    )
    cands = {c.pool.label: c for c in enumerate_candidates(cluster, LatencyModel.default())}
    t4 = cands["T4x4"]
    assert [d.tp for d in t4.degrees] == [1, 2, 4]
    assert "weights need" in t4.degree(1).reason and "weights need" in t4.degree(2).reason
    l4 = cands["L4x4"]
    assert "tp_degrees override" in l4.degree(1).reason
    assert all(o.partition[0] in (2, 4) for o in l4.options)
    # 40 heads: in mixed mode TP3 is not even considered on a node of 4; TP4 is.
    mixed = {c.pool.label: c for c in enumerate_candidates(cluster, LatencyModel.default(), mixed_partitions=True)}
    assert 3 not in [d.tp for d in mixed["L4x4"].degrees]


def test_options_best_first_and_uniform_subset_of_mixed() -> None:
    cluster = resolve_cluster(spec([{"name": "a", "accelerator": "A100-SXM4-80GB", "count": 8}]))
    lm = LatencyModel.default()
    uniform = enumerate_candidates(cluster, lm)[0]
    mixed = enumerate_candidates(cluster, lm, mixed_partitions=True)[0]
    rates = [o.output_tokens_per_s for o in uniform.options]
    assert rates == sorted(rates, reverse=True)
    assert {o.partition for o in uniform.options} == {(1,) * 8, (2,) * 4, (4, 4), (8,)}
    assert {o.partition for o in uniform.options} <= {o.partition for o in mixed.options}
    assert mixed.best.output_tokens_per_s >= uniform.best.output_tokens_per_s
    per_degree = {d.tp: d.prediction.output_tokens_per_s for d in mixed.degrees}
    for o in mixed.options:
        assert o.output_tokens_per_s == pytest.approx(sum(per_degree[t] for t in o.partition))


def test_planner_imports_no_ray() -> None:
    """model/ and planner/ are plain Python: importing them must not pull in ray."""
    import subprocess

    code = (
        "import sys; import hetserve.planner, hetserve.planner.render, hetserve.commands.plan; "
        "sys.exit(1 if 'ray' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
