"""Soak: the live service at 80% of its capacity for 30 minutes, with a trace's length mix (issue 9).

Starts a local cluster (the laptop config unless --cluster), deploys the app on emulated engines,
and offers open-loop Poisson arrivals at `--load` x the fluid bound's requests/s (the bound for
the trace's requests on the planned instances, hetserve.sim.fluid; scaled by the time scale).
Each request has the (prompt, output) lengths of the next Azure 2023 conv trace request (clipped
to the context), sent as a token-id prompt with max_tokens = its output length; a quarter are
streamed with usage (TTFT is measured on them), the rest unary (fewer SSE events through the
proxy on a small machine). Every `--sample-s` it records: the RSS of every process of the cluster (by role: router
replicas, instances, proxy, controller, raylets, GCS, ...) and of this client, and for the
requests finished in the interval: TTFT and E2E percentiles, errors by status, output tokens/s.

Writes, under --out-dir (default benchmarks/out/soak): samples.jsonl (one line per sample),
summary.json, and next to this script soak_memory.png, soak_latency.png (the figures
benchmarks/reliability.md shows).

    nohup python benchmarks/soak.py > /tmp/soak.log 2>&1 &          # 30 min
    python benchmarks/soak.py --minutes 3                           # a short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("HETSERVE_DATA_DIR", REPO.parent / "shared" / "data"))
if not DATA.exists():  # a git worktree sits one level deeper than the checkout
    DATA = Path("/work/shared/data")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default=str(REPO / "cluster_configs" / "laptop.yaml"))
    p.add_argument("--trace", default=str(DATA / "azure2023" / "AzureLLMInferenceTrace_conv.csv"))
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--load", type=float, default=0.8, help="offered rate / fluid bound")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--router-replicas", type=int, default=1)
    p.add_argument(
        "--stream-interval-s",
        type=float,
        default=0.2,
        help="instances send a chunk at most this often (the app's stream_interval_s; fewer messages per token)",
    )
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument(
        "--stream-fraction", type=float, default=0.25, help="requests streamed (TTFT measured on these); the rest unary"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(HERE / "out" / "soak"))
    p.add_argument("--png-prefix", default=str(HERE / "soak"))
    return p.parse_args(argv)


# ---- processes and their memory -----------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _role(cmd: str) -> str:
    """A process's role from its command line (Ray sets actor process titles)."""
    if "ServeReplica" in cmd:
        if ":router" in cmd:
            return "router replica"
        return "instance replica"
    for needle, role in (
        ("ProxyActor", "serve proxy"),
        ("ServeController", "serve controller"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs"),
        ("DashboardAgent", "dashboard agent"),
        ("dashboard/agent.py", "dashboard agent"),
        ("RuntimeEnvAgent", "runtime env agent"),
        ("runtime_env/agent", "runtime env agent"),
        ("log_monitor", "log monitor"),
        ("monitor.py", "autoscaler monitor"),
        ("ray::IDLE", "idle worker"),
    ):
        if needle in cmd:
            return role
    return "other ray"


def memory_by_process(local) -> list[dict]:
    from hetserve.localcluster.processes import _node_members, _process_table, _rss_bytes

    table = _process_table()
    out = []
    for node in [local.head, *local.workers]:
        for pid in sorted(_node_members(node, table)):
            cmd = _cmdline(pid)
            out.append({"pid": pid, "node": node.name, "role": _role(cmd), "rss": _rss_bytes(pid), "cmd": cmd[:80]})
    out.append({"pid": os.getpid(), "node": "client", "role": "load client", "rss": _rss_bytes(os.getpid())})
    return out


# ---- load -----------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.done: list[dict] = []
        self.in_flight = 0

    def take(self) -> list[dict]:
        out, self.done = self.done, []
        return out


async def one_request(client, url: str, model: str, prompt: int, output: int, rec: Recorder, stream: bool) -> None:
    body: dict = {"model": model, "prompt": [random.randrange(100, 30000) for _ in range(prompt)], "max_tokens": output}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    t0 = time.monotonic()
    first = None
    status = 0
    error = None
    tokens = 0
    rec.in_flight += 1
    try:
        if not stream:
            r = await client.post(url, json=body)
            status = r.status_code
            if status != 200:
                error = f"http {status}"
            else:
                tokens = r.json()["usage"]["completion_tokens"]
        else:
            async with client.stream("POST", url, json=body) as r:
                status = r.status_code
                if status != 200:
                    await r.aread()
                    error = f"http {status}"
                else:
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        payload = json.loads(line[6:])
                        if "error" in payload:
                            error = f"stream error {payload['error'].get('code')}"
                            continue
                        if payload.get("usage"):
                            tokens = payload["usage"]["completion_tokens"]
                        if first is None and payload.get("choices") and payload["choices"][0].get("text"):
                            first = time.monotonic()
    except Exception as exc:  # a transport error is an error of the service too
        error = f"{type(exc).__name__}"
    finally:
        rec.in_flight -= 1
    end = time.monotonic()
    rec.done.append(
        {
            "status": status,
            "error": error,
            "ttft": (first - t0) if first else None,
            "e2e": end - t0,
            "tokens": tokens,
            "expected": output,
        }
    )


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def drive(args, base: str, model: str, lengths: list[tuple[int, int]], rate: float, local, samples_path: Path):
    import httpx

    rec = Recorder()
    rng = random.Random(args.seed)
    url = f"{base}/v1/completions"
    end_s = time.monotonic() + 60 * args.minutes
    tasks: set[asyncio.Task] = set()
    samples = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t_start = time.monotonic()
        next_sample = t_start + args.sample_s
        next_arrival = t_start
        i = 0
        with samples_path.open("w") as f:
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    batch = rec.take()
                    ttft = [d["ttft"] for d in batch if d["ttft"] is not None and not d["error"]]
                    e2e = [d["e2e"] for d in batch if not d["error"]]
                    errors = Counter(d["error"] for d in batch if d["error"])
                    short = sum(1 for d in batch if not d["error"] and d["tokens"] != d["expected"])
                    mem = memory_by_process(local)
                    by_role: dict[str, int] = defaultdict(int)
                    for m in mem:
                        by_role[m["role"]] += m["rss"]
                    sample = {
                        "t_s": round(now - t_start, 1),
                        "completed": len(batch),
                        "in_flight": rec.in_flight,
                        "errors": dict(errors),
                        "short_outputs": short,
                        "output_tokens_per_s": sum(d["tokens"] for d in batch) / args.sample_s,
                        "ttft_p50": _pct(ttft, 50),
                        "ttft_p90": _pct(ttft, 90),
                        "ttft_p99": _pct(ttft, 99),
                        "e2e_p50": _pct(e2e, 50),
                        "e2e_p99": _pct(e2e, 99),
                        "rss_by_role": dict(by_role),
                        "rss_by_process": [
                            {k: m[k] for k in ("pid", "node", "role", "rss")} for m in mem if m["role"] != "idle worker"
                        ],
                        "loadavg": os.getloadavg()[0],
                    }
                    samples.append(sample)
                    f.write(json.dumps(sample) + "\n")
                    f.flush()
                    log(
                        f"t={sample['t_s']:.0f}s done {len(batch)} in flight {rec.in_flight} errors {dict(errors)} "
                        f"TTFT p50 {sample['ttft_p50']} p99 {sample['ttft_p99']} "
                        f"router {by_role.get('router replica', 0) / 2**20:.0f} MiB"
                    )
                    next_sample += args.sample_s
                if now >= end_s:
                    break
                if now >= next_arrival:
                    prompt, output = lengths[i % len(lengths)]
                    i += 1
                    stream = rng.random() < args.stream_fraction
                    task = asyncio.create_task(one_request(client, url, model, prompt, output, rec, stream))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    next_arrival += rng.expovariate(rate)
                    continue
                await asyncio.sleep(max(0.0, min(next_arrival, next_sample) - time.monotonic()))
            log(f"arrivals over ({i} sent); draining {len(tasks)} in flight")
            if tasks:
                await asyncio.wait(tasks, timeout=300)
            tail = rec.take()
            errors = Counter(d["error"] for d in tail if d["error"])
            samples.append(
                {
                    "t_s": round(time.monotonic() - t_start, 1),
                    "completed": len(tail),
                    "in_flight": rec.in_flight,
                    "errors": dict(errors),
                    "drain": True,
                }
            )
            f.write(json.dumps(samples[-1]) + "\n")
    return samples, i


def plot(samples: list[dict], prefix: str, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in samples if "rss_by_role" in s]
    t = [s["t_s"] / 60 for s in rows]
    roles = sorted({r for s in rows for r in s["rss_by_role"]})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for role in roles:
        ax.plot(t, [s["rss_by_role"].get(role, 0) / 2**20 for s in rows], label=role)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS, MiB (sum over processes of the role)")
    ax.set_title(f"{title}: memory by process role")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    mem_png = f"{prefix}_memory.png"
    fig.tight_layout()
    fig.savefig(mem_png, dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for key, label in (
        ("ttft_p50", "TTFT p50"),
        ("ttft_p99", "TTFT p99"),
        ("e2e_p50", "E2E p50"),
        ("e2e_p99", "E2E p99"),
    ):
        a1.plot(t, [s[key] if s[key] is not None else np.nan for s in rows], label=label)
    a1.set_yscale("log")
    a1.set_ylabel("seconds")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a1.set_title(f"{title}: latency and errors per {rows[1]['t_s'] - rows[0]['t_s'] if len(rows) > 1 else 0:.0f} s")
    a2.plot(t, [s["completed"] for s in rows], label="completed")
    a2.plot(t, [sum(s["errors"].values()) for s in rows], label="errors", color="red")
    a2.set_ylabel("requests per sample")
    a2.set_xlabel("minutes")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    lat_png = f"{prefix}_latency.png"
    fig.tight_layout()
    fig.savefig(lat_png, dpi=110)
    plt.close(fig)
    return [mem_png, lat_png]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    from ray import serve

    from hetserve.app import load_app_args
    from hetserve.cluster import load_cluster
    from hetserve.localcluster import start_local_cluster, stop_local_cluster
    from hetserve.planner import search_plan
    from hetserve.serving.builder import build_application
    from hetserve.sim import fluid_bound, instances_from_plan, requests_from_trace
    from hetserve.traces import load_trace

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cluster = load_cluster(args.cluster)
    plan = search_plan(cluster)
    max_len = cluster.workload.max_request_tokens
    reqs = requests_from_trace(load_trace(args.trace), max_len).head(4000)
    bound = fluid_bound(instances_from_plan(plan), reqs)
    rate = args.load * bound.requests_per_s / args.time_scale
    lengths = list(zip(reqs.num_prompt_tokens.tolist(), reqs.num_output_tokens.tolist(), strict=True))
    random.Random(args.seed).shuffle(lengths)
    log(
        f"{cluster.name}: fluid bound {bound.requests_per_s:.2f} req/s ({bound.output_tokens_per_s:.0f} out tok/s); "
        f"offering {rate:.2f} req/s wall for {args.minutes} min"
    )
    from hetserve.config import ConfigError

    for attempt in range(3):  # a node may miss Ray's fixed 30 s start window on a loaded machine
        state_dir = tempfile.mkdtemp(prefix="hs-soak-")
        ray_tmp = tempfile.mkdtemp(prefix="hss-", dir="/tmp")
        try:
            local = start_local_cluster(cluster, state_dir=state_dir, ray_temp_dir=ray_tmp)
            break
        except ConfigError as exc:
            log(f"cluster start failed (try {attempt + 1} of 3): {str(exc).splitlines()[0]}")
            if attempt == 2:
                raise
    t0 = time.time()
    try:
        ray.init(address=local.address, logging_level="ERROR", log_to_driver=False)
        port = _free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        app_args = load_app_args(
            {
                "time_scale": args.time_scale,
                "stats_period_s": 1.0,
                "router_replicas": args.router_replicas,
                "stream_interval_s": args.stream_interval_s,
            }
        )
        serve.run(build_application(cluster.model, plan, app_args), name="soak", route_prefix="/soak")
        base = f"http://127.0.0.1:{port}/soak"
        samples, sent = asyncio.run(
            drive(args, base, cluster.model.name, lengths, rate, local, out_dir / "samples.jsonl")
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_local_cluster(Path(state_dir) / "local_cluster.json")
    rows = [s for s in samples if "rss_by_role" in s]
    errors: Counter = Counter()
    for s in samples:
        errors.update(s["errors"])
    completed = sum(s["completed"] for s in samples)
    first, last = rows[min(2, len(rows) - 1)], rows[-1]
    summary = {
        "cluster": cluster.name,
        "minutes": args.minutes,
        "load": args.load,
        "time_scale": args.time_scale,
        "router_replicas": args.router_replicas,
        "stream_interval_s": args.stream_interval_s,
        "offered_requests_per_s": rate,
        "fluid_bound_requests_per_s": bound.requests_per_s,
        "sent": sent,
        "completed": completed,
        "errors": dict(errors),
        "short_outputs": sum(s.get("short_outputs", 0) for s in samples),
        "ttft_p50_median": _pct([s["ttft_p50"] for s in rows if s["ttft_p50"] is not None], 50),
        "ttft_p99_max": max((s["ttft_p99"] for s in rows if s["ttft_p99"] is not None), default=None),
        "e2e_p99_max": max((s["e2e_p99"] for s in rows if s["e2e_p99"] is not None), default=None),
        "output_tokens_per_s_mean": float(np.mean([s["output_tokens_per_s"] for s in rows[2:]] or [0.0])),
        "rss_mib_at_1min": {k: v / 2**20 for k, v in first["rss_by_role"].items()},
        "rss_mib_at_end": {k: v / 2**20 for k, v in last["rss_by_role"].items()},
        "wall_start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
        "loadavg_mean": float(np.mean([s["loadavg"] for s in rows])) if rows else None,
    }
    pngs = plot(samples, args.png_prefix, f"soak {cluster.name} @ {args.load:.0%} of bound")
    summary["pngs"] = [Path(p).name for p in pngs]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (HERE / "soak_summary.json").write_text(json.dumps(summary, indent=2))  # read by reliability.py
    log(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
