"""Starting a local cluster: one `ray start` per node, each in a session and Ray temp dir of its own."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from hetserve.catalog import ray_resource_name
from hetserve.cluster import Cluster, load_cluster
from hetserve.config import ConfigError
from hetserve.errors import RuntimeFailure
from hetserve.localcluster.processes import (
    _child_env,
    _node_id,
    _node_members,
    _process_table,
    _ray_executable,
    _spawn,
    _start_ticks,
    _stop_nodes,
)
from hetserve.localcluster.state import (
    LocalCluster,
    LocalNode,
    default_state_file,
    load_local_cluster,
    write_local_cluster,
)
from hetserve.records import Node

# Each local worker node costs ~230 MiB of RSS (raylet + two agents), the head ~650 MiB, before any
# replica; above this a "local" cluster is a mistake (e.g. cluster_configs/large.yaml), not a demo.
MAX_LOCAL_NODES = 8
HEAD_NODE_NAME = "head"
LABEL_NODE = "hetserve.io/node"
LABEL_ACCELERATOR = "hetserve.io/accelerator"
LABEL_ROLE = "hetserve.io/role"
DEFAULT_OBJECT_STORE_BYTES = 200 * 1024**2
# Ray's unix sockets live at <temp_dir>/session_<39 chars>/sockets/plasma_store; the kernel caps
# socket paths at 107 bytes.
MAX_TEMP_DIR_CHARS = 40
_STARTED_MARKER = "Ray runtime started."
_ADDRESS_RE = re.compile(r"ray start --address='([^']+)'")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)$")


# Ray gives each node 30 s to register with the GCS and fails `ray start` otherwise; on a loaded
# machine (many Ray nodes on few cores) that happens now and then, and a second try succeeds.
START_ATTEMPTS = 3
_RETRYABLE = ("timed out during startup", "Failed to start the dashboard")


def start_local_cluster(cluster: Cluster | str | Path, **kwargs) -> LocalCluster:
    """`_start_once` (see there), again up to START_ATTEMPTS times when Ray timed out starting a
    node (everything the failed attempt started is stopped first). Other failures raise at once."""
    for attempt in range(START_ATTEMPTS):
        try:
            return _start_once(cluster, **kwargs)
        except RuntimeFailure as exc:
            if not any(r in str(exc) for r in _RETRYABLE) or attempt == START_ATTEMPTS - 1:
                raise
            time.sleep(5.0)
    raise AssertionError("unreachable")


def _start_once(
    cluster: Cluster | str | Path,
    *,
    state_dir: str | Path | None = None,
    state_file: str | Path | None = None,
    head_num_cpus: int = 4,
    worker_num_cpus: int | None = None,
    metrics_export_port: int | None = None,
    dashboard: bool = True,
    dashboard_port: int | None = None,
    dashboard_host: str = "127.0.0.1",
    port: int | None = None,
    ray_temp_dir: str | Path | None = None,
    object_store_memory_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
    timeout_s: float = 120.0,
    max_nodes: int = MAX_LOCAL_NODES,
    auth: bool = False,
) -> LocalCluster:
    """Start a head node and one worker node per cluster node; record them in a state file.

    The head carries no accelerator resource (routers, the Serve controller and proxies go there);
    each worker carries `{ray_resource_name(accelerator): count}`, `num_gpus=0` and the labels
    `hetserve.io/node`, `hetserve.io/accelerator`. Ports left as None are picked free. Logical
    CPUs per worker: the node's `overrides.num_cpus`, else `worker_num_cpus`, else
    max(4, 2·count), enough for one replica per accelerator plus Serve's own actors.
    The Ray dashboard (and its Serve REST API) starts on the head by default, on `dashboard_host`
    (loopback: reach it from elsewhere through an SSH tunnel, not an open port).

    `auth=True` locks the Ray ports with Ray's token authentication: Ray 2.60 cannot bind its
    GCS, raylets and workers to the loopback address (`ray start` rewrites 127.0.0.1 to the host's
    routable address, and they listen on every interface), so on a shared host anyone who can
    reach a port could otherwise submit code. A fresh 256-bit token goes to
    `<state dir>/ray_auth_token` (mode 0600); every node gets it, and clients get it from
    `LocalCluster.client_env()` (`hetserve cluster up` prints it). `hetserve cluster up` turns
    this on by default; programmatic callers (tests, benchmarks) opt in.

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
        ConfigError: bad input: too many nodes, bad names, a too-long temp dir.
        RuntimeFailure: a recorded cluster is still running, or a node failed to start
            (everything started so far is stopped first; the message carries the tail of that
            node's log).
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
        raise RuntimeFailure(
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
    token_path = _write_auth_token(state_root / "ray_auth_token") if auth else None
    if token_path is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
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
        head, proc = _spawn_head(
            ray_exe,
            env,
            ports,
            common,
            gcs_port=gcs_port,
            num_cpus=head_num_cpus,
            metrics_port=head_metrics,
            dashboard=(dashboard_host, dash_port) if dashboard and dash_port is not None else None,
            temp_dir=head_temp,
            log=logs_dir / f"{stamp}-{HEAD_NODE_NAME}.log",
        )
        started.append((head, proc))
        _wait_started(head, proc, time.monotonic() + timeout_s)
        address = _head_address(Path(head.log_path))

        # All workers at once, each in its own Ray temp dir: nodes sharing one race for the same
        # socket and log names (raylet.1 twice: "bind: Address already in use").
        workers: list[tuple[LocalNode, subprocess.Popen]] = []
        for n, temp in zip(resolved.nodes, worker_temps, strict=True):
            node, proc = _spawn_worker(
                ray_exe,
                env,
                ports,
                common,
                n,
                address=address,
                num_cpus=n.num_cpus or worker_num_cpus or max(4, 2 * n.count),
                temp_dir=temp,
                log=logs_dir / f"{stamp}-{n.name}.log",
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
        dashboard_url=f"http://{dashboard_host}:{dash_port}" if dashboard else None,
        startup_s=round(time.monotonic() - t0, 3),
        auth_token_path=str(token_path) if token_path is not None else None,
    )
    write_local_cluster(result, state_file)
    return result


def _write_auth_token(path: Path) -> Path:
    """A fresh token for this cluster, readable by its owner only (created 0600, never widened)."""
    path = path.absolute()
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _spawn_head(
    ray_exe: str,
    env: dict[str, str],
    ports: _PortPicker,
    common: list[str],
    *,
    gcs_port: int,
    num_cpus: int,
    metrics_port: int,
    dashboard: tuple[str, int] | None,
    temp_dir: Path | None,
    log: Path,
) -> tuple[LocalNode, subprocess.Popen]:
    """`ray start --head` without accelerator resources; the dashboard on (host, port) if given."""
    labels = {LABEL_NODE: HEAD_NODE_NAME, LABEL_ROLE: "head"}
    agent_port = ports.pick()
    args = [
        "--head",
        f"--port={gcs_port}",
        f"--num-cpus={num_cpus}",
        "--resources={}",
        f"--metrics-export-port={metrics_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--ray-client-server-port={ports.pick()}",
        f"--labels={_labels_arg(labels)}",
    ]
    if dashboard is not None:
        host, dash_port = dashboard
        args += ["--include-dashboard=true", f"--dashboard-host={host}", f"--dashboard-port={dash_port}"]
    else:
        args += ["--include-dashboard=false"]
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        args.append(f"--temp-dir={temp_dir}")
    proc = _spawn([ray_exe, "start", *args, *common], log, env)
    node = LocalNode(
        name=HEAD_NODE_NAME,
        role="head",
        accelerator=None,
        resources={},
        num_cpus=num_cpus,
        labels=labels,
        pid=proc.pid,
        start_ticks=_start_ticks(proc.pid),
        metrics_export_port=metrics_port,
        dashboard_agent_listen_port=agent_port,
        log_path=str(log),
        ray_temp_dir=str(temp_dir) if temp_dir else None,
    )
    return node, proc


def _spawn_worker(
    ray_exe: str,
    env: dict[str, str],
    ports: _PortPicker,
    common: list[str],
    n: Node,
    *,
    address: str,
    num_cpus: int,
    temp_dir: Path,
    log: Path,
) -> tuple[LocalNode, subprocess.Popen]:
    """`ray start --address` for config node `n`: its accelerator type as a custom resource (one
    unit per device) and its labels, in a Ray temp dir of its own."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    resources = {ray_resource_name(n.accelerator): float(n.count)}
    labels = {LABEL_NODE: n.name, LABEL_ACCELERATOR: n.accelerator, LABEL_ROLE: "worker"}
    metrics_port, agent_port = ports.pick(), ports.pick()
    args = [
        f"--address={address}",
        f"--num-cpus={num_cpus}",
        f"--resources={json.dumps(resources)}",
        f"--metrics-export-port={metrics_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        # One log monitor per host is enough (Ray's own multi-node-on-one-host advice).
        "--include-log-monitor=false",
        f"--labels={_labels_arg(labels)}",
        f"--temp-dir={temp_dir}",
    ]
    proc = _spawn([ray_exe, "start", *args, *common], log, env)
    node = LocalNode(
        name=n.name,
        role="worker",
        accelerator=n.accelerator,
        resources=resources,
        num_cpus=num_cpus,
        labels=labels,
        pid=proc.pid,
        start_ticks=_start_ticks(proc.pid),
        metrics_export_port=metrics_port,
        dashboard_agent_listen_port=agent_port,
        log_path=str(log),
        ray_temp_dir=str(temp_dir),
    )
    return node, proc


def _wait_started(node: LocalNode, proc: subprocess.Popen, deadline: float) -> None:
    """Wait for `ray start` to exit: 0 once the node has registered with the GCS."""
    try:
        code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(
            f"local node {node.name!r} did not start in time; log {node.log_path}:\n"
            f"{_tail(Path(node.log_path).read_text(errors='replace'))}"
        ) from None
    text = Path(node.log_path).read_text(errors="replace")
    if code != 0 or _STARTED_MARKER not in text:
        raise RuntimeFailure(
            f"local node {node.name!r} failed to start (exit code {code}); log {node.log_path}:\n{_tail(text)}"
        )


def _head_address(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    match = _ADDRESS_RE.search(text)
    if match is None:
        raise RuntimeFailure(f"cannot find the head's address in {log_path}:\n{_tail(text)}")
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
        raise RuntimeFailure("cannot find a free TCP port")
