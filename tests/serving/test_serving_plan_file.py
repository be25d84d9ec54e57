"""Serve the plan you approved: `hetserve plan ... --json > plan.json`, then
`serve run hetserve.app:build plan=plan.json` deploys exactly that plan, whatever objective made it,
and a plan the live Ray cluster cannot hold is refused naming what is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # noqa: E402
from ray.serve._private.build_app import build_app  # noqa: E402

from hetserve.app import build  # noqa: E402
from hetserve.cli import main  # noqa: E402
from hetserve.config import ConfigError  # noqa: E402
from hetserve.serving.builder import ROUTER_DEPLOYMENT  # noqa: E402
from serving_helpers import wait_for_free_resources  # noqa: E402

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
LAPTOP = REPO / "cluster_configs" / "laptop.yaml"


def _plan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[Path, dict]:
    assert main(["plan", str(LAPTOP), "--json", *extra]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "plan.json"
    path.write_text(text)
    return path, json.loads(text)


def _running_replicas(app: str, timeout_s: float = 90.0) -> dict[str, int]:
    """Deployment -> RUNNING replicas, once the application is RUNNING."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return {name: d.replica_states.get("RUNNING", 0) for name, d in status.deployments.items()}
        time.sleep(0.5)
    raise AssertionError(f"application {app} not RUNNING after {timeout_s} s: {serve.status().applications.get(app)}")


@pytest.mark.parametrize(
    "objective_args",
    [(), ("--objective", "cost", "--target-tokens-per-s", "600")],
    ids=["throughput", "cost"],
)
def test_serving_a_plan_file_deploys_exactly_the_planned_deployments(
    ray_driver, tmp_path: Path, capsys: pytest.CaptureFixture[str], objective_args: tuple[str, ...]
) -> None:
    path, planned = _plan_json(tmp_path, capsys, *objective_args)
    expected = {d["name"]: d["num_instances"] for d in planned["deployments"]}
    if objective_args:
        # The cost plan is a different plan from the default search's, so serving it proves the
        # file (not a fresh search inside build) decided what was deployed.
        assert expected == {"L4-tp1": 2}
    needs: dict[str, float] = {}
    for d in planned["deployments"]:
        acc = d["config"]["accelerator"]
        needs[acc] = needs.get(acc, 0) + d["config"]["tp"] * d["num_instances"]
    wait_for_free_resources(needs)
    app_name = f"planfile-{planned['objective']}"
    # As `serve run hetserve.app:build plan=plan.json time_scale=0.01` calls it: string args.
    app = call_user_app_builder_with_args_if_necessary(build, {"plan": str(path), "time_scale": "0.01"})
    serve.run(app, name=app_name, route_prefix=None, blocking=False)
    try:
        running = _running_replicas(app_name)
        assert running == {**expected, ROUTER_DEPLOYMENT: 1}
        handle = serve.get_app_handle(app_name)
        view = handle.plan.remote().result(timeout_s=30)
        assert view["objective"] == planned["objective"]
        assert {d["name"]: d["num_instances"] for d in view["deployments"]} == expected
        out = handle.generate.remote({"model": planned["model"], "prompt": "hi", "max_tokens": 4}).result(timeout_s=60)
        assert out["usage"]["completion_tokens"] == 4
    finally:
        serve.delete(app_name, _blocking=True)


def test_a_serve_config_file_with_plan_args_builds_the_same_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Serve config form (`serve deploy`): the controller calls the builder with the YAML's args."""
    path, planned = _plan_json(tmp_path, capsys, "--objective", "cost", "--target-tokens-per-s", "600")
    config = yaml.safe_load(
        f"""
applications:
  - name: hetserve
    import_path: hetserve.app:build
    args: {{plan: {path}, time_scale: 0.5}}
"""
    )
    args = config["applications"][0]["args"]
    app = call_user_app_builder_with_args_if_necessary(build, args)
    built = build_app(app, name="hetserve")
    replicas = {d.name: d._deployment_config.num_replicas for d in built.deployments}
    assert replicas == {"L4-tp1": 2, ROUTER_DEPLOYMENT: 1}


def test_a_plan_for_another_cluster_is_refused_naming_what_is_missing(
    ray_driver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(REPO / "cluster_configs" / "paper_mixed.yaml"), "--json"]) == 0
    path = tmp_path / "paper_mixed.plan.json"
    path.write_text(capsys.readouterr().out)
    with pytest.raises(ConfigError, match=r"does not fit the live Ray cluster") as err:
        build({"plan": str(path)})
    assert "resource 'H100-SXM5-80GB': the plan needs 16 units on 2 node(s); the live cluster has 0" in str(err.value)
