"""Reliability benchmark (issue 9): an instance killed under load with 1 and 2 router replicas,
overload at 2x / 5x / 10x the batch slots, and hetero's share of the fluid bound with 1 vs 2
router replicas. Writes reliability.md next to this script (with the soak's figures, if
benchmarks/soak_summary.json exists) and every number to benchmarks/reliability.json (parts run
now replace their earlier figures; the others are kept).

    python benchmarks/reliability.py                  # everything on the laptop cluster (~15 min)
    python benchmarks/reliability.py --parts kill     # one part
    python benchmarks/reliability.py --md-only        # rewrite reliability.md from the saved JSON

The kill runs reproduce the issue's: 200 unary completions (max_tokens 64) and 20 streams in
flight, then `ray.kill` of one L4 replica. With 2 router replicas one router replica is killed too
(a second load wave): the client retries a request that got 5xx without an OpenAI error body or
a 503 (at most 3 tries, 0.5 s apart), as a client of any HTTP service would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default=str(REPO / "cluster_configs" / "laptop.yaml"))
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--parts", default="kill,overload,share")
    p.add_argument("--unary", type=int, default=200)
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--overloads", default="2,5,10")
    p.add_argument("--share-window-s", type=float, default=30.0)
    p.add_argument("--md-only", action="store_true")
    return p.parse_args(argv)


# ---- HTTP helpers ----------------------------------------------------------------------------------


def _get(base: str, path: str) -> dict:
    import requests

    return requests.get(f"{base}{path}", timeout=30).json()


def _is_retryable(status: int, body: object) -> bool:
    """503 (no instance / instance gone), or a 5xx that is not the router's own OpenAI error
    (the proxy's answer when the router replica itself died)."""
    return status == 503 or (status >= 500 and not (isinstance(body, dict) and "error" in body))


async def _unary(client, base: str, i: int, max_tokens: int, retries: int = 3) -> dict:
    body = {"model": "llama-3.1-8b", "prompt": f"request {i} " * 40, "max_tokens": max_tokens}
    tries = []
    for _ in range(retries):
        try:
            r = await client.post(f"{base}/v1/completions", json=body)
            status = r.status_code
            try:
                payload = r.json()
            except ValueError:
                payload = r.text[:200]
        except Exception as exc:
            status, payload = 0, type(exc).__name__
        tries.append(status)
        if status == 200 or not (status == 0 or _is_retryable(status, payload)):
            break
        await asyncio.sleep(0.5)
    ok = tries[-1] == 200 and payload["usage"]["completion_tokens"] == max_tokens
    return {"tries": tries, "ok": ok}


async def _stream(client, base: str, i: int, max_tokens: int) -> dict:
    body = {"model": "llama-3.1-8b", "prompt": f"stream {i} " * 40, "max_tokens": max_tokens, "stream": True}
    try:
        async with client.stream("POST", f"{base}/v1/completions", json=body) as r:
            lines = [line async for line in r.aiter_lines() if line]
            status = r.status_code
    except Exception as exc:
        return {"outcome": f"transport error {type(exc).__name__}"}
    if status != 200:
        return {"outcome": f"http {status} before any token"}
    payloads = [json.loads(x[6:]) for x in lines if x.startswith("data: ") and x != "data: [DONE]"]
    words = sum(len(p["choices"][0]["text"].split()) for p in payloads if p.get("choices"))
    if words == max_tokens and lines[-1] == "data: [DONE]":
        return {"outcome": "completed"}
    if payloads and "error" in payloads[-1]:
        return {"outcome": "error event"}
    return {"outcome": "cut off without error event"}


def _actor_name(app: str, deployment: str, replica: str) -> str:
    return f"SERVE_REPLICA::{app}#{deployment}#{replica}"


def _router_replicas(app: str) -> list[str]:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    prefix = f"SERVE_REPLICA::{app}#router#"
    return sorted(n["name"][len(prefix) :] for n in names if n["name"].startswith(prefix))


def _out_of_routing_s(base: str, instance_id: str, t_kill: float, timeout_s: float = 15.0) -> float:
    """Seconds from the kill until 5 polls in a row (any router replica) show it unroutable."""
    first = None
    streak = 0
    while time.monotonic() - t_kill < timeout_s:
        rows = _get(base, "/v1/hetserve/instances")["data"]
        row = next((r for r in rows if r["instance_id"] == instance_id), None)
        if row is None or not row["routable"]:
            first = first or time.monotonic()
            streak += 1
            if streak >= 5:
                return first - t_kill
        else:
            first, streak = None, 0
        time.sleep(0.05)
    return float("inf")


# ---- parts -----------------------------------------------------------------------------------------


def run_kill(args, cluster, plan, serve, ray, port: int, routers: int) -> dict:
    import httpx

    from hetserve.app import load_app_args
    from hetserve.serving.builder import build_application

    name = f"kill{routers}"
    app_args = load_app_args({"time_scale": args.time_scale, "stats_period_s": 1.0, "router_replicas": routers})
    serve.run(build_application(cluster.model, plan, app_args), name=name, route_prefix=f"/{name}")
    base = f"http://127.0.0.1:{port}/{name}"
    _wait_routable(base, sum(d.num_instances for d in plan.deployments))
    rows = _get(base, "/v1/hetserve/instances")["data"]
    l4 = next(r for r in rows if r["accelerator"] == "L4")

    async def wave(kill) -> tuple[list, list, dict]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            unary = [asyncio.create_task(_unary(client, base, i, 64)) for i in range(args.unary)]
            streams = [asyncio.create_task(_stream(client, base, i, 256)) for i in range(args.streams)]
            info = await asyncio.to_thread(kill)
            return await asyncio.gather(*unary), await asyncio.gather(*streams), info

    def kill_l4() -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = _get(base, "/v1/hetserve/instances")["data"]
            row = next((r for r in rows if r["instance_id"] == l4["instance_id"]), None)
            if row and row["num_outstanding"] >= 4:
                break
            time.sleep(0.05)
        ray.kill(
            ray.get_actor(_actor_name(name, l4["deployment"], l4["instance_id"]), namespace="serve"), no_restart=True
        )
        t_kill = time.monotonic()
        return {"out_of_routing_s": _out_of_routing_s(base, l4["instance_id"], t_kill)}

    log(f"kill, {routers} router replica(s): {args.unary} unary + {args.streams} streams, killing {l4['instance_id']}")
    unary, streams, info = asyncio.run(wave(kill_l4))
    result = {"routers": routers, "instance_kill": _summarize_wave(unary, streams) | info}
    log(f"  {result['instance_kill']}")
    if routers > 1:
        _wait_routable(base, sum(d.num_instances for d in plan.deployments))
        victim = _router_replicas(name)[0]

        def kill_router() -> dict:
            time.sleep(1.0)
            ray.kill(ray.get_actor(_actor_name(name, "router", victim), namespace="serve"), no_restart=True)
            return {"killed_router": victim}

        log(f"kill, {routers} router replicas: second wave, killing router replica {victim}")
        unary, streams, info = asyncio.run(wave(kill_router))
        result["router_kill"] = _summarize_wave(unary, streams) | info
        log(f"  {result['router_kill']}")
    serve.delete(name)
    return result


def _summarize_wave(unary: list[dict], streams: list[dict]) -> dict:
    first = {}
    for u in unary:
        first[str(u["tries"][0])] = first.get(str(u["tries"][0]), 0) + 1
    outcomes: dict[str, int] = {}
    for s in streams:
        outcomes[s["outcome"]] = outcomes.get(s["outcome"], 0) + 1
    return {
        "unary": len(unary),
        "unary_lost": sum(not u["ok"] for u in unary),
        "unary_first_try_status": first,
        "unary_client_retried": sum(len(u["tries"]) > 1 for u in unary),
        "streams": outcomes,
    }


def _wait_routable(base: str, count: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = _get(base, "/v1/hetserve/instances")["data"]
            if len(rows) == count and all(r["routable"] and r["kv_usage"] is not None for r in rows):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base}: not all {count} instances routable after {timeout_s} s")


def run_overload(args, cluster, plan, serve, port: int) -> list[dict]:
    import aiohttp

    from hetserve.app import load_app_args
    from hetserve.serving.builder import build_application

    slots = sum(d.num_instances * d.config.max_num_seqs for d in plan.deployments)
    out = []
    for k in [int(x) for x in args.overloads.split(",")]:
        name = f"overload{k}"
        app_args = load_app_args({"time_scale": args.time_scale, "stats_period_s": 1.0, "router_replicas": 1})
        serve.run(build_application(cluster.model, plan, app_args), name=name, route_prefix=f"/{name}")
        base = f"http://127.0.0.1:{port}/{name}"
        _wait_routable(base, sum(d.num_instances for d in plan.deployments))
        time.sleep(2.0)
        rss_before = _get(base, "/v1/hetserve/router")["rss_bytes"]
        n = k * slots
        peak = [rss_before]

        async def burst(n: int = n, base: str = base, peak: list = peak):
            # aiohttp, not httpx: with thousands of requests in flight an httpx client's own event
            # loop adds seconds to what is timed on this machine.
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=900)
            ) as session:
                stop = asyncio.Event()

                async def watch():
                    while not stop.is_set():
                        try:
                            async with session.get(f"{base}/v1/hetserve/router") as r:
                                peak.append((await r.json())["rss_bytes"])
                        except Exception:
                            pass
                        await asyncio.sleep(0.5)

                async def one(i: int):
                    body = {"model": "llama-3.1-8b", "prompt": f"overload {i} " * 150, "max_tokens": 64}
                    t0 = time.perf_counter()
                    try:
                        async with session.post(f"{base}/v1/completions", json=body) as r:
                            await r.read()
                            status, timing = r.status, r.headers.get("server-timing", "router;dur=nan")
                    except Exception as exc:
                        return 0, time.perf_counter() - t0, float("nan"), type(exc).__name__
                    return status, time.perf_counter() - t0, float(timing.split("dur=")[1]) / 1000, None

                w = asyncio.create_task(watch())
                res = await asyncio.gather(*(one(i) for i in range(n)))
                stop.set()
                await w
                return res

        log(f"overload {k}x: {n} concurrent requests")
        t0 = time.monotonic()
        res = asyncio.run(burst())
        wall = time.monotonic() - t0
        time.sleep(10.0)
        rss_after = _get(base, "/v1/hetserve/router")["rss_bytes"]
        codes: dict[str, int] = {}
        for c, *_ in res:
            codes[str(c)] = codes.get(str(c), 0) + 1
        acc = [t for c, t, _, _ in res if c == 200]
        ref = [t for c, t, _, _ in res if c == 429]
        ref_router = [rt for c, _, rt, _ in res if c == 429]
        row = {
            "overload": k,
            "requests": n,
            "slots": slots,
            "statuses": codes,
            "rate_429": len(ref) / n,
            "accepted_p50_s": float(np.percentile(acc, 50)) if acc else None,
            "accepted_p99_s": float(np.percentile(acc, 99)) if acc else None,
            "refused_p50_ms_client": float(np.percentile(ref, 50)) * 1000 if ref else None,
            "refused_p99_ms_client": float(np.percentile(ref, 99)) * 1000 if ref else None,
            "refused_p99_ms_router": float(np.nanpercentile(ref_router, 99)) * 1000 if ref else None,
            "wall_s": wall,
            "router_rss_mib_before": rss_before / 2**20,
            "router_rss_mib_peak": max(peak) / 2**20,
            "router_rss_mib_after_10s_idle": rss_after / 2**20,
        }
        log(f"  {row}")
        out.append(row)
        serve.delete(name)
    return out


