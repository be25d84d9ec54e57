"""`hetserve plan`: JSON and tables match the library's plan; bad arguments exit 2 without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hetserve.cli import main
from hetserve.cluster import load_cluster
from hetserve.planner import search_plan

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"


def test_json_matches_search_plan(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "paper_mixed.yaml"
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    plan = search_plan(load_cluster(path))
    assert data["output_tokens_per_s"] == pytest.approx(plan.output_tokens_per_s)
    assert data["num_instances"] == sum(d.num_instances for d in plan.deployments)
    assert [d["name"] for d in data["deployments"]] == [d.name for d in plan.deployments]
    assert [d["node_names"] for d in data["deployments"]] == [list(d.node_names) for d in plan.deployments]
    assert data["objective"] == "throughput"
    assert {"description", "output_tokens_per_s", "why"} <= set(data["runners_up"][0])


def test_table_lists_deployments_and_runners_up(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "paper_npu.yaml"
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    plan = search_plan(load_cluster(path))
    for d in plan.deployments:
        assert d.name in out
    assert f"{plan.output_tokens_per_s:,.0f} output tok/s" in out
    assert "Runners-up" in out and "infeasible" in out


def test_cost_objective_from_cli(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "laptop.yaml"
    assert main(["plan", str(path), "--objective", "cost", "--target-tokens-per-s", "300", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["objective"] == "cost" and data["output_tokens_per_s"] >= 300
    expected = search_plan(load_cluster(path), "cost", target_output_tokens_per_s=300)
    assert data["price_per_hour"] == pytest.approx(expected.price_per_hour)


def test_mixed_partitions_flag(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "paper_mixed.yaml"
    assert main(["plan", str(path), "--json", "--mixed-partitions"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert main(["plan", str(path), "--json"]) == 0
    uniform = json.loads(capsys.readouterr().out)
    assert mixed["output_tokens_per_s"] >= uniform["output_tokens_per_s"] * (1 - 1e-12)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--objective", "cost"], "target"),
        (["--objective", "cost", "--target-tokens-per-s", "1e9"], "target_output_tokens_per_s"),
        (["--objective", "throughput_slo"], "slo"),
    ],
)
def test_refusals_exit_2(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(CONFIGS / "laptop.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
