"""`hetserve cluster up|down|status|env`: a local emulated heterogeneous Ray cluster on this machine.

A thin shell over hetserve.localcluster; no ray import.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from hetserve.localcluster import (
    MAX_LOCAL_NODES,
    LocalCluster,
    default_state_file,
    load_local_cluster,
    start_local_cluster,
    stop_local_cluster,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="start/stop a local heterogeneous Ray cluster (one Ray node per config node)",
        description=(
            "Start one local Ray node per node of a cluster config, each carrying its accelerator type "
            "as a Ray custom resource and no GPU (emulated engines), plus a head node. "
            f"At most {MAX_LOCAL_NODES} nodes. `down` stops exactly the processes `up` started."
        ),
    )
    sub = parser.add_subparsers(dest="cluster_command", required=True)
    state_help = f"state file recording the started nodes (default {default_state_file()})"

    up = sub.add_parser("up", help="start the nodes of CLUSTER.yaml and print the address")
    up.add_argument("cluster", help="cluster config YAML (e.g. cluster_configs/laptop.yaml)")
    up.add_argument("--state-file", type=Path, default=None, help=state_help)
    up.add_argument("--head-num-cpus", type=int, default=4, help="logical CPUs of the head node")
    up.add_argument(
        "--worker-num-cpus", type=int, default=None, help="logical CPUs per worker node (default max(4, 2*count))"
    )
    up.add_argument("--port", type=int, default=None, help="GCS port of the head (default: a free one)")
    up.add_argument(
        "--metrics-export-port", type=int, default=None, help="Prometheus port of the head (default: a free one)"
    )
    up.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the Ray dashboard on the head, on loopback (default; --no-dashboard saves ~150 MiB)",
    )
    up.add_argument("--dashboard-port", type=int, default=None, help="dashboard port (default: a free one)")
    up.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard bind address (default loopback only)")
    up.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lock the Ray ports with Ray's token auth (default; Ray 2.60 cannot bind them to loopback). "
        'Clients take the token from `eval "$(hetserve cluster env)"`; --no-auth: open ports, no token',
    )
    up.add_argument("--json", action="store_true", help="print the recorded state as JSON")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop exactly the processes `up` started (never `ray stop`)")
    down.add_argument("--state-file", type=Path, default=None, help=state_help)
    down.add_argument("--grace-s", type=float, default=20.0, help="seconds between SIGTERM and SIGKILL")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="recorded nodes, their live PIDs, memory and resources")
    status.add_argument("--state-file", type=Path, default=None, help=state_help)
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.set_defaults(func=_status)

    env = sub.add_parser(
        "env", help='`export` lines a Ray client needs for the cluster: eval "$(hetserve cluster env)"'
    )
    env.add_argument("--state-file", type=Path, default=None, help=state_help)
    env.set_defaults(func=_env)


def _up(args: argparse.Namespace) -> int:
    cluster = start_local_cluster(
        args.cluster,
        state_file=args.state_file,
        head_num_cpus=args.head_num_cpus,
        worker_num_cpus=args.worker_num_cpus,
        port=args.port,
        metrics_export_port=args.metrics_export_port,
        dashboard=args.dashboard,
        dashboard_port=args.dashboard_port,
        dashboard_host=args.dashboard_host,
        auth=args.auth,
    )
    if args.json:
        print(json.dumps(cluster.to_json(), indent=2))
        return 0
    down = "hetserve cluster down" + (f" --state-file {args.state_file}" if args.state_file else "")
    print(f"local cluster {cluster.name!r} up in {cluster.startup_s:.1f} s at {cluster.address}")
    print(f"  head          metrics :{cluster.metrics_export_port}")
    for node in cluster.workers:
        res = ", ".join(f"{k}={v:g}" for k, v in node.resources.items())
        print(f"  {node.name:<13} {res}  CPU={node.num_cpus}  metrics :{node.metrics_export_port}")
    if cluster.dashboard_url:
        print(f"Ray dashboard: {cluster.dashboard_url}  (Serve tab: deployments and replicas; Metrics tab)")
    print(f"state: {cluster.state_file}")
    if cluster.auth_token_path:
        print(f"Ray token auth: on (token file {cluster.auth_token_path}; the dashboard asks for it once)")
    else:
        print("Ray token auth: OFF (--no-auth): anyone who reaches this host's Ray ports can run code on it")
    print("serve the app on it (one HTTP proxy, on the head: every node shares this host's port):")
    for line in _export_lines(cluster.client_env()):
        print(f"  {line}")
    print("  serve start --proxy-location HeadOnly && serve run hetserve.app:build")
    print(f"stop it: {down}")
    return 0


def _export_lines(env: dict[str, str]) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def _recorded(args: argparse.Namespace, prefix: str = "") -> tuple[Path, LocalCluster | None]:
    """The state file `args` names (or the default) and the cluster it records; says so if none."""
    path = args.state_file or default_state_file()
    cluster = load_local_cluster(path)
    if cluster is None:
        print(f"{prefix}no local cluster recorded in {path}")
    return path, cluster


def _env(args: argparse.Namespace) -> int:
    _, cluster = _recorded(args, prefix="# ")
    if cluster is None:
        return 1
    print("\n".join(_export_lines(cluster.client_env())))
    return 0


def _dash(url: str | None) -> str:
    return f"  dashboard {url}" if url else ""


def _down(args: argparse.Namespace) -> int:
    path = args.state_file or default_state_file()
    result = stop_local_cluster(path, grace_s=args.grace_s)
    if not result.found:
        print(f"no local cluster recorded in {path}; nothing to stop")
        return 0
    msg = f"stopped {len(result.stopped)} processes in {result.stop_s:.1f} s"
    if result.killed:
        msg += f" ({len(result.killed)} needed SIGKILL: {', '.join(map(str, result.killed))})"
    print(msg)
    return 0


def _status(args: argparse.Namespace) -> int:
    path, cluster = _recorded(args)
    if cluster is None:
        return 1
    alive = cluster.alive_pids()
    rss = cluster.rss_bytes()
    if args.json:
        print(json.dumps({**cluster.to_json(), "alive_pids": alive, "rss_bytes": rss}, indent=2))
        return 0 if any(alive.values()) else 1
    up = sum(1 for pids in alive.values() if pids)
    print(
        f"local cluster {cluster.name!r} at {cluster.address}: {up}/{len(alive)} nodes running"
        + _dash(cluster.dashboard_url)
    )
    for node in cluster.all_nodes:
        res = ", ".join(f"{k}={v:g}" for k, v in node.resources.items()) or "-"
        pids = alive[node.name]
        state = f"{len(pids)} processes, {rss[node.name] / 2**20:.0f} MiB" if pids else "DOWN"
        print(f"  {node.name:<13} {res:<22} CPU={node.num_cpus:<3} {state}  node_id={(node.node_id or '?')[:12]}")
        if pids:
            print(f"  {'':<13} pids {' '.join(map(str, pids))}")
    print(f"total RSS {sum(rss.values()) / 2**20:.0f} MiB; state: {path}")
    return 0 if up else 1
