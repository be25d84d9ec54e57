"""Joint plan: TP degrees and instances per node chosen together with the class routing (a MILP).

The exhaustive search (planner/search.py, the default) prices every configuration on the
workload's mean request and sums. When requests differ in kind (long prompts, long outputs) an
accelerator type's best TP degree can depend on which requests it will serve: a TP8 instance with
a large KV cache may be worth more on long requests than two TP4 instances that are faster on short
ones. The MILP:

    max lambda
    s.t. sum_o y[i,o] <= N_i                                  (pool i's nodes; y integer)
         sum_k x[c,k] <= sum_o inst[i,o,c] * y[i,o]           (configuration c's instance time)
         sum_c mu[c,k] * x[c,k] >= lambda * p_k                (every class served in proportion)

over pools i x node options o (the planner's candidates) x configurations c (pool, TP) x classes
k; mu[c,k] is one instance of c saturated with class k alone, from the throughput model
(`model.classes.model_class_rates`, the planner's batch rule and steady state). Solved with scipy's
HiGHS (`scipy.optimize.milp`). With one class it is the exhaustive search's objective. Plain
Python, no ray.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hetserve.cluster import Cluster
from hetserve.model import LatencyModel
from hetserve.model.classes import RequestClasses, model_class_rates, solve_class_lp
from hetserve.planner.candidates import NodeOption, PoolCandidates, enumerate_candidates
from hetserve.records import Plan, RunnerUp

__all__ = ["JointProblem", "JointSolution", "brute_force", "joint_plan", "joint_problem", "solve_joint"]

# Runners-up per pool: the joint optimum with the pool's choice forced to each of its other options.
MAX_ALTERNATIVES_PER_POOL = 3


@dataclass(frozen=True)
class JointProblem:
    """The MILP's data. configs[c] = (pool index, TP); inst[i][o] maps config index -> instances per node."""

    cands: tuple[PoolCandidates, ...]
    configs: tuple[tuple[int, int], ...]
    inst: tuple[tuple[dict[int, int], ...], ...]
    mu: np.ndarray  # [config, class] requests/s per instance
    proportions: np.ndarray
    mean_output_tokens: float
    classes: RequestClasses


@dataclass(frozen=True)
class JointSolution:
    requests_per_s: float
    nodes: tuple[tuple[int, ...], ...]  # per pool, nodes per option (in option order)
    share: np.ndarray  # [config, class]: fraction of class k served by configuration c
    solve_s: float

    def output_tokens_per_s(self, problem: JointProblem) -> float:
        return self.requests_per_s * problem.mean_output_tokens


def joint_problem(
    cluster: Cluster,
    prompts: np.ndarray | None = None,
    outputs: np.ndarray | None = None,
    latency_model: LatencyModel | None = None,
    classes: RequestClasses | None = None,
    mixed_partitions: bool = False,
) -> JointProblem:
    """Candidates and per-class rates. Without requests, one class of the cluster's workload means
    (then the MILP's optimum is the exhaustive search's)."""
    lm = latency_model or LatencyModel.default()
    cands = enumerate_candidates(cluster, lm, None, mixed_partitions)
    wl = cluster.workload
    if prompts is None or outputs is None:
        prompts = np.array([round(wl.mean_input_tokens)])
        outputs = np.array([round(wl.mean_output_tokens)])
        classes = RequestClasses(())
    prompts, outputs = np.asarray(prompts), np.asarray(outputs)
    classes = classes or RequestClasses.from_quantiles(prompts, outputs, 4, 3)
    labels = classes.assign(prompts, outputs)
    nk = classes.num_classes
    counts = np.bincount(labels, minlength=nk).astype(float)
    present = counts > 0
    p = counts[present] / counts.sum()
    mean_in = np.array([prompts[labels == k].mean() for k in range(nk) if present[k]])
    mean_out = np.array([outputs[labels == k].mean() for k in range(nk) if present[k]])

    configs: list[tuple[int, int]] = []
    rows: list[np.ndarray] = []
    inst: list[tuple[dict[int, int], ...]] = []
    for i, c in enumerate(cands):
        index: dict[int, int] = {}
        for d in c.degrees:
            if not d.usable:
                continue
            index[d.tp] = len(configs)
            configs.append((i, d.tp))
            rows.append(
                model_class_rates(
                    d.latency.coeffs,  # the coefficients the candidate was priced with
                    d.prediction.kv_capacity_tokens,
                    d.config.max_num_seqs,
                    mean_in,
                    mean_out,
                )
            )
        inst.append(tuple({index[t]: opt.partition.count(t) for t in set(opt.partition)} for opt in c.options))
    mu = np.vstack(rows) if rows else np.zeros((0, len(p)))
    return JointProblem(tuple(cands), tuple(configs), tuple(inst), mu, p, float(outputs.mean()), classes)


