"""`hetserve simulate`: compare scheduling policies on a planned cluster in virtual time.

Thin shell: validate the flags, build the plan (planner) and the request stream (trace or
Poisson), call `hetserve.sim.compare_policies`, render a rich table, and optionally write JSON
and a PNG of throughput and p99 TTFT against offered load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from hetserve.cluster import Cluster, load_cluster
from hetserve.config import ConfigError
from hetserve.planner import search_plan
from hetserve.scheduling import policy_names
from hetserve.sim import (
    SLO,
    Comparison,
    SimConfig,
    SimRequests,
    fluid_bound,
    instances_from_plan,
    poisson_requests,
    requests_from_trace,
)
from hetserve.sim.compare import compare_policies
from hetserve.sim.plot import plot_comparison
from hetserve.traces import load_trace

__all__ = ["TRACE_ALIASES", "register", "resolve_trace", "run"]

# Short names for the traces in the shared data folder (../shared/data next to the repository,
# or $HETSERVE_DATA_DIR).
TRACE_ALIASES = {
    "azure-code": "azure2023/AzureLLMInferenceTrace_code.csv",
    "azure-conv": "azure2023/AzureLLMInferenceTrace_conv.csv",
    "mooncake-conversation": "mooncake/conversation_trace.jsonl",
    "mooncake-synthetic": "mooncake/synthetic_trace.jsonl",
}


def _data_dir() -> Path:
    env = os.environ.get("HETSERVE_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_trace(name: str) -> Path:
    """A trace path, or one of TRACE_ALIASES resolved in the shared data folder."""
    if name in TRACE_ALIASES:
        path = _data_dir() / TRACE_ALIASES[name]
        if not path.is_file():
            raise ConfigError(f"--trace: {name!r} resolves to {path}, which does not exist (set HETSERVE_DATA_DIR)")
        return path
    return Path(name)


def _floats(flag: str, text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers (got {text!r})") from None
    if not values or any(not v > 0 or math.isinf(v) for v in values):
        raise ConfigError(f"{flag}: every value must be a positive number (got {text!r})")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="compare scheduling policies on a planned cluster in a discrete-event simulation",
        description="Plan the cluster, replay a trace (or a Poisson stream) through each policy in virtual "
        "time, and compare throughput, latency, goodput and utilisation against the fluid bound.",
    )
    p.add_argument("--cluster", required=True, metavar="CLUSTER.yaml", help="cluster config (see cluster_configs/)")
    p.add_argument(
        "--trace",
        default=None,
        help=f"trace file (Azure CSV, Mooncake JSONL) or one of {', '.join(TRACE_ALIASES)}; "
        "default: a Poisson stream with the cluster workload's mean lengths",
    )
    p.add_argument(
        "--policies",
        default="hetero,round_robin,pow2,least_requests,weighted_round_robin,random",
        help=f"comma-separated policy names (known: {', '.join(policy_names())})",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--rate-scale",
        default=None,
        dest="rate_scale",
        help="comma-separated multipliers of the stream's arrival rate (a load sweep)",
    )
    load.add_argument(
        "--load",
        default=None,
        help="comma-separated offered loads as fractions of the fluid bound in requests/s, "
        "e.g. 0.7,1.3 (default: 1.0x the stream's own rate)",
    )
    p.add_argument(
        "--num-requests",
        type=int,
        default=None,
        dest="num_requests",
        help="use only the first N requests of the trace (Poisson: how many; default 5000)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="replay the trace N times back to back (saturation runs need minutes of virtual "
        "time to reach steady state; a compressed trace may last less)",
    )
    p.add_argument(
        "--shuffle-lengths",
        action="store_true",
        dest="shuffle_lengths",
        help="permute the trace's (prompt, output) pairs over its arrival times (seeded): the real "
        "arrival pattern and length distribution with a stationary mix, for throughput windows",
    )
    p.add_argument(
        "--run-bounds",
        action="store_true",
        dest="run_bounds",
        help="compare each run with the fluid bound of the work it did in its window (slower; "
        "removes the drift of a trace's request mix from short runs)",
    )
    p.add_argument(
        "--poisson-rate",
        type=float,
        default=1.0,
        dest="poisson_rate",
        help="Poisson stream's base rate, requests/s (before --rate-scale)",
    )
    p.add_argument(
        "--max-tokens-rule",
        choices=["cap", "pow2"],
        default="cap",
        dest="max_tokens_rule",
        help="client max_tokens: cap = min(2048, context left); pow2 = true output rounded up to a power of 2",
    )
    p.add_argument(
        "--slo-ttft-ms",
        type=float,
        default=None,
        dest="slo_ttft_ms",
        help="TTFT objective for goodput (default: the cluster's slo, else 5000)",
    )
    p.add_argument(
        "--slo-tpot-ms",
        type=float,
        default=None,
        dest="slo_tpot_ms",
        help="TPOT objective for goodput (default: the cluster's slo, else 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the policies' generators and the Poisson stream")
    p.add_argument(
        "--reconcile-interval-s",
        type=float,
        default=1.0,
        dest="reconcile_interval_s",
        help="period of the engine-stats reports to the load tracker, virtual seconds",
    )
    p.add_argument(
        "--no-fast-forward",
        action="store_true",
        dest="no_fast_forward",
        help="step every decode step (slower; identical results)",
    )
    p.add_argument(
        "--per-instance",
        action="store_true",
        dest="per_instance",
        help="also print each instance's busy fraction and token share per run",
    )
    p.add_argument("--json-out", default=None, dest="json_out", metavar="PATH", help="write all results as JSON")
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="write a PNG of throughput and p99 TTFT against offered load, one line per policy",
    )
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar")
    p.set_defaults(func=run)


def _stream(args: argparse.Namespace, cluster: Cluster) -> SimRequests:
    max_len = cluster.model.max_model_len
    if args.num_requests is not None and args.num_requests < 1:
        raise ConfigError(f"--num-requests: must be >= 1 (got {args.num_requests})")
    if args.trace is None:
        if not args.poisson_rate > 0:
            raise ConfigError(f"--poisson-rate: must be > 0 (got {args.poisson_rate})")
        wl = cluster.workload
        return poisson_requests(
            args.poisson_rate,
            args.num_requests or 5000,
            wl.mean_input_tokens,
            wl.mean_output_tokens,
            max_len,
            seed=args.seed,
            max_tokens_rule=args.max_tokens_rule,
        )
    reqs = requests_from_trace(load_trace(resolve_trace(args.trace)), max_len, max_tokens_rule=args.max_tokens_rule)
    return reqs.head(args.num_requests) if args.num_requests else reqs


def _repeat(args: argparse.Namespace, requests: SimRequests) -> SimRequests:
    return requests.tiled(args.repeat)


def _shuffle(args: argparse.Namespace, requests: SimRequests) -> SimRequests:
    return requests.shuffled_lengths(args.seed) if args.shuffle_lengths else requests


def _slo(args: argparse.Namespace, cluster: Cluster) -> SLO:
    ttft = args.slo_ttft_ms or (cluster.slo.ttft_ms if cluster.slo and cluster.slo.ttft_ms else 5000.0)
    tpot = args.slo_tpot_ms or (cluster.slo.tpot_ms if cluster.slo and cluster.slo.tpot_ms else 200.0)
    if ttft <= 0 or tpot <= 0:
        raise ConfigError(f"--slo-ttft-ms/--slo-tpot-ms: must be > 0 (got {ttft}, {tpot})")
    return SLO(ttft_s=ttft / 1e3, tpot_s=tpot / 1e3)


def run(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    known = policy_names()
    for name in policies:
        if name not in known:
            raise ConfigError(f"--policies: unknown scheduling policy {name!r}; known: {', '.join(known)}")
    if not policies:
        raise ConfigError("--policies: give at least one policy")
    if args.repeat < 1:
        raise ConfigError(f"--repeat: must be >= 1 (got {args.repeat})")
    if not args.reconcile_interval_s > 0:
        raise ConfigError(f"--reconcile-interval-s: must be > 0 (got {args.reconcile_interval_s})")
    loads = _floats("--load", args.load) if args.load else None
    scales = _floats("--rate-scale", args.rate_scale) if args.rate_scale else (None if loads else [1.0])

    cluster = load_cluster(args.cluster)
    plan = search_plan(cluster)
    instances = instances_from_plan(plan)
    base = _shuffle(args, _stream(args, cluster))
    if len(base) < 2:
        raise ConfigError(f"--num-requests: need at least 2 requests (got {len(base)})")
    requests = _repeat(args, base)
    slo = _slo(args, cluster)
    config = SimConfig(reconcile_interval_s=args.reconcile_interval_s, fast_forward=not args.no_fast_forward)

    wall: list[float] = []
    events: list[int] = []
    show = not args.no_progress and sys.stderr.isatty()
    from rich.progress import TaskID

    from hetserve.commands.progress import progress_bar

    progress = progress_bar(show)
    task_ids: list[TaskID] = []  # the task of the run in progress
    started: list[float] = []

    def on_run_start(run, n):
        label = f"{run.policy} @ " + (f"load {run.load:g}" if run.load is not None else f"x{run.rate_scale:g}")
        task_ids[:] = [progress.add_task(label, total=n)]
        started[:] = [time.perf_counter()]

    def on_progress(done):
        progress.update(task_ids[0], completed=done)

    def on_run_end(run, report, result):
        wall.append(time.perf_counter() - started[0])
        events.append(result.num_events)
        progress.remove_task(task_ids[0])

    with progress:
        # One period of a repeated stream has its whole mix: bound it once, on every request of it.
        bound = fluid_bound(instances, base) if args.repeat > 1 else None
        comparison = compare_policies(
            instances,
            requests,
            policies,
            loads=loads,
            rate_scales=scales,
            seed=args.seed,
            config=config,
            slo=slo,
            bound=bound,
            run_bounds=args.run_bounds,
            on_run_start=on_run_start,
            on_progress=on_progress,
            on_run_end=on_run_end,
        )

    _print(comparison, cluster, requests, wall, args.per_instance)
    if args.json_out:
        _write_json(args.json_out, comparison, cluster, plan, requests, wall, args)
    if args.plot:
        try:
            plot_comparison(args.plot, comparison, cluster.name)
        except ImportError:
            raise ConfigError("--plot: needs matplotlib (pip install 'hetserve[plot]')") from None
    return 0


def _print(
    comparison: Comparison, cluster: Cluster, requests: SimRequests, wall: list[float], per_instance: bool
) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (files, CI logs) gets full-width tables instead of 80 columns of truncation.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    bound = comparison.offered
    console.print(
        f"[bold]{cluster.name}[/]: {comparison.num_instances} instances, stream {requests.name} "
        f"({len(requests)} requests, {requests.num_clipped} prompts clipped to the context); offered bound "
        f"{bound.output_tokens_per_s:,.0f} output tok/s = {bound.requests_per_s:.2f} req/s"
    )
    thr = Table(title="throughput inside the window (no ramp-up, no drain)")
    for col in (
        "policy",
        "load",
        "offered req/s",
        "out tok/s",
        "/bound",
        "total tok/s",
        "req/s",
        "goodput req/s",
        "SLO met",
        "wall s",
    ):
        thr.add_column(col, justify="left" if col == "policy" else "right")
    lat = Table(title=f"latency of the window's arrivals (SLO: TTFT {slo_text(comparison)})")
    for col in (
        "policy",
        "load",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "E2E p50",
        "E2E p99",
        "preempted",
    ):
        lat.add_column(col, justify="left" if col == "policy" else "right")
    for run, rep, w in zip(comparison.runs, comparison.reports, wall, strict=True):
        load = f"{run.load:g}" if run.load is not None else f"x{run.rate_scale:g}"
        thr.add_row(
            rep.policy,
            load,
            f"{rep.offered_requests_per_s:.2f}",
            f"{rep.output_tokens_per_s:,.0f}",
            f"{rep.fraction_of_bound:.3f}",
            f"{rep.total_tokens_per_s:,.0f}",
            f"{rep.requests_per_s:.2f}",
            f"{rep.goodput_requests_per_s:.2f}",
            f"{rep.slo_attainment:.1%}",
            f"{w:.1f}",
        )
        lat.add_row(
            rep.policy,
            load,
            f"{rep.ttft_s.p50:.2f}s",
            f"{rep.ttft_s.p90:.2f}s",
            f"{rep.ttft_s.p99:.2f}s",
            f"{rep.tpot_s.p50 * 1e3:.0f}ms",
            f"{rep.tpot_s.p99 * 1e3:.0f}ms",
            f"{rep.e2e_s.p50:.1f}s",
            f"{rep.e2e_s.p99:.1f}s",
            f"{rep.num_preemptions}",
        )
    console.print(thr)
    console.print(lat)
    if per_instance:
        for run, rep in zip(comparison.runs, comparison.reports, strict=True):
            t = Table(title=f"{rep.policy} @ {run.load if run.load is not None else run.rate_scale:g}: instances")
            for col in ("instance", "busy", "token share", "capacity share", "out tok/s"):
                t.add_column(col, justify="left" if col == "instance" else "right")
            for ir in rep.instances:
                t.add_row(
                    ir.instance_id,
                    f"{ir.busy_fraction:.2f}",
                    f"{ir.token_share:.3f}",
                    f"{ir.capacity_share:.3f}",
                    f"{ir.output_tokens_per_s:,.0f}",
                )
            console.print(t)


def slo_text(comparison: Comparison) -> str:
    slo = comparison.reports[0].slo if comparison.reports else None
    return f"{slo.ttft_s:g} s, TPOT {slo.tpot_s * 1e3:g} ms" if slo else "n/a"


def _write_json(
    path: str,
    comparison: Comparison,
    cluster: Cluster,
    plan,
    requests: SimRequests,
    wall: list[float],
    args: argparse.Namespace,
) -> None:
    def bound_dict(b):
        return {
            "output_tokens_per_s": b.output_tokens_per_s,
            "requests_per_s": b.requests_per_s,
            "total_tokens_per_s": b.total_tokens_per_s,
        }

    doc = {
        "cluster": cluster.name,
        "model": cluster.model.name,
        "stream": requests.name,
        "num_requests": len(requests),
        "num_prompts_clipped": requests.num_clipped,
        "max_tokens_rule": args.max_tokens_rule,
        "seed": args.seed,
        "plan": [
            {
                "deployment": d.name,
                "accelerator": d.config.accelerator,
                "tp": d.config.tp,
                "instances": d.num_instances,
                "predicted_output_tokens_per_s": d.prediction.output_tokens_per_s,
            }
            for d in plan.deployments
        ],
        "offered_bound": bound_dict(comparison.offered),
        "runs": [
            {"load": run.load, "rate_scale": run.rate_scale, "wall_s": w, "run_bound": bound_dict(b), **rep.to_dict()}
            for run, rep, b, w in zip(comparison.runs, comparison.reports, comparison.bounds, wall, strict=True)
        ],
    }
    Path(path).write_text(json.dumps(doc, indent=2, default=float) + "\n")
