"""The local cluster's record: its nodes, and the JSON state file that outlives `cluster up`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hetserve.config import ConfigError
from hetserve.localcluster.processes import _node_members, _process_table, _rss_bytes

STATE_VERSION = 1


def default_state_file() -> Path:
    return Path.home() / ".hetserve" / "local_cluster.json"


@dataclass(frozen=True)
class LocalNode:
    """One local Ray node and what it was started with.

    `pid` is the PID of the `ray start` that created the node, a session leader; it exits once the
    node is up, but its PID stays the session id of every process of the node (raylet, GCS,
    agents, and the workers and Serve replicas the raylet forks later). `start_ticks` is that
    leader's start time (/proc/<pid>/stat field 22) so a later process reusing the PID is never
    mistaken for it. `pids` is the node's processes right after start (workers come and go).
    """

    name: str
    role: str  # "head" | "worker"
    accelerator: str | None
    resources: dict[str, float]
    num_cpus: int
    labels: dict[str, str]
    pid: int
    start_ticks: int | None
    metrics_export_port: int
    dashboard_agent_listen_port: int
    log_path: str
    ray_temp_dir: str | None = None
    node_id: str | None = None
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class LocalCluster:
    """A started local cluster, as recorded in its JSON state file.

    `ray_temp_dir` is the root of the nodes' own Ray temp dirs (each node's is in `LocalNode`).
    """

    name: str
    address: str
    head: LocalNode
    workers: tuple[LocalNode, ...]
    state_file: str
    ray_temp_dir: str | None
    dashboard_url: str | None
    startup_s: float
    started_at: float = field(default_factory=time.time)
    auth_token_path: str | None = None  # Ray token auth on: the token file (0600); None: auth off

    def client_env(self) -> dict[str, str]:
        """Environment a Ray client (driver, `serve run`, the dashboard's CLI) needs for this
        cluster: its address, and Ray's token auth settings when the cluster was started with it."""
        env = {"RAY_ADDRESS": self.address}
        if self.auth_token_path:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=self.auth_token_path)
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        return env

    @property
    def metrics_export_port(self) -> int:
        """The head node's Prometheus port."""
        return self.head.metrics_export_port

    @property
    def all_nodes(self) -> tuple[LocalNode, ...]:
        return (self.head, *self.workers)

    @property
    def nodes(self) -> dict[str, dict[str, float]]:
        """Config node name -> its custom resources (the head carries none and is not listed)."""
        return {n.name: dict(n.resources) for n in self.workers}

    @property
    def node_ids(self) -> dict[str, str | None]:
        """Node name (head included) -> Ray node id hex, as `ray.nodes()` reports it."""
        return {n.name: n.node_id for n in self.all_nodes}

    def alive_pids(self) -> dict[str, list[int]]:
        """Node name -> PIDs of that node's processes now running (empty when the node is gone)."""
        table = _process_table()
        return {n.name: sorted(_node_members(n, table)) for n in self.all_nodes}

    def rss_bytes(self) -> dict[str, int]:
        """Node name -> resident memory of all its processes now (0 where unreadable)."""
        out: dict[str, int] = {}
        for name, pids in self.alive_pids().items():
            out[name] = sum(_rss_bytes(pid) for pid in pids)
        return out

    def is_alive(self) -> bool:
        return any(self.alive_pids().values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict) -> LocalCluster:
        if data.get("version") != STATE_VERSION:
            raise ConfigError(f"local cluster state: version {data.get('version')!r} is not {STATE_VERSION}")

        def node(d: dict) -> LocalNode:
            return LocalNode(**{**d, "pids": tuple(d.get("pids", ()))})

        return cls(
            name=data["name"],
            address=data["address"],
            head=node(data["head"]),
            workers=tuple(node(w) for w in data["workers"]),
            state_file=data["state_file"],
            ray_temp_dir=data.get("ray_temp_dir"),
            dashboard_url=data.get("dashboard_url"),
            startup_s=data["startup_s"],
            started_at=data["started_at"],
            auth_token_path=data.get("auth_token_path"),
        )


def load_local_cluster(state_file: str | Path | None = None) -> LocalCluster | None:
    """The cluster recorded in `state_file` (default ~/.hetserve/local_cluster.json), or None."""
    path = Path(state_file) if state_file else default_state_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read local cluster state: {exc}") from None
    return LocalCluster.from_json(data)


def write_local_cluster(cluster: LocalCluster, state_file: Path) -> None:
    """Write `cluster` to `state_file` atomically (a reader never sees half a file)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
    tmp.replace(state_file)
