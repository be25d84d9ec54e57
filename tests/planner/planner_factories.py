"""Shared factories for the planner tests: seeded random small clusters and an independent brute force.

The brute force is written separately from hetserve.planner on purpose (no pools, no pruning, no
cover solver): it enumerates every node's options with itertools and checks every combination.
"""

from __future__ import annotations

import itertools
import random

from hetserve.cluster import Cluster, resolve_cluster
from hetserve.config import ClusterSpec
from hetserve.model import LatencyModel, predict_instance
from hetserve.records import Node

# Accelerators from 16 to 80 GiB and models from 8B to 32B, so TP options vary from node to node.
ACCELERATORS = ["T4", "L4", "A10G", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "Ascend-910B3"]
MODELS = ["llama-3.1-8b", "llama-2-13b", "qwen2.5-32b"]


def random_cluster(seed: int, max_nodes: int = 5, slo: dict | None = None) -> Cluster:
    """A small random heterogeneous cluster (at most `max_nodes` nodes, counts 1, 2 or 4)."""
    rng = random.Random(seed)
    nodes = []
    total = 0
    while total < max_nodes:
        num = rng.randint(1, min(2, max_nodes - total))
        count = rng.choice([1, 2, 4])
        entry: dict = {
            "name": f"n{len(nodes)}",
            "accelerator": rng.choice(ACCELERATORS),
            "count": count,
            "num_nodes": num,
        }
        overrides: dict = {}
        if rng.random() < 0.25:
            overrides["max_num_seqs"] = rng.choice([16, 64])
        if rng.random() < 0.2:
            overrides["tp_degrees"] = [t for t in (1, 2, 4) if count % t == 0 and rng.random() < 0.7] or [count]
        if overrides:
            entry["overrides"] = overrides
        nodes.append(entry)
        total += num
    spec = {
        "name": f"random-{seed}",
        "model": rng.choice(MODELS),
        "workload": {
            "mean_input_tokens": rng.choice([256, 1155, 2000]),
            "mean_output_tokens": rng.choice([64, 211, 500]),
            "max_request_tokens": 4096,
        },
        "engine": {"max_num_seqs": rng.choice([32, 128, 256])},
        "nodes": nodes,
    }
    if slo:
        spec["slo"] = slo
    return resolve_cluster(ClusterSpec.model_validate(spec))


def node_option_rates(cluster: Cluster, node: Node, lm: LatencyModel, slo=None, mixed: bool = False) -> list[float]:
    """Every way to fill the node with instances (each TP degree predicted directly), as tok/s.

    Uniform: count/t instances of TP t for each divisor t. Mixed: any multiset of degrees whose
    sum fits in the count. A used node costs the whole node either way.
    """
    model = cluster.model
    accel = cluster.catalog.accelerator(node.accelerator)

    def rate(tp: int) -> float | None:
        pred = predict_instance(
            model,
            accel,
            lm.coeffs(model, accel, tp),
            tp,
            node.max_num_seqs,
            node.gpu_memory_utilization,
            cluster.engine.reserve_gib,
            cluster.workload,
            slo,
        )
        return pred.output_tokens_per_s if pred.feasible else None

    allowed = [t for t in range(1, node.count + 1) if node.tp_degrees is None or t in node.tp_degrees]
    if mixed:
        # Any multiset fitting in the node (leftover accelerators idle): smaller ones never win.
        shapes = [
            s
            for n in range(1, node.count + 1)
            for s in itertools.combinations_with_replacement(allowed, n)
            if sum(s) <= node.count
        ]
    else:
        shapes = [(t,) * (node.count // t) for t in allowed if node.count % t == 0]
    out = []
    for shape in shapes:
        rates = [rate(t) for t in shape]
        if all(r is not None for r in rates):
            out.append(sum(rates))
    return out


def brute_force_throughput(cluster: Cluster, lm: LatencyModel, slo=None, mixed: bool = False) -> float:
    per_node = [[0.0] + node_option_rates(cluster, n, lm, slo, mixed) for n in cluster.nodes]
    return max(sum(combo) for combo in itertools.product(*per_node))


def brute_force_cost(cluster: Cluster, lm: LatencyModel, target: float, mixed: bool = False) -> float | None:
    """Cheapest $/h over all combinations reaching `target`; a used node costs count x price."""
    per_node = []
    for n in cluster.nodes:
        price = n.count * cluster.catalog.accelerator(n.accelerator).price_per_hour
        per_node.append([(0.0, 0.0)] + [(price, r) for r in node_option_rates(cluster, n, lm, cluster.slo, mixed)])
    best = None
    for combo in itertools.product(*per_node):
        if sum(r for _, r in combo) >= target:
            cost = sum(c for c, _ in combo)
            if best is None or cost < best - 1e-9:
                best = cost
    return best