def run_share(args, cluster, plan, serve) -> list[dict]:
    from hetserve.app import load_app_args
    from hetserve.serving.builder import build_application

    bound = plan.output_tokens_per_s
    slots = sum(d.num_instances * d.config.max_num_seqs for d in plan.deployments)
    clients = int(1.5 * slots)
    wl = cluster.workload
    request = {
        "model": cluster.model.name,
        "prompt": "x" * int(4 * wl.mean_input_tokens),
        "max_tokens": int(wl.mean_output_tokens),
    }
    out = []
    for routers in (1, 2):
        name = f"share{routers}"
        app_args = load_app_args({"time_scale": args.time_scale, "stats_period_s": 1.0, "router_replicas": routers})
        handle = serve.run(build_application(cluster.model, plan, app_args), name=name, route_prefix=None)

        async def measure(handle=handle):
            stop = asyncio.Event()

            async def loop():
                while not stop.is_set():
                    try:
                        await handle.generate.remote(dict(request))
                    except Exception:
                        await asyncio.sleep(0.1)

            tasks = [asyncio.create_task(loop()) for _ in range(clients)]
            await asyncio.sleep(20.0)
            before = await handle.instances.remote()
            await asyncio.sleep(args.share_window_s)
            after = await handle.instances.remote()
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            b = {r["instance_id"]: r["total_output_tokens"] for r in before}
            return sum(r["total_output_tokens"] - b.get(r["instance_id"], 0) for r in after)

        log(f"share: {routers} router replica(s), {clients} closed-loop clients")
        tokens = asyncio.run(measure())
        tok_s = tokens / (args.share_window_s / args.time_scale)
        out.append(
            {"routers": routers, "clients": clients, "output_tokens_per_s": tok_s, "fraction_of_bound": tok_s / bound}
        )
        log(f"  {out[-1]}")
        serve.delete(name)
    return out


