"""The local heterogeneous Ray cluster: one Ray node per config node with exactly its accelerator
resources, and a stop that kills exactly the recorded processes and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hetserve.catalog import ray_resource_name
from hetserve.cli import main
from hetserve.cluster import load_cluster
from hetserve.config import ConfigError
from hetserve.errors import RuntimeFailure
from hetserve.localcluster import (
    LocalCluster,
    LocalNode,
    load_local_cluster,
    start_local_cluster,
    stop_local_cluster,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
LAPTOP = REPO_ROOT / "cluster_configs" / "laptop.yaml"
RAY_DEFAULT_RESOURCES = {"CPU", "memory", "object_store_memory"}


def _write_cluster(tmp_path: Path, nodes_yaml: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nmodel: llama-3.1-8b\n"
        "workload: {mean_input_tokens: 512, mean_output_tokens: 128}\n"
        f"nodes:\n{nodes_yaml}"
    )
    return path


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _record(path: Path, head: LocalNode, workers: tuple[LocalNode, ...] = ()) -> None:
    cluster = LocalCluster(
        name="fake",
        address="127.0.0.1:1",
        head=head,
        workers=workers,
        state_file=str(path),
        ray_temp_dir=None,
        dashboard_url=None,
        startup_s=0.0,
    )
    path.write_text(json.dumps(cluster.to_json()))


def _node(name: str, pid: int, start_ticks: int | None) -> LocalNode:
    return LocalNode(
        name=name,
        role="worker",
        accelerator="T4",
        resources={"T4": 1.0},
        num_cpus=1,
        labels={},
        pid=pid,
        start_ticks=start_ticks,
        metrics_export_port=0,
        dashboard_agent_listen_port=0,
        log_path="",
    )


linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


# --- without Ray ---------------------------------------------------------------------------------


def test_refuses_clusters_too_large_for_one_machine(tmp_path):
    """A config above the local node limit is refused before any process starts."""
    path = _write_cluster(tmp_path, "  - {name: t4, accelerator: T4, count: 1, num_nodes: 9}\n")
    with pytest.raises(ConfigError, match="9 nodes; a local cluster runs at most 8"):
        start_local_cluster(path, state_dir=tmp_path)
    assert not (tmp_path / "local_cluster.json").exists()
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_refuses_node_names_ray_cannot_label(tmp_path):
    path = _write_cluster(tmp_path, "  - {name: t4-, accelerator: T4, count: 1}\n")
    with pytest.raises(ConfigError, match="nodes\\[\\].name: 't4-' cannot label a Ray node"):
        start_local_cluster(path, state_dir=tmp_path)


def test_stop_without_state_file_is_a_no_op(tmp_path):
    result = stop_local_cluster(tmp_path / "local_cluster.json")
    assert not result.found and result.terminated == () and result.killed == ()


@linux_only
def test_stop_kills_a_recorded_session_with_its_descendants(tmp_path):
    """Every process of a recorded node's session dies, the leader's children included; the
    state file is removed and a second stop finds nothing. (Stands in for a Ray node: a shell
    leading its own session, as `ray start` does, with two children.)"""
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        members: list[int] = []
        while time.monotonic() < deadline and len(members) < 3:
            members = [
                int(p.name)
                for p in Path("/proc").iterdir()
                if p.name.isdigit() and _session_of(int(p.name)) == leader.pid
            ]
            time.sleep(0.05)
        assert len(members) == 3, members
        state = tmp_path / "local_cluster.json"
        _record(state, _node("head", leader.pid, _start_ticks(leader.pid)))
        result = stop_local_cluster(state, grace_s=5)
        leader.wait(timeout=5)
        assert result.found and set(members) == set(result.stopped)
        assert leader.pid in result.terminated
        assert not any(_running(pid) for pid in members)
        assert not state.exists()
        assert not stop_local_cluster(state).found
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


@linux_only
def test_stop_never_kills_a_process_that_reused_a_recorded_pid(tmp_path):
    """A recorded PID now held by another process (different start time) is left alone: here the
    PID is this test process's own."""
    state = tmp_path / "local_cluster.json"
    me = os.getpid()
    _record(state, _node("head", me, _start_ticks(me) - 1))
    result = stop_local_cluster(state, grace_s=1)
    assert result.found and result.stopped == () and result.terminated == () and result.killed == ()
    assert _running(me)


