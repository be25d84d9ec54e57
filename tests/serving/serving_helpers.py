"""Helpers shared by the Serve tests (a plain module: conftest files are not importable by name)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import pytest
import ray
from ray import serve

from hetserve.serving.instance_directory import instance_replicas


def node_resources() -> dict[str, dict[str, float]]:
    """Ray node id -> its total resources, for alive nodes."""
    return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}


def require_resources(**needed: float) -> None:
    """Skip unless the cluster has at least these totals of accelerator resources."""
    totals: dict[str, float] = {}
    for res in node_resources().values():
        for k, v in res.items():
            totals[k] = totals.get(k, 0.0) + v
    missing = {k: v for k, v in needed.items() if totals.get(k, 0.0) < v}
    if missing:
        pytest.skip(f"session cluster lacks accelerator resources {missing}")


def wait_for_instances(app_name: str, deployment: str, count: int, timeout_s: float = 30.0) -> list:
    """Replicas of `deployment` as this driver's handle sees them, once `count` are known."""
    handle = serve.get_deployment_handle(deployment, app_name=app_name).options()  # builds its router
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snaps = instance_replicas(app_name, deployment) or []
        if len(snaps) == count:
            return snaps
        time.sleep(0.1)
    raise AssertionError(f"{app_name}/{deployment}: {count} replicas not visible after {timeout_s} s")


def wait_for_free_resources(needed: dict[str, float], timeout_s: float = 60.0) -> None:
    """Fail clearly (instead of Serve waiting forever on unplaceable replicas) if something else
    still holds the accelerator resources an app needs."""
    deadline = time.monotonic() + timeout_s
    while True:
        free = ray.available_resources()
        short = {k: v for k, v in needed.items() if free.get(k, 0.0) < v}
        if not short:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"accelerator resources still taken after {timeout_s} s: need {short}, free {free}")
        time.sleep(0.5)


@contextmanager
def deployed(app, name: str, route_prefix: str | None, needs: dict[str, float]) -> Iterator:
    """Run `app` under `name` for the duration of the block, then delete it (frees its resources
    for the next module's app). `needs`: the accelerator resources its instances take."""
    wait_for_free_resources(needs)
    handle = serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
    try:
        yield handle
    finally:
        serve.delete(name, _blocking=True)
