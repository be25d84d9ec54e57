"""How long `search_plan` takes on cluster_configs/large.yaml and as nodes and accelerator types grow.

Writes benchmarks/planner_scale.md. Each figure is the best of --repeats wall-clock runs of
search_plan alone (cluster loading and the latency-model construction are timed separately), on
this machine, for the throughput and cost objectives, with and without mixed partitions.

    .venv/bin/python benchmarks/planner_scale.py [--repeats 5] [--out benchmarks/planner_scale.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable

from hetserve.cluster import Cluster, load_cluster, resolve_cluster
from hetserve.config import ClusterSpec
from hetserve.model import LatencyModel
from hetserve.planner import search_plan

ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT / "cluster_configs" / "large.yaml"
# Twelve types that all hold llama-3.1-70b on a node of 8, fastest to slowest.
TYPES = [
    "H200-SXM-141GB",
    "H100-SXM5-80GB",
    "MI300X",
    "H100-PCIe-80GB",
    "A100-SXM4-80GB",
    "A100-SXM4-40GB",
    "MI250X-OAM",
    "Ascend-910B3",
    "L40S",
    "V100-SXM2-32GB",
    "L4",
    "A10G",
]
NODE_SWEEP = [10, 100, 1_000, 10_000]
TYPE_SWEEP = [2, 4, 6, 8, 10, 12]
COST_FRACTION = 0.5  # cost objective: reach half of the cluster's best rate


def synthetic_cluster(num_nodes: int, num_types: int) -> Cluster:
    """num_nodes nodes spread evenly over the first num_types types; odd types also get 4-GPU nodes
    (two pools per such type), so pools ~ 1.5 x types."""
    entries = []
    per_type, extra = divmod(num_nodes, num_types)
    for i, accel in enumerate(TYPES[:num_types]):
        n = per_type + (1 if i < extra else 0)
        if n == 0:
            continue
        if i % 2 and n >= 2:
            entries.append({"name": f"t{i}-x4", "accelerator": accel, "count": 4, "num_nodes": n // 2})
            n -= n // 2
        entries.append({"name": f"t{i}-x8", "accelerator": accel, "count": 8, "num_nodes": n})
    spec = ClusterSpec.model_validate(
        {
            "name": f"synthetic-{num_nodes}x{num_types}",
            "model": "llama-3.1-70b",
            "workload": {"mean_input_tokens": 1155, "mean_output_tokens": 211, "max_request_tokens": 8192},
            "nodes": entries,
        }
    )
    return resolve_cluster(spec)


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def time_objectives(cluster: Cluster, lm: LatencyModel, repeats: int) -> dict[str, tuple[float, object]]:
    best_rate = search_plan(cluster, latency_model=lm).output_tokens_per_s
    target = COST_FRACTION * best_rate
    runs = {
        "throughput": lambda: search_plan(cluster, latency_model=lm),
        "throughput, mixed": lambda: search_plan(cluster, latency_model=lm, mixed_partitions=True),
        "cost": lambda: search_plan(cluster, "cost", latency_model=lm, target_output_tokens_per_s=target),
        "cost, mixed": lambda: search_plan(
            cluster, "cost", latency_model=lm, target_output_tokens_per_s=target, mixed_partitions=True
        ),
    }
    return {name: best_of(fn, repeats) for name, fn in runs.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "planner_scale.md")
    args = parser.parse_args()

    t_load, cluster = best_of(lambda: load_cluster(LARGE), args.repeats)
    t_lm, lm = best_of(LatencyModel.default, args.repeats)
    large = time_objectives(cluster, lm, args.repeats)
    # The end-to-end figure a user sees: load the YAML, build the latency model, search.
    t_e2e, _ = best_of(lambda: search_plan(load_cluster(LARGE), latency_model=LatencyModel.default()), args.repeats)

    node_rows = []
    for n in NODE_SWEEP:
        c = synthetic_cluster(n, 8)
        res = time_objectives(c, lm, args.repeats)
        node_rows.append((n, 8, len({(x.accelerator, x.count) for x in c.nodes}), res))
    type_rows = []
    for k in TYPE_SWEEP:
        c = synthetic_cluster(1_000, k)
        res = time_objectives(c, lm, args.repeats)
        type_rows.append((1_000, k, len({(x.accelerator, x.count) for x in c.nodes}), res))

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    cols = ["throughput", "throughput, mixed", "cost", "cost, mixed"]
    lines = [
        "# Planner scaling",
        "",
        "Wall time of `hetserve.planner.search_plan` (best of "
        f"{args.repeats} runs, milliseconds) on this machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs shared with other work, Python {platform.python_version()}, "
        f"commit {commit}.",
        "",
        "Command:",
        "",
        "```",
        f".venv/bin/python benchmarks/planner_scale.py --repeats {args.repeats}",
        "```",
        "",
        f"Cost objective: target = {COST_FRACTION:.0%} of the cluster's best predicted rate. "
        "Mixed: nodes may split into instances of different TP (e.g. 4+2+2).",
        "The search time includes the cost objective's runners-up (one extra cover search per pool used).",
        "",
        "## cluster_configs/large.yaml",
        "",
        f"{len(cluster.nodes):,} nodes, {len(cluster.accelerator_types)} accelerator types, "
        f"{sum(n.count for n in cluster.nodes):,} accelerators, model {cluster.model.name}. Target: < 1 s.",
        "",
        "| objective | search_plan ms | instances | predicted output tok/s | $/h |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in cols:
        t, plan = large[name]
        lines.append(
            f"| {name} | {ms(t)} | {sum(d.num_instances for d in plan.deployments):,} | "
            f"{plan.output_tokens_per_s:,.0f} | {plan.price_per_hour:,.2f} |"
        )
    lines += [
        "",
        f"Loading and validating the YAML: {ms(t_load)} ms; building the default latency model: {ms(t_lm)} ms; "
        f"load + model + throughput search end to end: {ms(t_e2e)} ms.",
        "",
        "## Growth with nodes (8 types) and with types (1,000 nodes)",
        "",
        "Synthetic clusters: nodes spread evenly over the first k of "
        f"{', '.join(TYPES)}; every other type also has 4-accelerator nodes, so pools ~ 1.5 x types.",
        "",
        "| nodes | types | pools | " + " | ".join(f"{c} ms" for c in cols) + " |",
        "|---:|---:|---:|" + "---:|" * len(cols),
    ]
    for n, k, pools, res in node_rows + type_rows:
        lines.append(f"| {n:,} | {k} | {pools} | " + " | ".join(ms(res[c][0]) for c in cols) + " |")
    lines += [
        "",
        "Reading: the throughput search is linear in the number of nodes (grouping them into pools and",
        "listing node names) and otherwise depends only on the number of pools, because each",
        "(accelerator, TP, settings) is predicted once. The cost search is an exact DP over cost levels",
        "whose table grows with the price of the cheapest plan (so with node count); see",
        "hetserve/planner/cover.py.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
