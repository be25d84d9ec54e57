"""The local cluster's Ray dashboard (on by default, loopback) answers, and its Serve REST API lists
the app as planned: one deployment per planned configuration plus the router. The app goes in
through Serve's config path (what `hetserve bench`, Serve config files and KubeRay use), and a
router-only update (a new policy as the router's user_config) keeps every instance replica."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
import requests  # noqa: E402
from ray import serve  # noqa: E402

from hetserve.bench.deploy import deploy_app, serve_config  # noqa: E402
from hetserve.cluster import load_cluster  # noqa: E402
from hetserve.planner import search_plan  # noqa: E402
from hetserve.serving.builder import ROUTER_DEPLOYMENT  # noqa: E402
from serving_helpers import require_resources, wait_for_free_resources  # noqa: E402

pytestmark = pytest.mark.ray

APP = "hetserve-dash"
LAPTOP = Path(__file__).resolve().parents[2] / "cluster_configs" / "laptop.yaml"
NEEDS = {"A100-SXM4-80GB": 1, "L4": 2, "T4": 2}


def _get(url: str, timeout_s: float = 60.0) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            resp = requests.get(url, timeout=10)
            if resp.status_code == 200:
                return resp
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(1.0)


def _replicas(dash: str) -> dict[str, set[str]]:
    apps = _get(f"{dash}/api/serve/applications/").json()["applications"]
    deps = apps[APP]["deployments"]
    return {name: {r["replica_id"] for r in d["replicas"] if r["state"] == "RUNNING"} for name, d in deps.items()}


@pytest.fixture(scope="module")
def dash_app(ray_driver, serve_url):
    require_resources(**NEEDS)
    assert ray_driver.dashboard_url, "the local cluster starts the dashboard by default"
    assert ray_driver.dashboard_url.startswith("http://127.0.0.1:")
    wait_for_free_resources(NEEDS)
    args = {"cluster": str(LAPTOP), "time_scale": 0.2, "stats_period_s": 0.5}
    deploy_app(serve_config(APP, args, "hetero", route_prefix=None), timeout_s=180)
    try:
        yield {"dash": ray_driver.dashboard_url, "args": args}
    finally:
        serve.delete(APP, _blocking=True)


def test_dashboard_lists_one_deployment_per_planned_configuration_plus_the_router(dash_app):
    dash = dash_app["dash"]
    assert _get(f"{dash}/api/version").json()["ray_version"] == ray.__version__
    plan = search_plan(load_cluster(LAPTOP))
    planned = {dp.name: dp.num_instances for dp in plan.deployments}
    replicas = _replicas(dash)
    assert set(replicas) == set(planned) | {ROUTER_DEPLOYMENT}
    for name, n in planned.items():
        assert len(replicas[name]) == n, name


def test_router_only_update_keeps_the_instances(dash_app):
    dash = dash_app["dash"]
    before = _replicas(dash)
    deploy_app(serve_config(APP, dash_app["args"], "round_robin", route_prefix=None), timeout_s=120)
    router = serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name=APP)
    assert router.plan.remote().result()["policy"] == "round_robin"
    after = _replicas(dash)
    for name, ids in before.items():
        if name != ROUTER_DEPLOYMENT:
            assert after[name] == ids, f"{name}: instance replicas were restarted by a router-only update"
    out = router.generate.remote({"model": "llama-3.1-8b", "prompt": [1, 2, 3], "max_tokens": 2}).result()
    assert out["usage"]["completion_tokens"] == 2
