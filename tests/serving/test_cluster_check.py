"""A plan is matched against the live nodes' resources before anything is deployed (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

from hetserve.cluster import load_cluster
from hetserve.planner import search_plan
from hetserve.serving.cluster_check import missing_for_plan

LAPTOP = Path(__file__).resolve().parents[2] / "cluster_configs" / "laptop.yaml"


def test_laptop_plan_fits_the_laptop_nodes_and_not_fewer():
    plan = search_plan(load_cluster(LAPTOP))
    nodes = [{"CPU": 4}, {"A100-SXM4-80GB": 1}, {"L4": 2}, {"T4": 2}]
    assert missing_for_plan(plan, nodes) == []
    # The T4 instance is TP2 on one node: two single-T4 nodes cannot hold it.
    split = [{"A100-SXM4-80GB": 1}, {"L4": 2}, {"T4": 1}, {"T4": 1}]
    (problem,) = missing_for_plan(plan, split)
    assert problem.startswith("resource 'T4': the plan needs 2 units on 1 node(s); the live cluster has 2 on 2")
    assert "t4-0 (2)" in problem
