"""Does a plan fit the live Ray cluster? Checked before any deployment is created, so a plan made
for another cluster is refused with what is missing instead of leaving replicas pending forever."""

from __future__ import annotations

from collections.abc import Mapping

from hetserve.catalog import ray_resource_name
from hetserve.config import ConfigError
from hetserve.records import Plan

__all__ = ["check_plan_fits_live_cluster", "missing_for_plan"]


def missing_for_plan(plan: Plan, live_nodes: list[Mapping[str, float]]) -> list[str]:
    """What the plan needs that `live_nodes` (each alive node's total resources) lack, one line
    per problem; empty when it fits.

    Each planned node must map onto a distinct live node holding at least the accelerator units
    the plan puts on it (instances of one node share it: TP devices each, on one Ray node).
    Planned nodes are matched largest demand first to the smallest live node that holds them,
    which finds a matching whenever one exists for a single resource type.
    """
    demand: dict[str, dict[str, int]] = {}  # resource -> planned node -> units
    for dp in plan.deployments:
        res = ray_resource_name(dp.config.accelerator)
        for node, units in dp.node_demand().items():
            per_node = demand.setdefault(res, {})
            per_node[node] = per_node.get(node, 0) + units
    problems = []
    for res, per_node in sorted(demand.items()):
        free = sorted(float(n.get(res, 0.0)) for n in live_nodes if n.get(res, 0.0) > 0)
        have_total = sum(free)
        need_total = sum(per_node.values())
        unplaced = []
        for node, units in sorted(per_node.items(), key=lambda kv: (-kv[1], kv[0])):
            fit = next((i for i, cap in enumerate(free) if cap >= units), None)
            if fit is None:
                unplaced.append(f"{node} ({units:g})")
            else:
                free.pop(fit)
        if unplaced:
            problems.append(
                f"resource {res!r}: the plan needs {need_total:g} units on {len(per_node)} node(s); the live "
                f"cluster has {have_total:g} on {sum(1 for n in live_nodes if n.get(res, 0.0) > 0)} node(s); "
                f"no live node left for planned node(s) {', '.join(unplaced)}"
            )
    return problems


def check_plan_fits_live_cluster(plan: Plan) -> None:
    """Raise ConfigError naming what is missing, when connected to Ray and the plan does not fit.

    Not connected (the builder called outside a Ray job, e.g. to inspect the app graph): no check,
    since asking Ray for its nodes would start a local cluster.
    """
    import ray

    if not ray.is_initialized():
        return
    live = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = missing_for_plan(plan, live)
    if problems:
        raise ConfigError(
            f"plan for cluster {plan.cluster!r} does not fit the live Ray cluster: " + "; ".join(problems)
        )
