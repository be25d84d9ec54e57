"""Deploy the app for a benchmark, and switch its router's policy without touching the instances.

The app goes through Serve's declarative config path (`hetserve.app:build` + args, exactly what a
Serve config file or a KubeRay RayService holds): Serve versions a config-deployed app by its
import path and args, so a second deploy that changes only the router deployment's `user_config`
(the policy) or `num_replicas` is a lightweight update of the router replicas alone
(`RouterServer.reconfigure`); the instance replicas, their engines and placements stay.
Applying a config replaces the cluster's other config-deployed apps (Serve's declarative rule;
apps started with `serve.run` are kept): run the deploy mode on a benchmark cluster.
"""

from __future__ import annotations

import time
from typing import Any

from hetserve.config import ConfigError
from hetserve.serving.builder import ROUTER_DEPLOYMENT

__all__ = ["APP_IMPORT_PATH", "deploy_app", "serve_config", "wait_ready"]

APP_IMPORT_PATH = "hetserve.app:build"


def serve_config(
    app_name: str,
    app_args: dict[str, Any],
    policy: str,
    seed: int = 0,
    router_replicas: int | None = None,
    route_prefix: str | None = "/",
) -> dict[str, Any]:
    """One application of a Serve config: the app's args, and the router's policy as user_config."""
    router: dict[str, Any] = {"name": ROUTER_DEPLOYMENT, "user_config": {"policy": policy, "seed": seed}}
    if router_replicas is not None:
        router["num_replicas"] = router_replicas
    app: dict[str, Any] = {
        "name": app_name,
        "import_path": APP_IMPORT_PATH,
        "args": app_args,
        "deployments": [router],
    }
    if route_prefix is not None:
        app["route_prefix"] = route_prefix
    return app


def deploy_app(app: dict[str, Any], timeout_s: float = 300.0) -> None:
    """Apply the config (this driver must be connected to the cluster) and wait until RUNNING."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    client = _get_global_client()
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [app]}))
    wait_ready(app["name"], timeout_s)


def wait_ready(app_name: str, timeout_s: float = 300.0, target: dict[str, Any] | None = None) -> None:
    """Wait until the app and every deployment are RUNNING (and updated: Serve reports UPDATING
    while router replicas are being reconfigured)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)  # let the controller take the new target before reading statuses
    last = ""
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        if app is not None:
            last = str(app.status)
            if app.status == "DEPLOY_FAILED":
                raise ConfigError(f"serve app {app_name!r} failed to deploy: {app.message}")
            if app.status == "RUNNING" and all(d.status == "HEALTHY" for d in app.deployments.values()):
                return
        time.sleep(0.5)
    raise ConfigError(f"serve app {app_name!r} not RUNNING after {timeout_s:.0f} s (last status {last})")
