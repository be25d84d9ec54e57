"""Launching a local Ray node as a session of its own, which host processes belong to it, and
stopping them.

A node is the session started by its `ray start` (see `LocalNode`); its members are read from
/proc (or `ps` off Linux). Stopping signals exactly those PIDs, in `ray stop`'s order.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hetserve.errors import RuntimeFailure

if TYPE_CHECKING:
    from hetserve.localcluster.state import LocalNode


# --- launching: each node a session of its own ---------------------------------------------------


def _ray_executable() -> str:
    """The `ray` script of this interpreter's environment, so nodes run the same Ray as we do."""
    candidate = Path(sys.executable).parent / "ray"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise RuntimeFailure(f"no `ray` executable next to {sys.executable} or on PATH; install ray[serve]")
    return found


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Ray 2.60 switches token auth on when ~/.ray/auth_token exists; a local cluster needs none.
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # On SIGTERM a node would wait up to 30 s for Serve to drain; the whole cluster is going away.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    # The head's dashboard (on by default) gets 60 s to come up; a loaded laptop can need more.
    env.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "180")
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


# --- membership and stopping ---------------------------------------------------------------------


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
