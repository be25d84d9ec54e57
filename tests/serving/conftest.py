"""Fixtures of the Serve tests: a driver connected to the session's local Ray cluster, and Serve
with one HTTP proxy on a free port. Helpers live in serving_helpers.py.

The local cluster itself (`local_cluster`: several Ray nodes labelled by accelerator type) comes
from tests/conftest.py and is shared by the whole test session.
"""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_driver(local_cluster):
    """This test process as a Ray driver of the session cluster."""
    if not ray.is_initialized():
        ray.init(address=local_cluster.address, logging_level="ERROR", log_to_driver=False)
    return local_cluster


@pytest.fixture(scope="session")
def serve_url(ray_driver) -> str:
    """Serve's HTTP base URL. One proxy, on the head: every local node shares this host, so a
    proxy per node would fight over the port."""
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": _free_port()})
    from ray.serve.context import _get_global_client

    port = _get_global_client().http_config.port  # Serve may already run (another test package)
    return f"http://127.0.0.1:{port}"
