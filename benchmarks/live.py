"""Live open-loop benchmark: the real Serve app on local emulated clusters shaped like paper_mixed
and paper_npu (scaled down: benchmarks/clusters/live_*.yaml), the Azure conversation trace
replayed at its arrival times at 0.7x, 1.0x and 1.3x of the fluid bound, every scheduling
policy in one run on the same instances (router-only switches), with the simulator's prediction
for the same requests, times and bound beside each run. This is `hetserve bench --address ...
--simulate` driven for two clusters (hetserve.bench). Writes live.md and live.json next to this
script.

    python benchmarks/live.py                                 # both clusters, ~30 min
    python benchmarks/live.py --clusters live_npu --policies hetero,round_robin --span-s 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = "hetserve-live"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from hetserve.scheduling import policy_names

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", default="live_mixed,live_npu", help="names under benchmarks/clusters/")
    p.add_argument("--policies", default=",".join(policy_names()))
    p.add_argument("--loads", default="0.7,1.0,1.3", help="fractions of the fluid bound")
    p.add_argument("--trace", default="azure-conv")
    p.add_argument("--span-s", type=float, default=60.0, help="emulated seconds of arrivals at load 1.0")
    p.add_argument("--time-scale", type=float, default=0.5, help="wall s per emulated s")
    p.add_argument("--stream-interval-s", type=float, default=0.25, help="instances' chunk interval, wall s")
    p.add_argument("--out", default=str(HERE / "live.md"))
    p.add_argument("--resume", action="store_true", help="keep the clusters already in the .json next to --out")
    return p.parse_args(argv)


def stream_for(cluster, instances, trace: str, span_s: float, config):
    """The trace's first D seconds, D chosen so that at load 1.0 the arrivals span `span_s`."""
    from hetserve.bench.run import offered_points
    from hetserve.commands.bench import bench_stream

    duration = 600.0
    for _ in range(2):
        reqs = bench_stream(cluster, trace, 1.0, None, duration)
        _, (p,) = offered_points(instances, reqs, [1.0], None, config)
        duration = span_s * p.rate_scale
    return bench_stream(cluster, trace, 1.0, None, duration)


