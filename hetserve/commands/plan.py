"""`hetserve plan CLUSTER.yaml`: load the cluster, search the placement, print tables or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from hetserve.cluster import load_cluster
from hetserve.planner import Objective, search_plan
from hetserve.planner.plan_file import plan_to_json
from hetserve.planner.render import print_plan

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="choose TP degrees and instances per node for the highest predicted throughput",
        description="Search every node's TP options exhaustively and print the plan and its runners-up.",
    )
    p.add_argument("cluster", metavar="CLUSTER.yaml", help="cluster config (see cluster_configs/)")
    p.add_argument(
        "--objective",
        choices=[o.value for o in Objective],
        default=Objective.THROUGHPUT.value,
        help="throughput: max total tok/s; throughput_slo: the same under the config's slo; "
        "cost: cheapest nodes meeting --target-tokens-per-s; joint: TP choice and class routing together "
        "(a MILP; request lengths from --trace)",
    )
    p.add_argument(
        "--trace",
        default=None,
        metavar="PATH",
        help="request trace (Azure CSV or Mooncake JSONL) whose lengths the joint objective plans for; "
        "with any objective the plan also carries the trace's request classes, priced per deployment, "
        "for policy=hetero_classes",
    )
    p.add_argument(
        "--target-tokens-per-s",
        type=float,
        default=None,
        dest="target_tokens_per_s",
        help="output tokens/s the cost objective must reach",
    )
    p.add_argument(
        "--mixed-partitions",
        action="store_true",
        help="also split a node into instances of different TP (e.g. 4+2+2 on 8 accelerators)",
    )
    p.add_argument(
        "--profiles",
        default=None,
        metavar="FILE",
        help="profile file (from `hetserve profile`) whose profiles take precedence over the shipped ones",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    p.set_defaults(func=run)


def _latency_model(profiles: str | None):
    if profiles is None:
        return None
    from hetserve.profiles.sweep import latency_model_with

    return latency_model_with(profiles)


def run(args: argparse.Namespace) -> int:
    cluster = load_cluster(args.cluster)
    requests = None
    if getattr(args, "trace", None):
        from hetserve.traces import load_trace

        trace = load_trace(args.trace)
        mml = cluster.model.max_model_len
        outputs = trace.output_tokens.clip(1, mml - 1)
        requests = (trace.input_tokens.clip(1, None).clip(None, mml - outputs), outputs)
    plan = search_plan(
        cluster,
        objective=args.objective,
        target_output_tokens_per_s=args.target_tokens_per_s,
        mixed_partitions=args.mixed_partitions,
        latency_model=_latency_model(getattr(args, "profiles", None)),
        requests=requests,
    )
    if requests is not None:
        from hetserve.planner.classes import with_classes

        plan = with_classes(plan, requests[0], requests[1], str(args.trace))
    if args.json:
        json.dump(plan_to_json(plan), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_plan(plan)
    return 0