def solve_joint(problem: JointProblem, fixed: dict[int, tuple[int, ...]] | None = None) -> JointSolution:
    """The MILP (module doc); `fixed` pins pools' node counts per option (for runners-up)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    t0 = time.perf_counter()
    ny = [len(opts) for opts in problem.inst]
    y_off = np.concatenate([[0], np.cumsum(ny)]).astype(int)
    n_y = int(y_off[-1])
    nc, nk = problem.mu.shape
    n_x = nc * nk
    nv = n_y + n_x + 1
    lam = nv - 1
    cost = np.zeros(nv)
    cost[lam] = -1.0
    rows, lo, hi = [], [], []
    for i, c in enumerate(problem.cands):  # nodes per pool
        r = np.zeros(nv)
        r[y_off[i] : y_off[i + 1]] = 1.0
        rows.append(r)
        lo.append(0.0)
        hi.append(float(c.pool.num_nodes))
    for ci in range(nc):  # instance time per configuration
        r = np.zeros(nv)
        r[n_y + ci * nk : n_y + (ci + 1) * nk] = 1.0
        i = problem.configs[ci][0]
        for o, per in enumerate(problem.inst[i]):
            r[y_off[i] + o] = -float(per.get(ci, 0))
        rows.append(r)
        lo.append(-np.inf)
        hi.append(0.0)
    for k in range(nk):  # class coverage
        r = np.zeros(nv)
        for ci in range(nc):
            r[n_y + ci * nk + k] = -problem.mu[ci, k]
        r[lam] = problem.proportions[k]
        rows.append(r)
        lo.append(-np.inf)
        hi.append(0.0)
    lb = np.zeros(nv)
    ub = np.full(nv, np.inf)
    for i, c in enumerate(problem.cands):
        ub[y_off[i] : y_off[i + 1]] = c.pool.num_nodes
    for i, counts in (fixed or {}).items():
        lb[y_off[i] : y_off[i + 1]] = counts
        ub[y_off[i] : y_off[i + 1]] = counts
    integrality = np.zeros(nv)
    integrality[:n_y] = 1
    res = milp(
        cost,
        constraints=LinearConstraint(np.vstack(rows), lo, hi),
        integrality=integrality,
        bounds=Bounds(lb, ub),
    )
    if res.x is None:
        raise ValueError(f"joint plan MILP failed: {res.message}")
    y = np.round(res.x[:n_y]).astype(int)
    nodes = tuple(tuple(int(v) for v in y[y_off[i] : y_off[i + 1]]) for i in range(len(ny)))
    x = np.maximum(res.x[n_y : n_y + n_x].reshape(nc, nk), 0.0)
    rates = problem.mu * x
    served = rates.sum(axis=0)
    share = np.divide(rates, served, out=np.zeros_like(rates), where=served > 0)
    return JointSolution(float(res.x[lam]), nodes, share, time.perf_counter() - t0)


def _value_of(problem: JointProblem, nodes: Sequence[Sequence[int]]) -> float:
    """The class LP's optimum (requests/s) for a fixed choice of nodes per option."""
    counts = np.zeros(len(problem.configs))
    for i, per_opt in enumerate(nodes):
        for o, k in enumerate(per_opt):
            for ci, n in problem.inst[i][o].items():
                counts[ci] += k * n
    keep = counts > 0
    if not keep.any():
        return 0.0
    return solve_class_lp(problem.mu[keep], counts[keep], problem.proportions).requests_per_s