# ---- report ----------------------------------------------------------------------------------------


def write_md(results: dict, path: Path) -> None:
    lines = [
        "# Reliability: faults, overload, several routers, soak (issue 9)",
        "",
        "Generated by `benchmarks/reliability.py` (and `benchmarks/soak.py` for the soak section) on "
        f"the `{results.get('cluster', 'laptop')}` cluster, emulated engines at time scale "
        f"{results.get('time_scale', 1.0)}, on a 2-core machine (load average {results.get('loadavg', '?')} at "
        "the end of the last run; other agents' niced jobs shared it, so latencies are noisy).",
        "",
    ]
    if results.get("kill"):
        lines += [
            "## An instance killed under load",
            "",
            "200 unary completions (max_tokens 64) and 20 streams (max_tokens 256) in flight, then `ray.kill` of "
            "one L4 replica once it serves at least 4 of them. *Lost* = not answered 200 with all 64 tokens, after "
            "the client's retries on 503 (the router retries failed instances itself; a client retry is only "
            "needed when a router replica dies). *Out of routing* = from the kill until the router lists the "
            "instance as not routable.",
            "",
            "| router replicas | fault | unary lost | first-try statuses | client retries | streams "
            "| out of routing s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["kill"]:
            for key, fault in (("instance_kill", "L4 instance killed"), ("router_kill", "router replica killed")):
                w = r.get(key)
                if not w:
                    continue
                oor = w.get("out_of_routing_s")
                lines.append(
                    f"| {r['routers']} | {fault} | {w['unary_lost']} / {w['unary']} | {w['unary_first_try_status']} | "
                    f"{w['unary_client_retried']} | {w['streams']} | {f'{oor:.3f}' if oor is not None else '-'} |"
                )
        if any(r.get("router_kill") for r in results["kill"]):
            lines += [
                "",
                "The router replica was killed 1 s into a second wave: no request was lost and none needed a client "
                "retry in this run (Serve's proxy spreads requests over the replicas, so the victim may have held "
                "few of them when it died; a request in flight on a dead router replica gets Serve's 500, which "
                "the benchmark's client retries like a 503).",
            ]
        lines.append("")
    if results.get("overload"):
        lines += [
            "## Overload",
            "",
            "k x the cluster's batch slots as concurrent unary requests at once (max_tokens 64, ~150-token prompts); "
            "the router's queue holds 256 requests (`max_queue_requests`). 429 latency at the client includes Serve's "
            "HTTP proxy taking in the whole burst; *in the router* is the `Server-Timing` the router reports (from its "
            "door to its answer). Router memory: RSS of the router replica before, at its peak (sampled every 0.5 s), "
            "and 10 s after the burst.",
            "",
            "| overload | requests | statuses | 429 rate | accepted p50 s | accepted p99 s | 429 p50 / p99 ms (client) "
            "| 429 p99 ms (router) | router RSS MiB before / peak / after |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["overload"]:
            lines.append(
                f"| {r['overload']}x | {r['requests']} | {r['statuses']} | {r['rate_429']:.2f} | "
                f"{_f(r['accepted_p50_s'])} | {_f(r['accepted_p99_s'])} | "
                f"{_f(r['refused_p50_ms_client'], 0)} / {_f(r['refused_p99_ms_client'], 0)} | "
                f"{_f(r['refused_p99_ms_router'], 1)} | {r['router_rss_mib_before']:.0f} / "
                f"{r['router_rss_mib_peak']:.0f} / {r['router_rss_mib_after_10s_idle']:.0f} |"
            )
        lines += [
            "",
            "What limits it: the router now refuses at its door, before a body is read, once every free "
            "batch slot and queue place is spoken for (counting the requests let in whose bodies are still "
            "arriving; serving/door.py): about 1 ms at p99 in the router, and the requests it lets in are "
            "about the ones that fit (accepted = free slots + 256 queue places at 5x). The seconds at the "
            "client are Serve's HTTP proxy taking in a simultaneous burst of thousands of connections on "
            "2 shared cores (one proxy actor, at Ray's worker niceness) before the router sees them; the "
            "100 ms target is asserted for Poisson arrivals at 10x the capacity's rate "
            "(`tests/serving/test_serving_reliability.py`). Before the door decided (refusals parsed "
            "first), the router's own 429 p99 was 2.3 s at 5x and 5.6 s at 10x. Router memory after 10 s "
            "idle stays ~1.5x its level before the first request (peak: the requests held at once); at the "
            "CI test's scale it returns within 20%.",
        ]
        lines.append("")
    if results.get("share"):
        lines += [
            "## Several router replicas: hetero's share of the fluid bound",
            "",
            "Closed loop of 1.5 x the batch slots clients through the app handle (Serve spreads them over the router "
            "replicas); output tokens/s from the engines' counters over the window, against the plan's bound.",
            "",
            "| router replicas | clients | output tokens/s | fraction of bound |",
            "|---|---|---|---|",
        ]
        for r in results["share"]:
            lines.append(
                f"| {r['routers']} | {r['clients']} | {r['output_tokens_per_s']:.0f} | {r['fraction_of_bound']:.3f} |"
            )
        if len(results["share"]) == 2:
            a, b = results["share"]
            lines += [
                "",
                f"Difference: {abs(a['fraction_of_bound'] - b['fraction_of_bound']) * 100:.1f} points of the bound.",
            ]
        lines.append("")
    soak = HERE / "soak_summary.json"
    if soak.exists():
        s = json.loads(soak.read_text())
        lines += [
            "## Soak",
            "",
            f"`benchmarks/soak.py`: {s['minutes']:.0f} min at {s['load']:.0%} of the fluid bound "
            f"({s['offered_requests_per_s']:.2f} req/s offered, Poisson) at time scale {s['time_scale']} "
            f"(half real speed, to spare the shared machine), instance chunks every {s.get('stream_interval_s')} s, "
            "lengths from the Azure 2023 conv trace, a quarter streamed (TTFT) and the rest unary; started "
            f"{s['wall_start']}, machine load average {_f(s.get('loadavg_mean'), 1)} (on 2 cores: the service "
            "got a small, varying share of the CPU, so its effective capacity was well below the bound and "
            "backlogs built up and drained; the latency curve follows the machine's load, not the offered one). "
            "Memory of the router replica rises in steps with the largest backlog so far and stays there "
            "(glibc keeps freed heap; the router trims only when idle, which it never was).",
            "",
            f"- requests sent {s['sent']}, completed {s['completed']}, errors {s['errors'] or 'none'}, "
            f"outputs cut short {s['short_outputs']}",
            f"- TTFT p50 (median over samples) {_f(s['ttft_p50_median'])} s; worst per-sample TTFT p99 "
            f"{_f(s['ttft_p99_max'])} s; worst E2E p99 {_f(s['e2e_p99_max'])} s",
            f"- output tokens/s (mean) {s['output_tokens_per_s_mean']:.0f}",
            "- RSS by process role, MiB, at 1 min -> at the end: "
            + ", ".join(
                f"{k} {s['rss_mib_at_1min'].get(k, 0):.0f} -> {v:.0f}" for k, v in sorted(s["rss_mib_at_end"].items())
            ),
            "",
        ]
        for png in s.get("pngs", []):
            lines.append(f"![{png}]({png})")
        lines.append("")
    lines += [
        "## Notes",
        "",
        "- Late binding's effect on TTFT at 0.7x-1.0x load is measured in the simulator: `benchmarks/late_binding.md`.",
        "- The CI tests (`tests/serving/test_serving_reliability.py`) assert the issue's claims at a smaller "
        "scale (batch 8, 32 slots, a 32-request queue): 0 unary requests lost and the dead instance out of "
        "routing within 2 s (under load: at its first failed call; idle: when its reports stop), 429s within "
        "100 ms at p99 for 10x the capacity's rate in Poisson arrivals when the module runs alone (router 19-40 ms, "
        "handle caller 31-56 ms; open: 126 / 109 ms inside the full suite, an imperative xfail), memory back within "
        "20%, 401 before any "
        "work, every bound a 400 naming its field.",
        "- Binding Ray to the loopback address is not possible from `ray start` in Ray 2.60: "
        "`--node-ip-address=127.0.0.1` is rewritten to the host's routable address "
        "(`ray._private.services.resolve_ip_for_localhost`), and the GCS, raylets and workers listen on all "
        "interfaces whatever the node address (checked with `ss -ltn` on a running local cluster). The lock for "
        "the Ray ports is Ray's token authentication: `hetserve cluster up` starts every node with a fresh "
        "token (0600 file in its state dir; `hetserve cluster env` gives clients its path), and a client "
        "without it is refused (`tests/test_localcluster.py::test_token_auth_locks_the_ray_ports`).",
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    log(f"wrote {path}")


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    json_path = HERE / "reliability.json"  # every run's parts, merged: one part can be rerun alone
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.md_only:
        write_md(results, HERE / "reliability.md")
        return 0
    import ray
    from ray import serve

    from hetserve.cluster import load_cluster
    from hetserve.localcluster import start_local_cluster, stop_local_cluster
    from hetserve.planner import search_plan

    cluster = load_cluster(args.cluster)
    plan = search_plan(cluster)
    from hetserve.config import ConfigError

    for attempt in range(3):  # a node may miss Ray's fixed 30 s start window on a loaded machine
        state_dir = tempfile.mkdtemp(prefix="hs-rel-")
        ray_tmp = tempfile.mkdtemp(prefix="hsr-", dir="/tmp")
        try:
            local = start_local_cluster(cluster, state_dir=state_dir, ray_temp_dir=ray_tmp)
            break
        except ConfigError as exc:
            log(f"cluster start failed (try {attempt + 1} of 3): {str(exc).splitlines()[0]}")
            if attempt == 2:
                raise
    parts = args.parts.split(",")
    results.update({"cluster": cluster.name, "time_scale": args.time_scale})
    try:
        ray.init(address=local.address, logging_level="ERROR", log_to_driver=False)
        port = _free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        if "kill" in parts:
            results["kill"] = [run_kill(args, cluster, plan, serve, ray, port, r) for r in (1, 2)]
            json_path.write_text(json.dumps(results, indent=2))
        if "overload" in parts:
            results["overload"] = run_overload(args, cluster, plan, serve, port)
            json_path.write_text(json.dumps(results, indent=2))
        if "share" in parts:
            results["share"] = run_share(args, cluster, plan, serve)
        results["loadavg"] = round(os.getloadavg()[0], 1)
        json_path.write_text(json.dumps(results, indent=2))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_local_cluster(Path(state_dir) / "local_cluster.json")
    write_md(results, HERE / "reliability.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
