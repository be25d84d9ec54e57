"""Session-wide fixtures: the local heterogeneous Ray cluster every Ray test shares.

The laptop cluster (cluster_configs/laptop.yaml: a head plus one Ray node per config node, each
labelled by its accelerator type) starts once per test session, on free ports, and is stopped by
PID at the end of the session, also when tests fail or the run is interrupted.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray 2.60 switches token auth on when ~/.ray/auth_token exists; set before anything imports ray.
os.environ["RAY_AUTH_MODE"] = "disabled"

from hetserve.localcluster import LocalCluster, start_local_cluster, stop_local_cluster  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
LAPTOP_CONFIG = REPO_ROOT / "cluster_configs" / "laptop.yaml"


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The laptop cluster, started once per session.

    Yields a LocalCluster: `.address` (for `ray.init`), `.metrics_export_port` (the head's
    Prometheus port), `.nodes` (config node name -> {accelerator resource: count}), `.node_ids`
    (node name, head included -> Ray node id hex).
    """
    state_dir = tmp_path_factory.mktemp("local_cluster")
    # Ray's socket paths live under its temp dir and must stay short: not under pytest's tmp.
    ray_temp_dir = tempfile.mkdtemp(prefix="hs-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    state_file = state_dir / "local_cluster.json"
    # Backstop for an interpreter exit that skips fixture teardown; a no-op once stopped.
    atexit.register(stop_local_cluster, state_file)
    try:
        cluster = start_local_cluster(LAPTOP_CONFIG, state_dir=state_dir, ray_temp_dir=ray_temp_dir)
        yield cluster
    finally:
        _disconnect_driver()
        stop_local_cluster(state_file)
        if not os.environ.get("HETSERVE_KEEP_RAY_LOGS"):
            shutil.rmtree(ray_temp_dir, ignore_errors=True)


def _disconnect_driver() -> None:
    """Leave the cluster before it goes away: a driver whose raylet dies under it aborts."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