def brute_force(problem: JointProblem) -> tuple[float, tuple[tuple[int, ...], ...]]:
    """Every way to give each pool's nodes to its options (idle allowed), each priced by the class
    LP; for checking the MILP on small clusters only (exponential)."""

    def splits(n: int, k: int):
        if k == 0:
            yield ()
            return
        for a in range(n + 1):
            for rest in splits(n - a, k - 1):
                yield (a, *rest)

    per_pool = [list(splits(c.pool.num_nodes, len(problem.inst[i]))) for i, c in enumerate(problem.cands)]
    best, arg = -1.0, None
    for combo in itertools.product(*per_pool):
        v = _value_of(problem, combo)
        if v > best:
            best, arg = v, combo
    return best, arg  # type: ignore[return-value]


def joint_plan(
    cluster: Cluster,
    prompts: np.ndarray | None = None,
    outputs: np.ndarray | None = None,
    latency_model: LatencyModel | None = None,
    mixed_partitions: bool = False,
) -> Plan:
    """The joint plan as a Plan: deployments, runners-up (the exhaustive plan; each pool forced to
    its other options) and the class routing in the notes."""
    from hetserve.planner.search import plan_from_assignment

    problem = joint_problem(cluster, prompts, outputs, latency_model, mixed_partitions=mixed_partitions)
    sol = solve_joint(problem)
    total = sol.output_tokens_per_s(problem)
    assignment: dict[str, tuple[PoolCandidates, NodeOption]] = {}
    idle: list[str] = []
    price = 0
    for i, c in enumerate(problem.cands):
        names = list(c.pool.node_names)
        at = 0
        for o, k in enumerate(sol.nodes[i]):
            for name in names[at : at + k]:
                assignment[name] = (c, c.options[o])
            at += k
        price += at * c.price_per_node_micro_usd
        if names[at:]:
            idle.append(f"{', '.join(names[at:][:3])}{'...' if len(names) - at > 3 else ''} ({c.pool.label}): idle")
    runners: list[RunnerUp] = []
    # The exhaustive search's choice (every node its pool's best option on the mean request).
    best_nodes = tuple(((c.pool.num_nodes,) + (0,) * (len(c.options) - 1)) if c.options else () for c in problem.cands)
    ex = _value_of(problem, best_nodes) * problem.mean_output_tokens
    runners.append(
        RunnerUp(
            "the exhaustive (mean-request) plan, routed by class",
            ex,
            f"{ex:,.0f} tok/s vs {total:,.0f} joint ({(ex - total) / total:+.1%})",
        )
    )
    for i, c in enumerate(problem.cands):
        chosen = sol.nodes[i]
        for o in range(min(len(c.options), MAX_ALTERNATIVES_PER_POOL + 1)):
            alt = tuple(c.pool.num_nodes if q == o else 0 for q in range(len(c.options)))
            if alt == chosen:
                continue
            v = solve_joint(problem, {i: alt}).output_tokens_per_s(problem)
            runners.append(
                RunnerUp(
                    f"{c.options[o].label} on every node of the {c.pool.label} pool",
                    v,
                    f"{v:,.0f} tok/s vs {total:,.0f} ({(v - total) / total:+.1%})",
                )
            )
    runners.sort(key=lambda r: -r.output_tokens_per_s)
    notes = [
        f"joint objective: {total:,.0f} output tok/s in the workload's class mix "
        f"({sol.requests_per_s:.2f} req/s; MILP {sol.solve_s * 1e3:.0f} ms, "
        f"{len(problem.configs)} configurations x {problem.mu.shape[1]} classes)"
    ]
    for ci, (i, tp) in enumerate(problem.configs):
        sh = sol.share[ci]
        if sh.sum() > 0:
            notes.append(
                f"routing: {problem.cands[i].pool.label} TP{tp} serves "
                + ", ".join(f"{s:.0%} of class {k}" for k, s in enumerate(sh) if s > 0.005)
            )
    return plan_from_assignment(cluster, "joint", assignment, runners, idle, price, notes)