@linux_only
def test_refuses_to_start_over_a_recorded_cluster_that_still_runs(tmp_path):
    """`up` twice on one state file: the second refuses and leaves the first's processes alone.
    (A `sleep` leading its own session stands in for the recorded node.)"""
    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        state = tmp_path / "local_cluster.json"
        _record(state, _node("head", leader.pid, _start_ticks(leader.pid)))
        with pytest.raises(RuntimeFailure, match="still running"):
            start_local_cluster(LAPTOP, state_dir=tmp_path)
        # The CLI reports it as a runtime failure (exit 1), not as bad input (exit 2).
        assert main(["cluster", "up", str(LAPTOP), "--state-file", str(state)]) == 1
        assert leader.poll() is None
        assert load_local_cluster(state).head.pid == leader.pid
    finally:
        leader.kill()
        leader.wait()


def _session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError):
        return None


def test_cli_status_and_down_without_a_cluster(tmp_path, capsys):
    state = tmp_path / "local_cluster.json"
    assert main(["cluster", "status", "--state-file", str(state)]) == 1
    assert main(["cluster", "down", "--state-file", str(state)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_cli_up_refuses_a_large_cluster_with_exit_code_2(tmp_path, capsys):
    path = _write_cluster(tmp_path, "  - {name: h100, accelerator: H100-SXM5-80GB, count: 8, num_nodes: 20}\n")
    assert main(["cluster", "up", str(path), "--state-file", str(tmp_path / "local_cluster.json")]) == 2
    assert "20 nodes" in capsys.readouterr().err


# --- on the session's local Ray cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def ray_mod(local_cluster):
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address=local_cluster.address, logging_level="ERROR", log_to_driver=False)
    return ray


@pytest.mark.ray
def test_one_node_per_config_node_with_exactly_its_resources(local_cluster, ray_mod):
    """ray.nodes(): the head carries no accelerator resource and no GPU; every config node is one
    Ray node, found by its label, carrying exactly {accelerator: count}."""
    cluster = load_cluster(LAPTOP)
    expected = {n.name: {ray_resource_name(n.accelerator): float(n.count)} for n in cluster.nodes}
    assert local_cluster.nodes == expected

    alive = [n for n in ray_mod.nodes() if n["Alive"]]
    by_name = {n["Labels"].get("hetserve.io/node"): n for n in alive}
    assert set(by_name) == {"head", *expected}
    assert len(alive) == len(expected) + 1
    for name, node in by_name.items():
        custom = {
            k: v for k, v in node["Resources"].items() if k not in RAY_DEFAULT_RESOURCES and not k.startswith("node:")
        }
        assert custom == expected.get(name, {}), name
        assert "GPU" not in node["Resources"]
        assert node["NodeID"] == local_cluster.node_ids[name]

    totals = ray_mod.cluster_resources()
    for n in cluster.nodes:
        want = sum(m.count for m in cluster.nodes if m.accelerator == n.accelerator)
        assert totals[ray_resource_name(n.accelerator)] == want


@pytest.mark.ray
def test_accelerator_resource_places_work_on_that_node(local_cluster, ray_mod):
    """A task asking for one L4 runs on the L4 node, one asking for a T4 on the T4 node."""

    @ray_mod.remote(num_cpus=0.1)
    def node_id() -> str:
        return ray_mod.get_runtime_context().get_node_id()

    for name, resources in local_cluster.nodes.items():
        (accelerator,) = resources
        got = ray_mod.get(node_id.options(resources={accelerator: 1}).remote(), timeout=60)
        assert got == local_cluster.node_ids[name]


@pytest.mark.ray
@linux_only
def test_stop_kills_exactly_the_recorded_processes(local_cluster, ray_mod, tmp_path):
    """A second, tiny cluster stops completely; the session cluster keeps every node."""
    session_pids = local_cluster.alive_pids()
    path = _write_cluster(tmp_path, "  - {name: t4-extra, accelerator: T4, count: 1}\n")
    ray_temp = f"/tmp/hs-t{os.getpid()}"
    try:
        extra = start_local_cluster(
            path, state_dir=tmp_path / "state", ray_temp_dir=ray_temp, head_num_cpus=1, dashboard=False
        )
        assert load_local_cluster(tmp_path / "state" / "local_cluster.json") == extra
        extra_pids = [p for pids in extra.alive_pids().values() for p in pids]
        assert extra_pids and all(extra.alive_pids().values())
        assert not set(extra_pids) & {p for pids in session_pids.values() for p in pids}

        result = stop_local_cluster(extra.state_file)
        assert result.found and set(extra_pids) <= set(result.stopped)
        assert not any(_running(p) for p in extra_pids)
        assert not any(extra.alive_pids().values())
        assert not stop_local_cluster(extra.state_file).found
    finally:
        stop_local_cluster(tmp_path / "state" / "local_cluster.json")
        subprocess.run(["rm", "-rf", ray_temp], check=False)

    after = local_cluster.alive_pids()
    assert all(after.values())
    # Long-lived daemons (raylets, GCS, agents) are the same processes; workers may come and go.
    for node in local_cluster.all_nodes:
        assert set(node.pids) <= set(after[node.name]), node.name
    alive = [n for n in ray_mod.nodes() if n["Alive"]]
    assert len(alive) == len(local_cluster.nodes) + 1


_CONNECT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    print("T4 resources:", ray.cluster_resources().get(sys.argv[2], 0))
except Exception as exc:
    print("refused:", type(exc).__name__, str(exc).splitlines()[0][:200])
    sys.exit(3)
"""


def _connect(address: str, resource: str, *envs: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """One client per env, all at once (a refused ray.init retries for ~20 s before it gives up)."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONNECT, address, resource],
            env={**child, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


@pytest.mark.ray
@linux_only
def test_token_auth_locks_the_ray_ports(tmp_path):
    """With auth on (`hetserve cluster up`'s default), a client without the cluster's token is
    refused and one with `client_env()` connects; the token file is its owner's only."""
    path = _write_cluster(tmp_path, "  - {name: t4-auth, accelerator: T4, count: 1}\n")
    ray_temp = f"/tmp/hs-a{os.getpid()}"
    try:
        cluster = start_local_cluster(
            path, state_dir=tmp_path / "state", ray_temp_dir=ray_temp, head_num_cpus=1, dashboard=False, auth=True
        )
        token_file = Path(cluster.auth_token_path or "")
        assert token_file.is_file() and (token_file.stat().st_mode & 0o777) == 0o600
        env = cluster.client_env()
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(token_file)
        assert load_local_cluster(cluster.state_file) == cluster

        resource = ray_resource_name("T4")
        wrong, none, right = _connect(
            cluster.address,
            resource,
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
            {"RAY_AUTH_MODE": "disabled"},
            env,
        )
        assert wrong.returncode == 3, wrong.stdout + wrong.stderr[-2000:]
        assert none.returncode == 3, none.stdout + none.stderr[-2000:]
        assert right.returncode == 0 and "T4 resources: 1" in right.stdout, right.stdout + right.stderr[-2000:]
    finally:
        stop_local_cluster(tmp_path / "state" / "local_cluster.json")
        subprocess.run(["rm", "-rf", ray_temp], check=False)
