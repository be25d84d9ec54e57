"""Stopping a local cluster: exactly the processes its state file records, never `ray stop`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hetserve.localcluster.processes import _node_members, _process_table, _stop_nodes
from hetserve.localcluster.state import default_state_file, load_local_cluster


@dataclass(frozen=True)
class StopResult:
    """What `stop_local_cluster` did: the processes the nodes had, the PIDs it sent SIGTERM (a
    raylet takes down its workers itself) and those that needed SIGKILL."""

    found: bool
    stopped: tuple[int, ...] = ()
    terminated: tuple[int, ...] = ()
    killed: tuple[int, ...] = ()
    stop_s: float = 0.0


def stop_local_cluster(state_file: str | Path | None = None, *, grace_s: float = 20.0) -> StopResult:
    """Stop exactly the processes of the cluster recorded in `state_file`, then remove the file.

    SIGTERM every process of the nodes' sessions in `ray stop`'s order (raylets, which take down
    their workers and agents; other daemons; the GCS), wait up to `grace_s`, then SIGKILL
    whatever of those sessions is left. Idempotent: a missing state file means nothing to stop.
    """
    t0 = time.monotonic()
    path = Path(state_file) if state_file else default_state_file()
    cluster = load_local_cluster(path)
    if cluster is None:
        return StopResult(found=False)
    table = _process_table()
    stopped = sorted(p for n in cluster.all_nodes for p in _node_members(n, table))
    terminated, killed = _stop_nodes(list(cluster.all_nodes), grace_s=grace_s)
    path.unlink(missing_ok=True)
    return StopResult(
        found=True,
        stopped=tuple(stopped),
        terminated=tuple(terminated),
        killed=tuple(killed),
        stop_s=round(time.monotonic() - t0, 3),
    )
