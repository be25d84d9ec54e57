"""Exhaustive placement search over the pools' options, for three objectives, into a Plan.

Plain Python: no ray import. Same inputs give the same plan (pools in PoolKey order, nodes in
cluster order, every tie broken by an explicit key).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike

from hetserve.cluster import Cluster
from hetserve.config import ConfigError
from hetserve.model import LatencyModel
from hetserve.planner.candidates import MICRO_USD, DegreeCheck, NodeOption, PoolCandidates, enumerate_candidates
from hetserve.planner.cover import cheapest_cover
from hetserve.records import DeploymentPlan, InstanceConfig, Plan, RunnerUp

__all__ = ["Objective", "search_plan"]

# Runners-up listed per pool (its best alternatives); the rest would only repeat the pattern.
MAX_ALTERNATIVES_PER_POOL = 3
# Node names shown in one `infeasible` line before it abbreviates.
MAX_NAMES_SHOWN = 6


class Objective(str, Enum):
    """What the planner optimises.

    THROUGHPUT: maximise the summed output tokens/s (the paper's objective).
    THROUGHPUT_SLO: the same with each instance's batch capped so the cluster's TTFT/TPOT SLOs hold.
    COST: the cheapest set of nodes (catalog price_per_hour x accelerators) whose summed output
    tokens/s meets a target; honours the cluster's SLO when it has one.
    JOINT: TP degrees and instances per node chosen together with the routing of request classes
    (a MILP, planner/joint.py), for the rate served in the workload's class mix; the requests'
    lengths come from a trace (`requests=`), else one class of the workload means.
    """

    THROUGHPUT = "throughput"
    THROUGHPUT_SLO = "throughput_slo"
    COST = "cost"
    JOINT = "joint"


def _parse_objective(objective: str | Objective) -> Objective:
    try:
        return Objective(objective)
    except ValueError:
        known = ", ".join(o.value for o in Objective)
        raise ConfigError(f"objective: unknown objective {objective!r}; known: {known}") from None


def _names(names: Sequence[str]) -> str:
    if len(names) <= MAX_NAMES_SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:3])}, ..., {names[-1]} ({len(names)} nodes)"


def _pct(new: float, old: float) -> str:
    return f"{(new - old) / old:+.1%}" if old else "n/a"


def _fits_nowhere(cluster: Cluster, cands: Sequence[PoolCandidates], objective: Objective) -> ConfigError:
    """Name, per accelerator type and node size, why every TP degree was refused."""
    lines = [
        f"model {cluster.model.name} has no feasible configuration on any node of cluster {cluster.name!r}"
        + (" under its SLO" if objective is not Objective.THROUGHPUT and cluster.slo is not None else "")
        + ":"
    ]
    for c in cands:
        why = "; ".join(f"TP{d.tp}: {d.reason}" for d in c.degrees)
        lines.append(f"  {c.pool.label} ({c.pool.num_nodes} node{'s' if c.pool.num_nodes > 1 else ''}): {why}")
    if any("weights need" in d.reason or "KV cache holds" in d.reason for c in cands for d in c.degrees):
        max_tp = max(c.pool.key.count for c in cands)
        lines.append(
            f"  (TP is limited to one node's accelerators, at most {max_tp} here; use larger nodes, "
            "a smaller model or a lower-precision dtype)"
        )
    return ConfigError("\n".join(lines))


def search_plan(
    cluster: Cluster,
    objective: str = "throughput",
    latency_model: LatencyModel | None = None,
    target_output_tokens_per_s: float | None = None,
    mixed_partitions: bool = False,
    requests: tuple[ArrayLike, ArrayLike] | None = None,
) -> Plan:
    """Choose, for every node, how to split it into engine instances (or to leave it idle).

    throughput / throughput_slo: nodes do not interact in the throughput model, so the optimum
    decomposes: every node of a pool takes the pool's best option (exhaustive per pool).
    cost: every used node of a pool takes the pool's best option (same price, most tok/s), and
    `cheapest_cover` searches the per-pool node counts exactly (see planner/cover.py).
    Raises ConfigError when the model fits no node, the objective is unknown, throughput_slo has no
    SLO, or the cost target is missing or unreachable.
    """
    obj = _parse_objective(objective)
    if obj is Objective.JOINT:
        from hetserve.planner.joint import joint_plan

        prompts, outputs = (None, None) if requests is None else (np.asarray(requests[0]), np.asarray(requests[1]))
        return joint_plan(cluster, prompts, outputs, latency_model, mixed_partitions)
    if obj is Objective.THROUGHPUT_SLO and cluster.slo is None:
        raise ConfigError("objective throughput_slo: the cluster config has no `slo:` section (ttft_ms/tpot_ms)")
    if obj is Objective.COST:
        if target_output_tokens_per_s is None:
            raise ConfigError(
                "objective cost: needs a target rate (target_output_tokens_per_s / --target-tokens-per-s)"
            )
        if not target_output_tokens_per_s > 0:
            raise ConfigError(f"target_output_tokens_per_s: must be > 0 (got {target_output_tokens_per_s!r})")
    slo = None if obj is Objective.THROUGHPUT else cluster.slo
    cands = enumerate_candidates(cluster, latency_model or LatencyModel.default(), slo, mixed_partitions)
    if not any(c.options for c in cands):
        raise _fits_nowhere(cluster, cands, obj)

    notes: list[str] = []
    if obj is Objective.COST:
        assert target_output_tokens_per_s is not None  # checked above: the cost objective needs a target
        used, runners_up = _cost_choice(cands, target_output_tokens_per_s, notes)
    else:
        used = [c.pool.num_nodes if c.options else 0 for c in cands]
        runners_up = _throughput_runners_up(cands)
    return _build_plan(cluster, obj, cands, used, runners_up, target_output_tokens_per_s, notes)


def _feasible_items(cands: Sequence[PoolCandidates], exclude: int | None = None) -> tuple[list[int], list]:
    idx = [i for i, c in enumerate(cands) if c.options and i != exclude]
    items = [
        (cands[i].pool.num_nodes, cands[i].price_per_node_micro_usd, cands[i].top.output_tokens_per_s) for i in idx
    ]
    return idx, items


def _cost_choice(cands: Sequence[PoolCandidates], target: float, notes: list[str]) -> tuple[list[int], list[RunnerUp]]:
    idx, items = _feasible_items(cands)
    found = cheapest_cover(items, target)
    if found is None:
        reachable = sum(n * v for n, _, v in items)
        raise ConfigError(
            f"target_output_tokens_per_s: {target:,.0f} tok/s is unreachable on this cluster; "
            f"using every node it predicts {reachable:,.0f} tok/s"
        )
    counts, cost, rate = found.counts, found.cost, found.rate
    if not found.proven_optimal:
        notes.append(
            f"cost search stopped at its budget ({found.method}): the plan meets the target but may not be the cheapest"
        )
    used = [0] * len(cands)
    for i, k in zip(idx, counts, strict=True):
        used[i] = k

    runners: list[RunnerUp] = []
    # Whole-plan alternatives: the cheapest plan that does without one pool it uses.
    for i, k in zip(idx, counts, strict=True):
        if not k:
            continue
        label = cands[i].pool.label
        _, sub_items = _feasible_items(cands, exclude=i)
        alt = cheapest_cover(sub_items, target)
        if alt is None:
            runners.append(
                RunnerUp(f"without the {label} pool", 0.0, f"target {target:,.0f} tok/s unreachable without it")
            )
        else:
            alt_cost, alt_rate = alt.cost, alt.rate
            runners.append(
                RunnerUp(
                    f"without the {label} pool",
                    alt_rate,
                    f"${alt_cost / MICRO_USD:,.2f}/h vs ${cost / MICRO_USD:,.2f}/h ({_pct(alt_cost, cost)})",
                    alt_cost / MICRO_USD,
                )
            )
    runners.sort(key=lambda r: (r.price_per_hour == 0.0, r.price_per_hour, r.description))
    runners += _option_runners_up(cands, used, rate, per_node=True)
    return used, runners


def _throughput_runners_up(cands: Sequence[PoolCandidates]) -> list[RunnerUp]:
    total = sum(c.pool.num_nodes * c.top.output_tokens_per_s for c in cands if c.options)
    used = [c.pool.num_nodes for c in cands]
    return _option_runners_up(cands, used, total, per_node=False)


def _option_runners_up(
    cands: Sequence[PoolCandidates], used: Sequence[int], total: float, per_node: bool
) -> list[RunnerUp]:
    """Per pool: the best other ways to split its nodes, and the TP degrees that cannot run at all.

    Throughput: the whole plan's rate if the pool switched (nodes are independent, so this is
    exactly the best plan with that pool's choice changed). Cost: the rate per node, since a
    slower split would need more nodes.
    """
    feasible: list[RunnerUp] = []
    refused: list[RunnerUp] = []
    for c, k in zip(cands, used, strict=True):
        best = c.best
        if best is not None:
            for alt in c.options[1 : 1 + MAX_ALTERNATIVES_PER_POOL]:
                desc = f"{alt.label} on the {c.pool.label} pool"
                if per_node:
                    new, old = alt.output_tokens_per_s, best.output_tokens_per_s
                    why = f"{new:,.0f} tok/s per node vs {old:,.0f} with {best.label} ({_pct(new, old)})"
                else:
                    new = total - k * (best.output_tokens_per_s - alt.output_tokens_per_s)
                    old = total
                    why = f"{new:,.0f} tok/s vs {old:,.0f} with {best.label} ({_pct(new, old)})"
                feasible.append(RunnerUp(desc, new, why))
        for d in c.degrees:
            if not d.usable:
                refused.append(RunnerUp(f"TP{d.tp} on the {c.pool.label} pool", 0.0, f"infeasible: {d.reason}"))
    feasible.sort(key=lambda r: (-r.output_tokens_per_s, r.description))
    return feasible + refused


def _build_plan(
    cluster: Cluster,
    obj: Objective,
    cands: Sequence[PoolCandidates],
    used: Sequence[int],
    runners_up: Sequence[RunnerUp],
    target: float | None,
    notes: Sequence[str] = (),
) -> Plan:
    """The Plan record of a choice: `used[i]` nodes of pool i run the pool's best option."""
    assignment, idle, price = _assign_nodes(cands, used, target)
    return plan_from_assignment(cluster, obj.value, assignment, runners_up, idle, price, notes)


def plan_from_assignment(
    cluster: Cluster,
    objective: str,
    assignment: dict[str, tuple[PoolCandidates, NodeOption]],
    runners_up: Sequence[RunnerUp],
    idle: Sequence[str],
    price_micro_usd: int,
    notes: Sequence[str] = (),
) -> Plan:
    """The Plan for a node -> (pool, option) assignment (shared by every objective, the joint
    class-aware one included)."""
    return Plan(
        cluster=cluster.name,
        model=cluster.model.name,
        objective=objective,
        deployments=_deployments(cluster, assignment),
        workload=cluster.workload,
        runners_up=tuple(runners_up),
        infeasible=tuple(idle),
        price_per_hour=price_micro_usd / MICRO_USD,
        notes=tuple(notes),
    )


def _assign_nodes(
    cands: Sequence[PoolCandidates], used: Sequence[int], target: float | None
) -> tuple[dict[str, tuple[PoolCandidates, NodeOption]], list[str], int]:
    """Which option each used node runs, why every other node (or accelerator) is idle, and the
    price of the used nodes in micro-USD per hour (a used node is paid whole)."""
    assignment: dict[str, tuple[PoolCandidates, NodeOption]] = {}
    idle: list[str] = []
    price = 0
    for c, k in zip(cands, used, strict=True):
        names = c.pool.node_names
        for name in names[:k]:
            assignment[name] = (c, c.top)
        price += k * c.price_per_node_micro_usd
        if k and c.top.num_idle:
            idle.append(
                f"{_names(names[:k])} ({c.pool.label}): {c.top.num_idle} of {c.pool.key.count} accelerators "
                f"idle each, no usable TP degree fits them ({c.top.label})"
            )
        rest = names[k:]
        if not rest:
            continue
        if c.best is None:
            why = "; ".join(f"TP{d.tp}: {d.reason}" for d in c.degrees)
            idle.append(f"{_names(rest)} ({c.pool.label}): no feasible configuration: {why}")
        else:
            idle.append(f"{_names(rest)} ({c.pool.label}): idle, not needed to reach {target:,.0f} tok/s")
    return assignment, idle, price


def _deployments(
    cluster: Cluster, assignment: dict[str, tuple[PoolCandidates, NodeOption]]
) -> tuple[DeploymentPlan, ...]:
    """One DeploymentPlan per configuration in use, fastest first, nodes in cluster order, each
    carrying the prediction and the coefficients it was priced with. Names are the configuration's
    (`L4-tp1`), with the engine settings appended when two configurations share type and TP."""
    nodes_by_config: dict[InstanceConfig, list[str]] = {}
    degrees: dict[InstanceConfig, DegreeCheck] = {}
    for node in cluster.nodes:
        if node.name not in assignment:
            continue
        c, option = assignment[node.name]
        for tp in option.partition:
            d = c.degree(tp)
            nodes_by_config.setdefault(d.config, []).append(node.name)
            degrees[d.config] = d
    configs = sorted(
        nodes_by_config,
        key=lambda cfg: (
            -degrees[cfg].prediction.output_tokens_per_s,
            cfg.accelerator,
            cfg.tp,
            cfg.max_num_seqs,
            cfg.gpu_memory_utilization,
        ),
    )
    base_names = [cfg.deployment_name for cfg in configs]
    deployments = []
    for cfg, base in zip(configs, base_names, strict=True):
        name = base
        if base_names.count(base) > 1:
            name = f"{base}-seqs{cfg.max_num_seqs}-mem{round(cfg.gpu_memory_utilization * 100)}"
        d = degrees[cfg]
        deployments.append(
            DeploymentPlan(
                cfg,
                tuple(nodes_by_config[cfg]),
                d.prediction,
                name,
                coeffs=d.latency.coeffs,
                coeffs_source=d.latency.source,
                max_num_batched_tokens=cluster.engine.max_num_batched_tokens,
            )
        )
    return tuple(deployments)
