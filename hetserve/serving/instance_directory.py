"""Process-wide directory of the instance replicas each handle's request router knows.

Kept apart from replica_router.py on purpose: Serve cloudpickles the request-router *module by
value* (RequestRouterConfig), so any state defined there would be copied into each routing thread
instead of shared. Functions imported from here are pickled by reference and so reach this one
module-level table.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReplicaSnapshot", "instance_replicas", "register_router"]

_lock = threading.Lock()
_routers: dict[tuple[str, str], weakref.ReferenceType] = {}


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """One running replica (= one hetserve instance) as this process's handle sees it."""

    instance_id: str  # Serve's ReplicaID.unique_id
    deployment: str
    node_id: str | None
    routing_stats: dict[str, Any] = field(default_factory=dict)


def register_router(app_name: str, deployment: str, router: object) -> None:
    """Called by a request router when Serve builds it for a handle in this process."""
    with _lock:
        _routers[(app_name, deployment)] = weakref.ref(router)


def instance_replicas(app_name: str, deployment: str) -> list[ReplicaSnapshot] | None:
    """The replicas of `deployment` known to this process's handle, sorted by id; None if no
    handle to it has built its request router yet (make one: `handle.options()`)."""
    with _lock:
        ref = _routers.get((app_name, deployment))
    router = ref() if ref is not None else None
    if router is None:
        return None
    replicas = dict(router.curr_replicas)  # atomic copy: the routing thread replaces/pops entries
    return [
        ReplicaSnapshot(rid.unique_id, deployment, r.node_id, dict(r.routing_stats or {}))
        for rid, r in sorted(replicas.items(), key=lambda kv: kv[0].unique_id)
    ]
