"""A heterogeneous Ray cluster on one machine: one local Ray node per cluster-config node.

Each node is started by `ray start` in a session of its own, labelled with its accelerator type as
a Ray custom resource (`catalog.ray_resource_name`) and carrying no GPU. Stopping kills exactly
the processes of those sessions, by PID: never `ray stop`, which would kill every Ray on the host.
Drives the `ray` executable through subprocess; does not import ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hetserve.catalog import ray_resource_name
from hetserve.cluster import Cluster, load_cluster
from hetserve.config import ConfigError

__all__ = [
    "MAX_LOCAL_NODES",
    "HEAD_NODE_NAME",
    "LocalNode",
    "LocalCluster",
    "StopResult",
    "default_state_file",
    "start_local_cluster",
    "stop_local_cluster",
    "load_local_cluster",
]

# Each local worker node costs ~230 MiB of RSS (raylet + two agents), the head ~650 MiB, before any
# replica; above this a "local" cluster is a mistake (e.g. cluster_configs/large.yaml), not a demo.
MAX_LOCAL_NODES = 8
HEAD_NODE_NAME = "head"
LABEL_NODE = "hetserve.io/node"
LABEL_ACCELERATOR = "hetserve.io/accelerator"
LABEL_ROLE = "hetserve.io/role"
STATE_VERSION = 1
DEFAULT_OBJECT_STORE_BYTES = 200 * 1024**2
# Ray's unix sockets live at <temp_dir>/session_<39 chars>/sockets/plasma_store; the kernel caps
# socket paths at 107 bytes.
MAX_TEMP_DIR_CHARS = 40
_STARTED_MARKER = "Ray runtime started."
_ADDRESS_RE = re.compile(r"ray start --address='([^']+)'")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)$")


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
        )


@dataclass(frozen=True)
class StopResult:
    """What `stop_local_cluster` did: the processes the nodes had, the PIDs it sent SIGTERM (a
    raylet takes down its workers itself) and those that needed SIGKILL."""

    found: bool
    stopped: tuple[int, ...] = ()
    terminated: tuple[int, ...] = ()
    killed: tuple[int, ...] = ()
    stop_s: float = 0.0


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


def start_local_cluster(
    cluster: Cluster | str | Path,
    *,
    state_dir: str | Path | None = None,
    state_file: str | Path | None = None,
    head_num_cpus: int = 4,
    worker_num_cpus: int | None = None,
    metrics_export_port: int | None = None,
    dashboard: bool = False,
    dashboard_port: int | None = None,
    port: int | None = None,
    ray_temp_dir: str | Path | None = None,
    object_store_memory_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
    timeout_s: float = 120.0,
    max_nodes: int = MAX_LOCAL_NODES,
) -> LocalCluster:
    """Start a head node and one worker node per cluster node; record them in a state file.

    The head carries no accelerator resource (routers, the Serve controller and proxies go there);
    each worker carries `{ray_resource_name(accelerator): count}`, `num_gpus=0` and the labels
    `hetserve.io/node`, `hetserve.io/accelerator`. Ports left as None are picked free. Logical
    CPUs per worker: the node's `overrides.num_cpus`, else `worker_num_cpus`, else
    max(4, 2·count), enough for one replica per accelerator plus Serve's own actors.

    Args:
        state_dir: where the state file (`local_cluster.json`) and the nodes' logs (`logs/`) go;
            default ~/.hetserve.
        state_file: the state file itself, overriding state_dir's; logs go next to it.
        ray_temp_dir: root of the nodes' Ray temp dirs (`head/`, `w0/`, `w1/` ...: one per node,
            so nodes can start together without racing for socket and log names). None: the
            head keeps Ray's default (/tmp/ray, so `RAY_ADDRESS=auto` and `ray status` find it)
            and workers go under /tmp/hetserve-<uid>/<gcs port>/. Each node's dir is at most
            MAX_TEMP_DIR_CHARS long (unix socket paths are capped).

    Raises:
        ConfigError: too many nodes, a recorded cluster is still running, bad names, or a node
            failed to start (everything started so far is stopped first; the message carries the
            tail of that node's log).
    """
    t0 = time.monotonic()
    resolved = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
    if len(resolved.nodes) > max_nodes:
        raise ConfigError(
            f"cluster {resolved.name!r} has {len(resolved.nodes)} nodes; a local cluster runs at most "
            f"{max_nodes} Ray nodes on one machine (each costs ~230 MiB). Use `hetserve simulate` for "
            "large clusters, or a real Ray cluster"
        )
    if state_file is not None:
        state_file = Path(state_file)
        state_root = state_file.parent
    else:
        state_root = Path(state_dir) if state_dir else default_state_file().parent
        state_file = state_root / "local_cluster.json"
    previous = load_local_cluster(state_file)
    if previous is not None and previous.is_alive():
        raise ConfigError(
            f"a local cluster recorded in {state_file} is still running (address {previous.address}); "
            "run `hetserve cluster down` first"
        )
    logs_dir = state_root / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    for n in resolved.nodes:
        if n.name == HEAD_NODE_NAME:
            raise ConfigError(f"nodes: the name {HEAD_NODE_NAME!r} is reserved for the local head node")
        _check_label_value("nodes[].name", n.name)
        _check_label_value("nodes[].accelerator", n.accelerator)

    ray_exe = _ray_executable()
    env = _child_env()
    ports = _PortPicker()
    gcs_port = port or ports.pick()
    if ray_temp_dir is not None:
        temp_root = Path(ray_temp_dir).absolute()
        head_temp: Path | None = temp_root / "head"
    else:
        temp_root = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / f"hetserve-{os.getuid()}" / str(gcs_port)
        head_temp = None
    worker_temps = [temp_root / f"w{i}" for i in range(len(resolved.nodes))]
    for d in [head_temp, *worker_temps]:
        if d is not None and len(str(d)) > MAX_TEMP_DIR_CHARS:
            raise ConfigError(
                f"ray_temp_dir: {str(d)!r} is {len(str(d))} characters; at most {MAX_TEMP_DIR_CHARS} "
                "(Ray's unix socket paths under it must stay below 108 bytes)"
            )
    head_metrics = metrics_export_port or ports.pick()
    dash_port = (dashboard_port or ports.pick()) if dashboard else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # No --block: a blocking `ray start` would stay resident (~140 MiB per node) only to watch its
    # children; the session id already tells us which processes are the node's.
    common = [
        "--num-gpus=0",
        f"--object-store-memory={object_store_memory_bytes}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
        "--log-style=record",
        "--log-color=false",
    ]

    started: list[tuple[LocalNode, subprocess.Popen]] = []
    try:
        head_labels = {LABEL_NODE: HEAD_NODE_NAME, LABEL_ROLE: "head"}
        head_agent_port = ports.pick()
        head_args = [
            "--head",
            f"--port={gcs_port}",
            f"--num-cpus={head_num_cpus}",
            "--resources={}",
            f"--metrics-export-port={head_metrics}",
            f"--dashboard-agent-listen-port={head_agent_port}",
            f"--ray-client-server-port={ports.pick()}",
            f"--labels={_labels_arg(head_labels)}",
        ]
        if dashboard:
            head_args += ["--include-dashboard=true", f"--dashboard-port={dash_port}"]
        else:
            head_args += ["--include-dashboard=false"]
        if head_temp is not None:
            head_temp.mkdir(parents=True, exist_ok=True)
            head_args.append(f"--temp-dir={head_temp}")
        head_log = logs_dir / f"{stamp}-{HEAD_NODE_NAME}.log"
        proc = _spawn([ray_exe, "start", *head_args, *common], head_log, env)
        head = LocalNode(
            name=HEAD_NODE_NAME,
            role="head",
            accelerator=None,
            resources={},
            num_cpus=head_num_cpus,
            labels=head_labels,
            pid=proc.pid,
            start_ticks=_start_ticks(proc.pid),
            metrics_export_port=head_metrics,
            dashboard_agent_listen_port=head_agent_port,
            log_path=str(head_log),
            ray_temp_dir=str(head_temp) if head_temp else None,
        )
        started.append((head, proc))
        _wait_started(head, proc, time.monotonic() + timeout_s)
        address = _head_address(head_log)

        # All workers at once, each in its own Ray temp dir: nodes sharing one race for the same
        # socket and log names (raylet.1 twice: "bind: Address already in use").
        workers: list[tuple[LocalNode, subprocess.Popen]] = []
        for n, temp in zip(resolved.nodes, worker_temps):
            temp.mkdir(parents=True, exist_ok=True)
            resources = {ray_resource_name(n.accelerator): float(n.count)}
            cpus = n.num_cpus or worker_num_cpus or max(4, 2 * n.count)
            labels = {LABEL_NODE: n.name, LABEL_ACCELERATOR: n.accelerator, LABEL_ROLE: "worker"}
            metrics_port, agent_port = ports.pick(), ports.pick()
            args = [
                f"--address={address}",
                f"--num-cpus={cpus}",
                f"--resources={json.dumps(resources)}",
                f"--metrics-export-port={metrics_port}",
                f"--dashboard-agent-listen-port={agent_port}",
                # One log monitor per host is enough (Ray's own multi-node-on-one-host advice).
                "--include-log-monitor=false",
                f"--labels={_labels_arg(labels)}",
                f"--temp-dir={temp}",
            ]
            log = logs_dir / f"{stamp}-{n.name}.log"
            proc = _spawn([ray_exe, "start", *args, *common], log, env)
            node = LocalNode(
                name=n.name,
                role="worker",
                accelerator=n.accelerator,
                resources=resources,
                num_cpus=cpus,
                labels=labels,
                pid=proc.pid,
                start_ticks=_start_ticks(proc.pid),
                metrics_export_port=metrics_port,
                dashboard_agent_listen_port=agent_port,
                log_path=str(log),
                ray_temp_dir=str(temp),
            )
            started.append((node, proc))
            workers.append((node, proc))
        deadline = time.monotonic() + timeout_s
        for node, proc in workers:
            _wait_started(node, proc, deadline)
    except BaseException:
        _stop_nodes([n for n, _ in started], grace_s=10.0)
        for _, p in started:
            p.wait()  # SIGKILLed by _stop_nodes if still running; reap it
        raise

    table = _process_table()
    nodes = [
        LocalNode(**{**asdict(n), "node_id": _node_id(n, table), "pids": tuple(sorted(_node_members(n, table)))})
        for n, _ in started
    ]
    result = LocalCluster(
        name=resolved.name,
        address=address,
        head=nodes[0],
        workers=tuple(nodes[1:]),
        state_file=str(state_file.absolute()),
        ray_temp_dir=str(temp_root),
        dashboard_url=f"http://127.0.0.1:{dash_port}" if dashboard else None,
        startup_s=round(time.monotonic() - t0, 3),
    )
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    tmp.replace(state_file)
    return result


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


# --- starting -----------------------------------------------------------------------------------


def _ray_executable() -> str:
    """The `ray` script of this interpreter's environment, so nodes run the same Ray as we do."""
    candidate = Path(sys.executable).parent / "ray"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise ConfigError(f"no `ray` executable next to {sys.executable} or on PATH; install ray[serve]")
    return found


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Ray 2.60 switches token auth on when ~/.ray/auth_token exists; a local cluster needs none.
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # On SIGTERM a node would wait up to 30 s for Serve to drain; the whole cluster is going away.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    env["PYTHONUNBUFFERED"] = "1"
    # A RAY_ADDRESS from the caller's shell must not redirect `ray start --head`.
    env.pop("RAY_ADDRESS", None)
    return env


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    # start_new_session: the node outlives `hetserve cluster up`, takes no terminal signals, and
    # its session id (= its PID) marks every process it and its raylet start.
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return proc


def _wait_started(node: LocalNode, proc: subprocess.Popen, deadline: float) -> None:
    """Wait for `ray start` to exit: 0 once the node has registered with the GCS."""
    try:
        code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"local node {node.name!r} did not start in time; log {node.log_path}:\n"
            f"{_tail(Path(node.log_path).read_text(errors='replace'))}"
        ) from None
    text = Path(node.log_path).read_text(errors="replace")
    if code != 0 or _STARTED_MARKER not in text:
        raise ConfigError(
            f"local node {node.name!r} failed to start (exit code {code}); log {node.log_path}:\n{_tail(text)}"
        )


