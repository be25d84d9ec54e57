"""`hetserve bench`: replay a trace open loop against the running app and measure it live.

Two ways in:
- `--url http://host:8000`: the OpenAI endpoint of an app already serving (no Ray needed); the
  policy is whatever it runs.
- `--address RAY_ADDRESS`: connect to the Ray cluster, deploy `hetserve.app:build` for
  `--cluster` (Serve's config path) and run every `--policies` entry on the same instances,
  switching only the router between runs (hetserve.bench.deploy); requests go through the
  router's Python handle (`--target handle`) or Serve's HTTP proxy (`--target http`).
Offered load, windows, metrics and tables are `hetserve simulate`'s; `--simulate` also runs the
simulator on the same setup and prints predicted beside measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hetserve.cluster import Cluster, load_cluster
from hetserve.commands.simulate import TRACE_ALIASES, _floats, _print, _slo, resolve_trace
from hetserve.config import ConfigError
from hetserve.planner import search_plan
from hetserve.scheduling import policy_names
from hetserve.sim import Comparison, SimConfig, SimRequests, instances_from_plan, poisson_requests, requests_from_trace
from hetserve.traces import load_trace

__all__ = ["bench_stream", "register", "run"]

DEFAULT_APP_NAME = "hetserve-bench"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="replay a trace open loop against the live app; measured vs simulated",
        description="Send a trace's requests (or a Poisson stream) at their arrival times to the running app "
        "and report throughput against the fluid bound, TTFT/TPOT/E2E percentiles, errors by kind and "
        "per-instance token shares; with --address, several policies on the same cluster.",
    )
    p.add_argument("--cluster", required=True, metavar="CLUSTER.yaml", help="the cluster config the app serves")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", default=None, help="base URL of a serving app (HTTP, its current policy)")
    where.add_argument(
        "--address",
        default=None,
        help="Ray address ('auto' or host:port): deploy the app there and switch policies between runs",
    )
    p.add_argument(
        "--target",
        choices=["handle", "http"],
        default="handle",
        help="with --address: send through the router's Python handle or Serve's HTTP proxy",
    )
    p.add_argument("--app-name", default=DEFAULT_APP_NAME, dest="app_name", help="Serve app name (with --address)")
    p.add_argument(
        "--app-arg",
        action="append",
        default=[],
        dest="app_arg",
        metavar="KEY=VALUE",
        help="an AppArgs field for the deployed app (repeatable), e.g. stats_period_s=0.5",
    )
    p.add_argument(
        "--router-replicas", type=int, default=None, dest="router_replicas", help="router replicas (with --address)"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=None,
        dest="time_scale",
        help="wall s per emulated s of the emulated engines (with --url: read from the app's plan)",
    )
    p.add_argument("--trace", default=None, help=f"trace file or one of {', '.join(TRACE_ALIASES)}; default Poisson")
    p.add_argument("--poisson-rate", type=float, default=1.0, dest="poisson_rate", help="Poisson rate, requests/s")
    p.add_argument("--num-requests", type=int, default=None, dest="num_requests", help="first N requests only")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        dest="duration_s",
        help="only the trace's first DURATION seconds (its own clock, before any rate scaling)",
    )
    p.add_argument("--shuffle-lengths", action="store_true", dest="shuffle_lengths", help="as in simulate")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate-scale", default=None, dest="rate_scale", help="comma-separated arrival-rate multipliers")
    load.add_argument("--load", default=None, help="comma-separated offered loads, fractions of the fluid bound")
    p.add_argument("--policies", default=None, help="comma-separated policies (with --address; default hetero)")
    p.add_argument("--simulate", action="store_true", help="also simulate the same setup; print predicted vs measured")
    p.add_argument("--slo-ttft-ms", type=float, default=None, dest="slo_ttft_ms")
    p.add_argument("--slo-tpot-ms", type=float, default=None, dest="slo_tpot_ms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=os.environ.get("HETSERVE_API_KEY"), dest="api_key", help="HTTP bearer key")
    p.add_argument("--per-instance", action="store_true", dest="per_instance", help="per-instance token shares")
    p.add_argument("--json-out", default=None, dest="json_out", metavar="PATH")
    p.add_argument("--plot", default=None, metavar="PNG", help="throughput and p99 TTFT vs offered load")
    p.add_argument("--no-progress", action="store_true", dest="no_progress")
    p.set_defaults(func=run)


def bench_stream(
    cluster: Cluster,
    trace: str | None,
    poisson_rate: float,
    num_requests: int | None,
    duration_s: float | None,
    shuffle_lengths: bool = False,
    seed: int = 0,
) -> SimRequests:
    """The requests to replay. max_tokens is each request's true output length: the engines stop at
    max_tokens (emulated ones always do), so live and simulated instances do the same work."""
    max_len = cluster.workload.max_request_tokens  # what the router accepts (prompt + max_tokens)
    if trace is None:
        if not poisson_rate > 0:
            raise ConfigError(f"--poisson-rate: must be > 0 (got {poisson_rate})")
        wl = cluster.workload
        n = num_requests or int(min(5000, max(2, (duration_s or 300) * poisson_rate)))
        reqs = poisson_requests(poisson_rate, n, wl.mean_input_tokens, wl.mean_output_tokens, max_len, seed=seed)
    else:
        t = load_trace(resolve_trace(trace))
        if duration_s is not None:
            t = t.window(duration_s)
        reqs = requests_from_trace(t, max_len)
    if num_requests is not None:
        reqs = reqs.head(num_requests)
    if shuffle_lengths:
        reqs = reqs.shuffled_lengths(seed)
    if len(reqs) < 2:
        raise ConfigError(f"--duration-s/--num-requests: need at least 2 requests (got {len(reqs)})")
    return SimRequests(reqs.name, reqs.arrival_s, reqs.num_prompt_tokens, reqs.num_output_tokens,
                       reqs.num_output_tokens.copy(), reqs.clipped)  # fmt: skip


def _app_args(pairs: list[str], cluster_path: str, time_scale: float) -> dict[str, Any]:
    from hetserve.app import load_app_args

    args: dict[str, Any] = {"cluster": str(Path(cluster_path).absolute()), "time_scale": time_scale}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--app-arg: expected KEY=VALUE (got {pair!r})")
        args[key.strip()] = value
    checked = load_app_args(args)  # names the bad field
    if "policy" in args:
        raise ConfigError("--app-arg: give the policy with --policies")
    return {k: getattr(checked, k) for k in args}


def run(args: argparse.Namespace) -> int:
    if args.num_requests is not None and args.num_requests < 2:
        raise ConfigError(f"--num-requests: must be >= 2 (got {args.num_requests})")
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s: must be > 0 (got {args.duration_s})")
    policies = [p.strip() for p in (args.policies or "").split(",") if p.strip()]
    for name in policies:
        if name not in policy_names():
            raise ConfigError(f"--policies: unknown scheduling policy {name!r}; known: {', '.join(policy_names())}")
    if args.url and policies and len(policies) > 1:
        raise ConfigError("--policies: with --url only the app's own policy runs; use --address to compare")
    loads = _floats("--load", args.load) if args.load else None
    scales = _floats("--rate-scale", args.rate_scale) if args.rate_scale else None
    cluster = load_cluster(args.cluster)
    plan = search_plan(cluster)
    instances = instances_from_plan(plan)
    requests = bench_stream(
        cluster, args.trace, args.poisson_rate, args.num_requests, args.duration_s, args.shuffle_lengths, args.seed
    )
    slo = _slo(args, cluster)
    return asyncio.run(_run(args, cluster, instances, requests, policies, loads, scales, slo))


async def _run(args, cluster, instances, requests, policies, loads, scales, slo) -> int:
    from hetserve.bench.clients import HttpClient
    from hetserve.bench.run import offered_points, predict, run_bench
    from hetserve.commands.progress import progress_bar

    config = SimConfig()
    bound, points = offered_points(instances, requests, loads, scales, config)
    use_policy = None
    if args.url:
        client: Any = HttpClient(args.url, cluster.model.name, args.api_key)
        try:
            view = await client.plan()
        except Exception as exc:  # connection refused, not hetserve, ...: name the flag
            await client.close()
            raise ConfigError(f"--url: no hetserve plan at {args.url}/v1/hetserve/plan ({exc})") from None
        deployed = view.get("policy", "?")
        if policies and policies[0] != deployed:
            raise ConfigError(f"--policies: the app at {args.url} runs {deployed!r}")
        policies = [deployed]
        time_scale = args.time_scale or view.get("time_scale") or 1.0
    else:
        time_scale = args.time_scale or 1.0
        policies = policies or ["hetero"]
        client, use_policy = await _deployed_client(args, cluster, time_scale)

    show = not args.no_progress and sys.stderr.isatty()
    progress = progress_bar(show)
    state: dict[str, Any] = {"task": None}
    wall: list[float] = []

    def on_run_start(run, n):
        label = f"{run.policy} @ " + (f"load {run.load:g}" if run.load is not None else f"x{run.rate_scale:g}")
        state["task"] = progress.add_task(label, total=n)

    def on_progress(done):
        progress.update(state["task"], completed=done)

    def on_run_end(run, record):
        wall.append(record.wall_s)
        progress.remove_task(state["task"])
        if not show:
            print(f"  {run.policy}: {len(record.requests)} requests in {record.wall_s:.0f} s wall", file=sys.stderr)

    try:
        with progress:
            result = await run_bench(
                client,
                instances,
                requests,
                policies,
                points,
                bound,
                slo,
                time_scale,
                use_policy=use_policy,
                config=config,
                on_run_start=on_run_start,
                on_progress=on_progress,
                on_run_end=on_run_end,
            )
    finally:
        await client.close()
    predicted = predict(instances, requests, policies, points, bound, config, slo, args.seed) if args.simulate else None
    result.predicted = predicted

    print(f"measured live ({'HTTP' if args.url or args.target == 'http' else 'handle'}, time scale {time_scale:g}):")
    _print(result.measured, cluster, requests, wall, args.per_instance)
    _print_errors(result.measured, result.errors())
    if predicted is not None:
        _print_side_by_side(result.measured, predicted)
    if args.json_out:
        _write_json(args.json_out, cluster, requests, result, wall, time_scale)
    if args.plot:
        from hetserve.sim.plot import plot_comparison

        plot_comparison(args.plot, result.measured, f"{cluster.name} (live)")
    return 0


async def _deployed_client(args, cluster, time_scale):
    import ray
    from ray import serve

    from hetserve.bench.clients import HandleClient, HttpClient
    from hetserve.bench.deploy import deploy_app, serve_config

    app_args = _app_args(args.app_arg, args.cluster, time_scale)
    if not ray.is_initialized():
        try:
            ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--address: cannot connect to the Ray cluster at {args.address!r} ({exc})") from None
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1"})
    route = "/" if args.target == "http" else None

    def use_policy(name: str) -> None:
        deploy_app(serve_config(args.app_name, app_args, name, args.seed, args.router_replicas, route))
        _wait_policy(args.app_name, name)

    if args.target == "http":
        from ray.serve.context import _get_global_client

        port = _get_global_client().http_config.port
        return HttpClient(f"http://127.0.0.1:{port}", cluster.model.name, args.api_key), use_policy
    # The handle exists once the app does: deploy the first policy now.
    first = (args.policies or "hetero").split(",")[0].strip()
    await asyncio.to_thread(use_policy, first)
    return HandleClient(args.app_name, cluster.model.name), use_policy


def _wait_policy(app_name: str, policy: str, timeout_s: float = 60.0) -> None:
    """Until the router replicas answer with the new policy (a few calls reach several replicas)."""
    from ray import serve

    h = serve.get_deployment_handle("router", app_name=app_name)
    deadline = time.monotonic() + timeout_s
    ok = 0
    while time.monotonic() < deadline and ok < 8:
        ok = ok + 1 if h.plan.remote().result().get("policy") == policy else 0
        time.sleep(0.1)
    if ok < 8:
        raise ConfigError(f"router of {app_name!r} still not running policy {policy!r} after {timeout_s:.0f} s")


def _print_errors(measured: Comparison, errors: list[dict[str, int]]) -> None:
    for run, errs in zip(measured.runs, errors, strict=True):
        if errs:
            print(f"errors, {run.policy} x{run.rate_scale:.3g}: " + ", ".join(f"{k}: {v}" for k, v in errs.items()))


def _print_side_by_side(measured: Comparison, predicted: Comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    t = Table(title="predicted (simulator) vs measured (live), same stream, loads and bound")
    for col in ("policy", "load", "sim /bound", "live /bound", "live/sim", "sim TTFT p99", "live TTFT p99"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for run, live, sim in zip(measured.runs, measured.reports, predicted.reports, strict=True):
        load = f"{run.load:g}" if run.load is not None else f"x{run.rate_scale:.3g}"
        ratio = live.output_tokens_per_s / sim.output_tokens_per_s if sim.output_tokens_per_s else math.nan
        t.add_row(
            run.policy,
            load,
            f"{sim.fraction_of_bound:.3f}",
            f"{live.fraction_of_bound:.3f}",
            f"{ratio:.3f}",
            f"{sim.ttft_s.p99:.2f}s",
            f"{live.ttft_s.p99:.2f}s",
        )
    console.print(t)


def comparison_rows(c: Comparison, errors: list[dict[str, int]] | None = None) -> list[dict[str, Any]]:
    rows = []
    for i, (run, rep) in enumerate(zip(c.runs, c.reports, strict=True)):
        row = {"load": run.load, **rep.to_dict()}
        if errors is not None:
            row["errors"] = errors[i]
        rows.append(row)
    return rows


def _write_json(path, cluster, requests, result, wall, time_scale) -> None:
    doc = {
        "cluster": cluster.name,
        "stream": requests.name,
        "num_requests": len(requests),
        "time_scale": time_scale,
        "offered_bound_output_tokens_per_s": result.measured.offered.output_tokens_per_s,
        "measured": comparison_rows(result.measured, result.errors()),
        "wall_s": wall,
        "max_send_lag_s": [r.max_send_lag_s for r in result.records],
        "predicted": comparison_rows(result.predicted) if result.predicted else None,
    }
    Path(path).write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return float(x)