def run_cluster(name: str, args: argparse.Namespace) -> dict:
    import ray
    from ray import serve

    from hetserve.bench.clients import HandleClient
    from hetserve.bench.deploy import deploy_app, serve_config
    from hetserve.bench.run import offered_points, predict, run_bench
    from hetserve.cluster import load_cluster
    from hetserve.commands.bench import _wait_policy
    from hetserve.localcluster import start_local_cluster, stop_local_cluster
    from hetserve.planner import search_plan
    from hetserve.sim import DEFAULT_SLO, SimConfig, instances_from_plan

    path = HERE / "clusters" / f"{name}.yaml"
    cluster = load_cluster(path)
    plan = search_plan(cluster)
    instances = instances_from_plan(plan)
    stats_period_s = args.time_scale * 1.0  # one report per emulated second, as the simulator's default
    config = SimConfig(reconcile_interval_s=stats_period_s / args.time_scale)
    requests = stream_for(cluster, instances, args.trace, args.span_s, config)
    loads = [float(x) for x in args.loads.split(",")]
    policies = [p for p in args.policies.split(",") if p]
    bound, points = offered_points(instances, requests, loads, None, config)
    print(
        f"{name}: {len(instances)} instances, {len(requests)} requests ({requests.duration_s:.0f} s of trace), "
        f"bound {bound.output_tokens_per_s:.0f} out tok/s; rate scales {[round(p.rate_scale, 2) for p in points]}",
        flush=True,
    )
    t0 = time.monotonic()
    predicted = predict(instances, requests, policies, points, bound, config, DEFAULT_SLO)
    sim_s = time.monotonic() - t0
    app_args = {
        "cluster": str(path),
        "time_scale": args.time_scale,
        "stats_period_s": stats_period_s,
        "stream_interval_s": args.stream_interval_s,
    }
    state_dir = tempfile.mkdtemp(prefix="hs-live-")
    from overhead import start_with_retries

    local = start_with_retries(
        lambda: start_local_cluster(
            cluster, state_dir=state_dir, ray_temp_dir=tempfile.mkdtemp(prefix="hsl-", dir="/tmp"), dashboard=False
        )
    )
    try:
        ray.init(address=local.address, logging_level="ERROR", log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": _free_port()})

        def use_policy(policy: str) -> None:
            deploy_app(serve_config(APP, app_args, policy, route_prefix=None))
            _wait_policy(APP, policy)

        use_policy(policies[0])
        client = HandleClient(APP, cluster.model.name)

        def on_end(run, record):
            print(
                f"  {name} load {run.load:g} {run.policy}: {len(record.requests)} requests, "
                f"{record.wall_s:.0f} s wall, errors {record.errors_by_kind or 0}",
                flush=True,
            )

        t1 = time.monotonic()
        result = asyncio.run(
            run_bench(
                client,
                instances,
                requests,
                policies,
                points,
                bound,
                DEFAULT_SLO,
                args.time_scale,
                use_policy=use_policy,
                config=config,
                on_run_end=on_end,
                settle_s=2.0,
            )
        )
        live_s = time.monotonic() - t1
        serve.delete(APP)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_local_cluster(Path(state_dir) / "local_cluster.json")
    result.predicted = predicted
    rows = []
    for run, live, sim, rec in zip(
        result.measured.runs, result.measured.reports, predicted.reports, result.records, strict=True
    ):
        rows.append(
            {
                "policy": run.policy,
                "load": run.load,
                "rate_scale": run.rate_scale,
                "live_fraction_of_bound": live.fraction_of_bound,
                "sim_fraction_of_bound": sim.fraction_of_bound,
                "live_over_sim": live.output_tokens_per_s / sim.output_tokens_per_s
                if sim.output_tokens_per_s
                else math.nan,
                "live_ttft_p99_s": live.ttft_s.p99,
                "sim_ttft_p99_s": sim.ttft_s.p99,
                "live_ttft_p50_s": live.ttft_s.p50,
                "sim_ttft_p50_s": sim.ttft_s.p50,
                "live_tpot_p50_s": live.tpot_s.p50,
                "sim_tpot_p50_s": sim.tpot_s.p50,
                "errors": rec.errors_by_kind,
                "max_send_lag_s": rec.max_send_lag_s,
                "wall_s": rec.wall_s,
                "live_token_share": {i.instance_id: i.token_share for i in live.instances},
                "capacity_share": {i.instance_id: i.capacity_share for i in live.instances},
                "live": live.to_dict(),
                "sim": sim.to_dict(),
            }
        )
    return {
        "cluster": name,
        "plan": [
            f"{d.num_instances}x {d.name or d.config.deployment_name} ({d.prediction.output_tokens_per_s:.0f} tok/s)"
            for d in plan.deployments
        ],
        "num_requests": len(requests),
        "trace_s": requests.duration_s,
        "bound_output_tokens_per_s": bound.output_tokens_per_s,
        "bound_requests_per_s": bound.requests_per_s,
        "sim_wall_s": sim_s,
        "live_wall_s": live_s,
        "rows": rows,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    out = Path(args.out)
    saved = out.with_suffix(".json")
    # Each cluster's results are saved as soon as it is done; --resume keeps those already saved.
    results = json.loads(saved.read_text()) if args.resume and saved.is_file() else []
    done = {r["cluster"] for r in results}
    for name in [n for n in args.clusters.split(",") if n and n not in done]:
        results.append(run_cluster(name, args))
        saved.write_text(json.dumps(results, indent=1, default=float) + "\n")
    wall_min = (time.monotonic() - t0) / 60
    write_report(args, argv, results, wall_min, os.getloadavg())
    return 0


def write_report(args, argv, results, wall_min, load_avg) -> None:
    cmd = "python benchmarks/live.py" + ("" if not argv else " " + " ".join(argv))
    lines = [
        "# Live open-loop benchmark: the Azure conversation trace on emulated paper-shaped clusters",
        "",
        f"Command: `{cmd}` ({wall_min:.0f} min wall). Machine: {platform.machine()}, {os.cpu_count()} logical "
        f"CPUs (load average at the end; above 2 means other work on the machine shared them: {load_avg[0]:.1f} / "
        f"{load_avg[1]:.1f} / {load_avg[2]:.1f}). Emulated engines, the router, Serve and the replayer all "
        "share those CPUs: when they are short, the engines step late against their latency model and the "
        "router forwards late, so live throughput falls below the simulator's and latencies rise; every policy "
        "ran in this one run, on the same cluster and instances, one after another.",
        "",
        "## Setup",
        "",
        f"- `hetserve bench`'s machinery (hetserve.bench): the trace's requests sent open loop at their arrival "
        f"times (prompt = token ids of the trace's length, max_tokens = its output length, ignore_eos) through the "
        f"router's Python handle; time scale {args.time_scale:g} wall s per emulated s; instances stream a chunk "
        f"every {args.stream_interval_s:g} wall s; the router reconciles once per emulated second, as the "
        "simulator does.",
        "- Loads 0.7/1.0/1.3 are fractions of the fluid bound of the requests in the measurement window "
        "(`hetserve simulate --load`'s definition); the window is 25% of the arrival span to the last arrival; "
        "throughput = output tokens the engines counted inside the window (their counters, read at both ends) "
        "/ its length; TTFT over the window's arrivals, emulated seconds. The prediction is the simulator on "
        "the same requests, rate scales, window and bound (`sim.report.summarize` computes both).",
        "- Policies switch by a router-only update (the router's Serve user_config): the instance replicas and "
        "their engines stay; each run starts after the previous drained.",
        "",
    ]
    for res in results:
        lines += [
            f"## {res['cluster']}",
            "",
            f"Plan: {', '.join(res['plan'])}. {res['num_requests']} requests ({res['trace_s']:.0f} s of the trace, "
            f"compressed by each load's rate scale); fluid bound {res['bound_output_tokens_per_s']:,.0f} output "
            f"tok/s = {res['bound_requests_per_s']:.2f} req/s (emulated). Live runs {res['live_wall_s'] / 60:.1f} min "
            f"wall; simulation {res['sim_wall_s']:.0f} s.",
            "",
            "| load | policy | live / bound | sim / bound | live / sim | TTFT p99 live s | TTFT p99 sim s | "
            "TTFT p50 live s | TTFT p50 sim s | errors | max send lag s |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in res["rows"]:
            errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
            lines.append(
                f"| {r['load']:g} | {r['policy']} | **{r['live_fraction_of_bound']:.3f}** | "
                f"{r['sim_fraction_of_bound']:.3f} | {r['live_over_sim']:.3f} | {r['live_ttft_p99_s']:.2f} | "
                f"{r['sim_ttft_p99_s']:.2f} | {r['live_ttft_p50_s']:.2f} | {r['sim_ttft_p50_s']:.2f} | {errs} | "
                f"{r['max_send_lag_s']:.2f} |"
            )
        lines.append("")
    lines += ["## Targets", ""]
    for res in results:
        het = [r for r in res["rows"] if r["policy"] == "hetero" and r["load"] == max(x["load"] for x in res["rows"])]
        if het:
            h = het[0]
            lines.append(
                f"- {res['cluster']}: hetero at {h['load']:g}x: **{h['live_fraction_of_bound']:.3f}** of the bound "
                f"live (target >= 0.95; simulator {h['sim_fraction_of_bound']:.3f})."
            )
        ratios = [r["live_over_sim"] for r in res["rows"] if math.isfinite(r["live_over_sim"])]
        within = sum(1 for x in ratios if abs(x - 1) <= 0.10)
        lines.append(
            f"- {res['cluster']}: live within 10% of the simulator's throughput in **{within}/{len(ratios)}** runs "
            f"(live/sim from {min(ratios):.3f} to {max(ratios):.3f})."
        )
    notes = HERE / "live_notes.md"
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