def _head_address(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    match = _ADDRESS_RE.search(text)
    if match is None:
        raise ConfigError(f"cannot find the head's address in {log_path}:\n{_tail(text)}")
    return match.group(1)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _labels_arg(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _check_label_value(what: str, value: str) -> None:
    if not _LABEL_VALUE_RE.match(value):
        raise ConfigError(
            f"{what}: {value!r} cannot label a Ray node (at most 63 characters, alphanumeric at both ends, "
            "only letters, digits, '-', '_' and '.' between)"
        )


class _PortPicker:
    """Free TCP ports, distinct within one cluster (the OS may hand out the same one twice)."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def pick(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise ConfigError("cannot find a free TCP port")


# --- processes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int | None  # None where the platform gives no session id (non-Linux fallback)
    start_ticks: int | None


def _process_table() -> dict[int, _Proc]:
    """Every live (non-zombie) process on the host."""
    proc_root = Path("/proc")
    table: dict[int, _Proc] = {}
    if (proc_root / "self" / "stat").exists():
        for entry in proc_root.iterdir():
            if not entry.name.isdigit():
                continue
            parsed = _read_stat(int(entry.name))
            if parsed is not None:
                table[parsed.pid] = parsed
        return table
    # Not Linux (macOS): ps gives no session id, so membership falls back to the process group
    # and descendants of the leader.
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not parts[3].startswith("Z"):
            pid, ppid, pgid = int(parts[0]), int(parts[1]), int(parts[2])
            table[pid] = _Proc(pid, ppid, pgid, None, None)
    return table


def _read_stat(pid: int) -> _Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None
    return _Proc(pid=pid, ppid=int(rest[1]), pgid=int(rest[2]), sid=int(rest[3]), start_ticks=int(rest[19]))


def _start_ticks(pid: int) -> int | None:
    parsed = _read_stat(pid)
    return parsed.start_ticks if parsed else None


def _node_members(node: LocalNode, table: dict[int, _Proc]) -> set[int]:
    """PIDs of the processes that belong to `node`.

    Linux never hands out a PID while a process still uses it as its session id, so: if a process
    now holds the leader's PID with another start time, the node's session is gone entirely;
    otherwise every process in session `node.pid` is the node's (a raylet's workers and Serve
    replicas inherit the session, though each gets its own process group).
    """
    leader = table.get(node.pid)
    if leader is not None and node.start_ticks is not None and leader.start_ticks is not None:
        if leader.start_ticks != node.start_ticks:
            return set()
    if any(p.sid is not None for p in table.values()):
        return {p.pid for p in table.values() if p.sid == node.pid}
    members = {p.pid for p in table.values() if p.pgid == node.pid}
    if leader is not None:
        frontier = [node.pid]
        members.add(node.pid)
        while frontier:
            parent = frontier.pop()
            for p in table.values():
                if p.ppid == parent and p.pid not in members:
                    members.add(p.pid)
                    frontier.append(p.pid)
    return members


def _node_id(node: LocalNode, table: dict[int, _Proc]) -> str | None:
    """The Ray node id, read from the node's raylet command line (`--node_id=<hex>`)."""
    for pid in _node_members(node, table):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"/raylet"):
            for arg in args:
                if arg.startswith(b"--node_id="):
                    return arg.split(b"=", 1)[1].decode()
    return None


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _signal(pids: Iterable[int], sig: signal.Signals) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass
    return sent


