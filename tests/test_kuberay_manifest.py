"""deploy/kuberay/rayservice.yaml: the embedded Serve config is valid for hetserve's own models
(AppArgs, the cluster file), it plans, and every accelerator type of the cluster file has a
worker group carrying exactly its Ray custom resource, device count and node count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hetserve.app import load_app_args
from hetserve.catalog import ray_resource_name
from hetserve.cluster import load_cluster
from hetserve.config import AppArgs, load_cluster_spec
from hetserve.planner import search_plan
from hetserve.serving.builder import ROUTER_DEPLOYMENT

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "kuberay" / "rayservice.yaml"


def _docs(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def check_manifest(text: str, tmp_path: Path) -> AppArgs:
    """Raise AssertionError/ConfigError naming what disagrees; return the app's AppArgs."""
    docs = _docs(text)
    service, config_map = docs["RayService"], docs["ConfigMap"]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    apps = serve_config["applications"]
    assert len(apps) == 1 and apps[0]["import_path"] == "hetserve.app:build", apps
    app = apps[0]
    args = load_app_args(app.get("args") or {})  # ConfigError names the field
    for dep in app.get("deployments", []):
        assert dep["name"] == ROUTER_DEPLOYMENT, f"deployment override {dep['name']!r}: only the router is static"
        if "user_config" in dep:
            load_app_args({"policy": dep["user_config"]["policy"]})

    # The cluster file is mounted from the ConfigMap at args.cluster.
    mount = Path(args.cluster or "")
    cluster_text = config_map["data"][mount.name]
    local = tmp_path / mount.name
    local.write_text(cluster_text)
    spec = load_cluster_spec(local)
    cluster = load_cluster(local)
    plan = search_plan(cluster)
    assert plan.deployments, f"the cluster file plans nothing: {plan.infeasible}"

    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    by_resource: dict[str, dict[str, Any]] = {}
    for g in groups:
        resources = json.loads(json.loads(g["rayStartParams"]["resources"]))
        assert len(resources) == 1, f"group {g['groupName']}: one accelerator type per group ({resources})"
        (name, count), = resources.items()  # fmt: skip
        by_resource[name] = {"count": count, "group": g}
    for node in spec.nodes:
        res = ray_resource_name(node.accelerator)
        assert res in by_resource, f"node {node.name}: no worker group carries resource {res!r}"
        g = by_resource[res]["group"]
        assert by_resource[res]["count"] == node.count, f"group {g['groupName']}: {res} count != node count"
        assert g["replicas"] == node.num_nodes, f"group {g['groupName']}: replicas != num_nodes"
        if args.engine == "vllm":
            assert int(g["rayStartParams"]["num-gpus"]) == node.count
            limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) == node.count
    assert set(by_resource) == {ray_resource_name(n.accelerator) for n in spec.nodes}, "a group has no node entry"
    # Serve's own schema, when Ray is importable here.
    schema = pytest.importorskip("ray.serve.schema")
    schema.ServeDeploySchema.model_validate(serve_config)
    return args


def test_manifest_is_consistent(tmp_path):
    args = check_manifest(MANIFEST.read_text(), tmp_path)
    assert args.engine == "vllm"


def test_check_fails_on_a_mismatched_group(tmp_path):
    """The check can fail: an L4 group carrying the wrong device count, or a typo in AppArgs."""
    text = MANIFEST.read_text()
    bad = text.replace('\'"{\\"L4\\": 4}"\'', '\'"{\\"L4\\": 8}"\'')
    assert bad != text
    with pytest.raises(AssertionError, match="count"):
        check_manifest(bad, tmp_path)
    typo = text.replace("stats_period_s: 1.0", "stats_periods: 1.0")
    with pytest.raises(Exception, match="stats_periods"):
        check_manifest(typo, tmp_path)
