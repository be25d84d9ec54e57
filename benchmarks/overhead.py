"""Router cost and scale, side by side in one run on one local cluster.

Three request paths, each answering one output token (emulated engines at time scale 0.001,
max_tokens 1, so the engine's own time is microseconds and the path is what is measured):
- hetserve: the router's `generate` handle method (validate, place, stream from the chosen
  replica through the instance request router, complete) -> instance replica -> engine;
- chain: a bare Ray Serve two-hop chain, an ingress deployment calling a leaf deployment whose
  method streams (the least any two-hop streaming design costs on Serve);
- direct: the instance deployment's handle straight from the client (one hop, no router).
For each: latency p50/p99 at concurrency 1, requests/s at 64 and 256 in flight (closed loop,
the clients spread over several Ray actors so that one client process is not the limit). Then
hetserve's total requests/s with 1, 2 and 4 router replicas (a router-only update of the same
app), and the placement decision's time at 10, 100 and 1,000 instances (plain Python).
Writes overhead.md next to this script.

    python benchmarks/overhead.py                    # starts the laptop cluster (~5 min)
    python benchmarks/overhead.py --address HOST:PORT --duration-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = "ovh-hetserve"
CHAIN_APP = "ovh-chain"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default=str(REPO / "cluster_configs" / "laptop.yaml"))
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: start the local one)")
    p.add_argument("--duration-s", type=float, default=8.0, help="seconds per throughput point")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--latency-requests", type=int, default=300, help="requests at concurrency 1")
    p.add_argument("--clients", type=int, default=4, help="load-generator actors")
    p.add_argument("--replicas", default="1,2,4", help="router replica counts")
    p.add_argument("--decisions", type=int, default=3000, help="placements timed per instance count")
    p.add_argument("--out", default=str(HERE / "overhead.md"))
    return p.parse_args(argv)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the bare chain --------------------------------------------------------------------------
def chain_app():
    from ray import serve

    @serve.deployment(name="leaf", max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0.1})
    class Leaf:
        async def generate(self, request: dict):
            for i in range(int(request.get("max_tokens", 1))):
                yield {"token": i}

    @serve.deployment(name="ingress", max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0.1})
    class Ingress:
        def __init__(self, leaf):
            self._leaf = leaf.options(stream=True)

        async def generate(self, request: dict) -> dict:
            n = 0
            async for _ in self._leaf.generate.remote(request):
                n += 1
            return {"num_output_tokens": n}

    return Ingress.bind(Leaf.bind())


# ---- load generators -------------------------------------------------------------------------
def make_loadgen():
    import ray

    @ray.remote(num_cpus=0)
    class LoadGen:
        """A closed loop of `concurrency` callers on one path, timed in this process."""

        def __init__(self, model: str, instance_deployment: str):
            self._model = model
            self._dep = instance_deployment
            self._handles: dict = {}
            self._tag = uuid.uuid4().hex[:8]  # request ids unique across generators

        def _call(self, path: str):
            from ray import serve

            from hetserve.engines.base import GenerateRequest

            if path not in self._handles:
                if path == "hetserve":
                    self._handles[path] = serve.get_deployment_handle("router", app_name=APP)
                elif path == "chain":
                    self._handles[path] = serve.get_deployment_handle("ingress", app_name=CHAIN_APP)
                else:
                    h = serve.get_deployment_handle(self._dep, app_name=APP)
                    self._handles[path] = h.options(stream=True)
            h = self._handles[path]
            body = {"model": self._model, "prompt": [100] * 8, "max_tokens": 1}
            if path in ("hetserve", "chain"):
                return lambda: h.generate.remote(body)
            counter = [0]

            async def direct():
                counter[0] += 1
                req = GenerateRequest(f"d{self._tag}-{counter[0]}", 1, prompt_token_ids=(100,) * 8, num_prompt_tokens=8)
                async for _ in h.generate.remote(req):
                    pass

            return direct

        async def run(self, path: str, concurrency: int, duration_s: float, warmup_s: float, max_requests: int = 0):
            call = self._call(path)
            lat: list[float] = []
            errors = [0]
            t_start = time.monotonic() + warmup_s
            t_end = t_start + duration_s

            async def one_caller():
                while True:
                    t0 = time.monotonic()
                    if t0 >= t_end or (max_requests and len(lat) >= max_requests):
                        return
                    try:
                        await call()
                    except Exception:
                        errors[0] += 1
                        continue
                    t1 = time.monotonic()
                    if t0 >= t_start and t1 <= t_end:
                        lat.append(t1 - t0)

            await asyncio.gather(*(one_caller() for _ in range(concurrency)))
            return {"latencies": lat, "errors": errors[0], "window_s": duration_s}

    return LoadGen


def drive(gens, path: str, in_flight: int, duration_s: float, warmup_s: float, max_requests: int = 0) -> dict:
    import ray

    per = [in_flight // len(gens) + (1 if i < in_flight % len(gens) else 0) for i in range(len(gens))]
    refs = [g.run.remote(path, c, duration_s, warmup_s, max_requests) for g, c in zip(gens, per, strict=True) if c]
    parts = ray.get(refs)
    lat = np.concatenate([np.asarray(p["latencies"]) for p in parts]) if parts else np.zeros(0)
    return {
        "path": path,
        "in_flight": in_flight,
        "req_s": len(lat) / duration_s,
        "p50_ms": float(np.percentile(lat, 50) * 1e3) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99) * 1e3) if len(lat) else float("nan"),
        "n": len(lat),
        "errors": sum(p["errors"] for p in parts),
    }


# ---- placement decision time -----------------------------------------------------------------
def decision_times(counts=(10, 100, 1000), n_decisions: int = 3000, policy: str = "hetero") -> list[dict]:
    """Time `place(policy, request, tracker.views(), now)` + on_dispatch/on_complete bookkeeping on
    a tracker with `n` instances of four speeds, half of them loaded."""
    from hetserve.records import RequestInfo
    from hetserve.scheduling import LoadTracker, make_policy, place

    rows = []
    for n in counts:
        tracker = LoadTracker(default_output_tokens=128)
        for i in range(n):
            tracker.add_instance(f"i{i:04d}", f"dep{i % 4}", "X", 500.0 * (1 + i % 4), 200_000, max_num_seqs=64)
        pol = make_policy(policy, seed=0)
        rng = np.random.default_rng(0)
        for k in range(n * 4):  # background load
            req = RequestInfo(f"bg{k}", int(rng.integers(10, 2000)), 256)
            tracker.on_dispatch(req, place(pol, req, tracker.views(), 0.0).instance_id, 0.0)
        place_s, views_s = [], []
        for k in range(n_decisions):
            req = RequestInfo(f"r{k}", int(rng.integers(10, 2000)), 256)
            t0 = time.perf_counter()
            views = tracker.views()
            t1 = time.perf_counter()
            p = place(pol, req, views, 1.0)
            t2 = time.perf_counter()
            tracker.on_dispatch(req, p.instance_id, 1.0)
            tracker.on_complete(req.request_id, 1.0)
            views_s.append(t1 - t0)
            place_s.append(t2 - t1)
        a, b = np.asarray(place_s) * 1e6, np.asarray(views_s) * 1e6
        rows.append(
            {
                "instances": n,
                "policy": policy,
                "place_p50_us": float(np.percentile(a, 50)),
                "place_p99_us": float(np.percentile(a, 99)),
                "views_p50_us": float(np.percentile(b, 50)),
                "total_p50_us": float(np.percentile(a + b, 50)),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    from ray import serve

    from hetserve.bench.deploy import deploy_app, serve_config
    from hetserve.cluster import load_cluster
    from hetserve.localcluster import start_local_cluster, stop_local_cluster
    from hetserve.planner import search_plan

    t_start = time.monotonic()
    decisions = decision_times(n_decisions=args.decisions)
    for d in decisions:
        print(f"decision at {d['instances']} instances: {d['total_p50_us']:.1f} us p50", flush=True)
    cluster = load_cluster(args.cluster)
    plan = search_plan(cluster)
    instance_dep = plan.deployments[0].name or plan.deployments[0].config.deployment_name
    state_dir = None
    if args.address is None:
        state_dir = tempfile.mkdtemp(prefix="hs-ovh-")
        local = start_with_retries(
            lambda: start_local_cluster(
                cluster, state_dir=state_dir, ray_temp_dir=tempfile.mkdtemp(prefix="hso-", dir="/tmp"), dashboard=False
            )
        )
        address = local.address
    else:
        address = args.address
    app_args = {"cluster": str(Path(args.cluster).absolute()), "time_scale": 0.001, "stats_period_s": 1.0}
    rows: list[dict] = []
    scale: list[dict] = []
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": _free_port()})
        for name in (APP, CHAIN_APP):  # a config deploy of unchanged args would keep old code
            if name in serve.status().applications:
                serve.delete(name)
        deploy_app(serve_config(APP, app_args, "hetero", router_replicas=1, route_prefix=None))
        serve.run(chain_app(), name=CHAIN_APP, route_prefix=None)
        LoadGen = make_loadgen()
        gens = [LoadGen.remote(cluster.model.name, instance_dep) for _ in range(args.clients)]
        paths = ["hetserve", "chain", "direct"]
        for path in paths:  # warm every path and every generator
            drive(gens, path, len(gens), 1.0, 0.5)
        for path in paths:
            r = drive(gens[:1], path, 1, 600.0, 1.0, max_requests=args.latency_requests)
            r["req_s"] = float("nan")
            rows.append(r)
            print(f"{path} c=1: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms", flush=True)
        for in_flight in (64, 256):
            for path in paths:
                r = drive(gens, path, in_flight, args.duration_s, args.warmup_s)
                rows.append(r)
                print(f"{path} {in_flight} in flight: {r['req_s']:.0f} req/s p50 {r['p50_ms']:.1f} ms", flush=True)
        for k in [int(x) for x in args.replicas.split(",") if x]:
            deploy_app(serve_config(APP, app_args, "hetero", router_replicas=k, route_prefix=None))
            time.sleep(2.0)
            drive(gens, "hetserve", len(gens), 1.0, 0.5)
            r = drive(gens, "hetserve", 256, args.duration_s, args.warmup_s)
            r["router_replicas"] = k
            scale.append(r)
            print(f"{k} router replicas: {r['req_s']:.0f} req/s", flush=True)
        serve.delete(APP)
        serve.delete(CHAIN_APP)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if state_dir is not None:
            stop_local_cluster(Path(state_dir) / "local_cluster.json")
    wall_min = (time.monotonic() - t_start) / 60
    write_report(args, argv, rows, scale, decisions, wall_min, os.getloadavg())
    return 0


def start_with_retries(start, attempts: int = 4):
    """Ray gives a node 30 s to register; on a machine this loaded that sometimes is not enough."""
    from hetserve.config import ConfigError

    for k in range(attempts):
        try:
            return start()
        except ConfigError as exc:
            if k == attempts - 1:
                raise
            print(f"cluster start failed ({str(exc).splitlines()[0]}); retrying", flush=True)
            time.sleep(10)
    raise AssertionError("unreachable")


def _get(rows, path, in_flight):
    return next(r for r in rows if r["path"] == path and r["in_flight"] == in_flight)


def write_report(args, argv, rows, scale, decisions, wall_min, load_avg) -> None:
    cmd = "python benchmarks/overhead.py" + ("" if not argv else " " + " ".join(argv))
    h1, c1 = _get(rows, "hetserve", 1), _get(rows, "chain", 1)
    lines = [
        "# Router cost and scale: hetserve's router path against a bare Serve two-hop chain",
        "",
        f"Command: `{cmd}` ({wall_min:.1f} min wall). Machine: {platform.machine()}, {os.cpu_count()} logical "
        f"CPUs (load average at the end; above 2 means other work on the machine shared them: {load_avg[0]:.1f} / "
        f"{load_avg[1]:.1f} / {load_avg[2]:.1f}): absolute figures are noisy and low; every path ran in this "
        "one run, on one cluster, one after another, so the ratios are the comparable figures.",
        "",
        "Setup: local laptop cluster (head + 3 worker nodes), hetserve app (`hetserve.app:build`, emulated "
        "engines, time_scale 0.001, max_tokens 1, 8 prompt tokens), a bare chain app (ingress -> streaming "
        f"leaf), clients in {args.clients} Ray actors (closed loop, in-flight requests split among them), "
        f"{args.duration_s:g} s per throughput point after {args.warmup_s:g} s warm-up, "
        f"{args.latency_requests} sequential requests for the concurrency-1 latency.",
        "",
        "## Paths",
        "",
        "| path | p50 ms (c=1) | p99 ms (c=1) | req/s @64 | p50 ms @64 | req/s @256 | p50 ms @256 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in ("hetserve", "chain", "direct"):
        a, b, c = _get(rows, path, 1), _get(rows, path, 64), _get(rows, path, 256)
        lines.append(
            f"| {path} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {b['req_s']:.0f} | {b['p50_ms']:.1f} | "
            f"{c['req_s']:.0f} | {c['p50_ms']:.1f} | {a['errors'] + b['errors'] + c['errors']} |"
        )
    h64, c64, h256, c256 = (_get(rows, p, n) for p, n in (("hetserve", 64), ("chain", 64), ("hetserve", 256),
                                                          ("chain", 256)))  # fmt: skip
    p50_ratio = h1["p50_ms"] / c1["p50_ms"]
    lines += [
        "",
        "## Targets",
        "",
        f"- p50 at concurrency 1, hetserve / chain: **{p50_ratio:.2f}x** (target <= 1.1x).",
        f"- req/s at 64 in flight, hetserve / chain: **{h64['req_s'] / c64['req_s']:.2f}x**; at 256: "
        f"**{h256['req_s'] / c256['req_s']:.2f}x** (target >= 0.9x).",
    ]
    d100 = next(d for d in decisions if d["instances"] == 100)
    lines.append(
        f"- placement decision at 100 instances: **{d100['total_p50_us']:.1f} us** p50 (views + place; target < 50 us)."
    )
    if scale:
        base = scale[0]["req_s"]
        two = next((s for s in scale if s["router_replicas"] == 2), None)
        if two is not None and base > 0:
            lines.append(
                f"- 2 router replicas / 1: **{two['req_s'] / base:.2f}x** req/s at 256 in flight (target >= 1.7x)."
            )
    lines += [
        "",
        "## Router replicas (hetserve path, 256 in flight)",
        "",
        "| router replicas | req/s | p50 ms | p99 ms | x one replica |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in scale:
        lines.append(
            f"| {s['router_replicas']} | {s['req_s']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
            f"{s['req_s'] / scale[0]['req_s']:.2f} |"
        )
    lines += [
        "",
        "## Placement decision (plain Python, `hetserve.scheduling.place`, hetero policy)",
        "",
        "| instances | tracker.views() p50 us | place() p50 us | place() p99 us | total p50 us |",
        "|---:|---:|---:|---:|---:|",
    ]
    for d in decisions:
        lines.append(
            f"| {d['instances']} | {d['views_p50_us']:.1f} | {d['place_p50_us']:.1f} | {d['place_p99_us']:.1f} | "
            f"{d['total_p50_us']:.1f} |"
        )
    lines.append("")
    notes = HERE / "overhead_notes.md"
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