def _executable_name(pid: int) -> str:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return ""
    return os.path.basename(argv0.decode(errors="replace"))


def _stop_order(pid: int) -> int:
    """0 raylets, 1 everything else, 2 GCS: `ray stop`'s order, so none waits on a dead peer."""
    name = _executable_name(pid)
    return 0 if name == "raylet" else 2 if name == "gcs_server" else 1


def _stop_nodes(nodes: list[LocalNode], *, grace_s: float) -> tuple[list[int], list[int]]:
    """SIGTERM the nodes' processes in `ray stop`'s order, then SIGKILL what outlives `grace_s`.

    Raylets go first (each takes down its workers and agents), then the other daemons, and the
    GCS last: a GCS stopped early leaves the rest retrying to reach it until SIGKILL.
    """
    terminated: list[int] = []
    deadline = time.monotonic() + grace_s
    for stage in (0, 1, 2):
        table = _process_table()
        pids = sorted(p for n in nodes for p in _node_members(n, table) if _stop_order(p) == stage)
        terminated += _signal(pids, signal.SIGTERM)
        stage_deadline = min(deadline, time.monotonic() + grace_s / 2)
        while time.monotonic() < stage_deadline and any(_is_running(p) for p in pids):
            time.sleep(0.05)
    while time.monotonic() < deadline:
        table = _process_table()
        if not any(_node_members(n, table) for n in nodes):
            return terminated, []
        time.sleep(0.1)
    table = _process_table()
    killed: list[int] = []
    for n in nodes:
        killed += _signal(sorted(_node_members(n, table)), signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not any(_node_members(n, _process_table()) for n in nodes):
            break
        time.sleep(0.1)
    return terminated, killed


def _is_running(pid: int) -> bool:
    return _read_stat(pid) is not None if Path("/proc/self/stat").exists() else pid in _process_table()
