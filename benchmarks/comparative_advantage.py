"""Comparative advantage, step 1 of issue 12: how far above the mix-average fluid bound could a
class-aware router go?

For each cluster x workload: requests binned into classes by (prompt, output) length; each
configuration (deployment of the throughput plan) saturated in the simulator with one class alone
(mu[j, k], requests/s); the fluid LP (scipy HiGHS) splitting the classes over the configurations
to maximise the rate served in the workload's proportions; that split validated by saturating
each configuration with the class mix the LP gives it. Beside it: the mix-average bound
(sim/fluid.py, every instance on the whole mix), the same-mix LP in the same time-sharing model,
and the model-derived figures (the planner's `steady_state` per class). Writes
comparative_advantage.md next to this script (and every number as JSON with --json).

    python benchmarks/comparative_advantage.py          # ~5 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetserve.cluster import Cluster, load_cluster
from hetserve.model.classes import RequestClasses
from hetserve.planner import search_plan
from hetserve.scheduling import make_policy
from hetserve.scheduling.admission import AdmissionConfig, AdmissionQueue
from hetserve.scheduling.hetero_classes import ClassTable, HeteroClassesPolicy
from hetserve.sim import SimConfig, SimRequests, Simulator, instances_from_plan, requests_from_trace
from hetserve.sim.class_bound import ClassBound, class_bound
from hetserve.sim.compare import window_requests
from hetserve.sim.report import summarize
from hetserve.traces import load_trace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = Path(os.environ.get("HETSERVE_DATA_DIR", ROOT.parent / "shared" / "data"))
AZURE = DATA / "azure2023"
MOONCAKE = DATA / "mooncake"
# Headroom below this (validated class-aware bound over the mix-average bound) is not worth a
# policy: it is within ~3x the bound's own measurement noise (~1%, benchmarks/scheduling.md).
HEADROOM_THRESHOLD = 0.03
# Oracle classes: prompt quartiles x output terciles within each (the true output is known).
ORACLE_BINS = (4, 3)
# Routable classes: what a router sees before the request runs, prompt sextiles x max_tokens halves.
ROUTABLE_BINS = (6, 2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pair:
    cluster: str  # path
    workload: str  # trace name or synthetic:<kind>


PAIRS = [  # in priority order (the script records each pair as it completes)
    Pair("cluster_configs/paper_mixed.yaml", "azure-code"),
    Pair("cluster_configs/paper_mixed.yaml", "azure-conv"),
    Pair("benchmarks/clusters/mixed_long.yaml", "mooncake-conv"),
    Pair("cluster_configs/paper_npu.yaml", "azure-conv"),
    Pair("cluster_configs/paper_npu.yaml", "azure-code"),
    Pair("cluster_configs/paper_mixed.yaml", "mooncake-conv"),
    Pair("cluster_configs/large.yaml", "azure-conv"),
    Pair("cluster_configs/paper_mixed.yaml", "synthetic:bimodal"),
    Pair("benchmarks/clusters/mixed_long.yaml", "synthetic:bimodal"),
    Pair("cluster_configs/paper_npu.yaml", "synthetic:bimodal"),
    Pair("cluster_configs/paper_mixed.yaml", "synthetic:wide"),
    Pair("benchmarks/clusters/mixed_long.yaml", "azure-conv"),
    # The rest of every shipped cluster x held-in trace (round 2).
    Pair("cluster_configs/laptop.yaml", "azure-conv"),
    Pair("cluster_configs/laptop.yaml", "azure-code"),
    Pair("cluster_configs/laptop.yaml", "mooncake-conv"),
    Pair("cluster_configs/paper_npu.yaml", "mooncake-conv"),
    Pair("benchmarks/clusters/mixed_long.yaml", "azure-code"),
    Pair("cluster_configs/large.yaml", "azure-code"),
    Pair("cluster_configs/large.yaml", "mooncake-conv"),
]

WORKLOAD_NOTES = {
    "azure-code": "Azure LLM inference 2023, code (whole hour)",
    "azure-conv": "Azure LLM inference 2023, conversation (whole hour)",
    "mooncake-conv": "Mooncake (Kimi) conversation trace, FAST'25 (prompts clipped to the context)",
    "synthetic:bimodal": "half RAG-like (prompt ~3000, output ~20), half chat-like (prompt ~150, output ~500), lognormal",
    "synthetic:wide": "prompt and output lognormal with sigma 1.5 (means 1000 / 250)",
}


def _lognormal(rng: np.random.Generator, mean: float, sigma: float, size: int) -> np.ndarray:
    x = rng.lognormal(np.log(mean) - sigma * sigma / 2.0, sigma, size)
    return np.maximum(1, np.round(x)).astype(np.int64)


def synthetic(kind: str, max_model_len: int, num: int = 8000, seed: int = 0) -> SimRequests:
    """Mixes with a wider length spread than the traces (all waiting at t=0; only lengths matter)."""
    rng = np.random.default_rng(seed)
    if kind == "bimodal":
        half = num // 2
        prompts = np.concatenate([_lognormal(rng, 3000, 0.3, half), _lognormal(rng, 150, 0.5, num - half)])
        outputs = np.concatenate([_lognormal(rng, 20, 0.5, half), _lognormal(rng, 500, 0.5, num - half)])
    elif kind == "wide":
        prompts, outputs = _lognormal(rng, 1000, 1.5, num), _lognormal(rng, 250, 1.5, num)
    else:
        raise ValueError(f"unknown synthetic mix {kind!r}")
    outputs = np.minimum(outputs, max_model_len // 2)
    prompts = np.maximum(1, np.minimum(prompts, max_model_len - outputs))
    perm = rng.permutation(num)
    prompts, outputs = prompts[perm], outputs[perm]
    max_tokens = np.maximum(outputs, np.minimum(2048, max_model_len - prompts))
    return SimRequests(f"synthetic-{kind}", np.zeros(num), prompts, outputs, max_tokens)


def workload(name: str, cluster: Cluster) -> SimRequests:
    mml = cluster.model.max_model_len
    if name.startswith("synthetic:"):
        return synthetic(name.split(":", 1)[1], mml)
    path = {
        "azure-code": AZURE / "AzureLLMInferenceTrace_code.csv",
        "azure-conv": AZURE / "AzureLLMInferenceTrace_conv.csv",
        "mooncake-conv": MOONCAKE / "conversation_trace.jsonl",
    }[name]
    return requests_from_trace(load_trace(path), mml).shuffled_lengths(seed=0)


def run_pair(pair: Pair) -> dict:
    cluster = load_cluster(ROOT / pair.cluster)
    plan = search_plan(cluster)
    instances = instances_from_plan(plan)
    reqs = workload(pair.workload, cluster)
    t = time.perf_counter()
    oracle = RequestClasses.from_quantiles(reqs.num_prompt_tokens, reqs.num_output_tokens, *ORACLE_BINS)
    b_oracle = class_bound(instances, reqs, oracle)
    routable = RequestClasses.from_quantiles(reqs.num_prompt_tokens, reqs.max_tokens, *ROUTABLE_BINS)
    b_route = class_bound(instances, reqs, routable, labels=routable.assign(reqs.num_prompt_tokens, reqs.max_tokens))
    wall = time.perf_counter() - t
    log(
        f"{cluster.name} / {pair.workload}: mix {b_oracle.mix_measured * b_oracle.mean_output_tokens:,.0f} tok/s, "
        f"class-aware validated {b_oracle.validated * b_oracle.mean_output_tokens:,.0f} "
        f"(headroom {b_oracle.headroom:+.1%}, resampled {b_oracle.headroom_resampled:+.1%}, LP {b_oracle.headroom_lp:+.1%}, "
        f"model {b_oracle.headroom_model:+.1%}); routable {b_route.headroom:+.1%}; {wall:.1f}s"
    )
    return {
        "cluster": cluster.name,
        "cluster_path": pair.cluster,
        "workload": pair.workload,
        "num_requests": len(reqs),
        "num_clipped": reqs.num_clipped,
        "mean_prompt_tokens": reqs.mean_prompt_tokens,
        "mean_output_tokens": reqs.mean_output_tokens,
        "num_instances": len(instances),
        "plan": ", ".join(f"{d.num_instances}x {d.name or d.config.deployment_name}" for d in plan.deployments),
        "wall_s": wall,
        "oracle": _bound_dict(b_oracle),
        "routable": _bound_dict(b_route),
    }


def _bound_dict(b: ClassBound) -> dict:
    d = b.to_dict()
    d["class_mean_prompt"] = b.class_mean_prompt.tolist()
    d["class_mean_output"] = b.class_mean_output.tolist()
    d["mu_sim"] = b.mu_sim.tolist()
    d["mu_model"] = b.mu_model.tolist()
    return d


# Step 2 in the simulator: these pairs, these policies, at these loads of the class-aware bound.
SIM_PAIRS: list[tuple[str, str]] = []  # simulated whatever their headroom (the first rounds had three here)
SIM_POLICIES = ("hetero", "hetero_classes", "pow2")
# What the router knows and how it binds, per run: `routable` = the clients' max_tokens =
# min(2048, context left), classes on prompt x max_tokens; `informed` = each client asks for its
# true output as max_tokens (as `hetserve bench` replays), so the routable classes are the oracle
# ones; `early` = placed on arrival, `late` = the admission queue's late binding (the live default).
VARIANTS: dict[str, tuple[str, ...]] = {
    "routable, early": SIM_POLICIES,
    "routable, late": ("hetero", "hetero_classes"),
    "informed, early": ("hetero", "hetero_classes"),
}
# hetero_classes revision of a run: 1 = the first round's (the plan's rates, re-solved every 500
# requests, adopted at once); 2 = rates at the measured speeds, checked every 100 requests,
# adopted past a 2% hysteresis; 3 = 2 plus hetero's pick while it has a free slot (room_first)
# and, behind the admission queue, the class pull (pick_queued).
POLICY_REV = 3
SATURATION, MODERATE = 1.3, 0.7
# Shortest span of a run, virtual seconds (benchmarks/scheduling.py uses 1800; scaled down to fit
# the shared two-core machine).
MIN_SPAN_S = 300.0


# Pairs below the threshold on both measurements (no target; `--every-pair`): the router's own view,
# placed on arrival, for the table's hetero / hetero_classes / best-baseline row.
BELOW_THRESHOLD_VARIANTS = ("routable, early",)
# Clusters simulated on an exact fraction of their plan: every deployment's instance count divided
# by this (large: 2,240 instances, every count a multiple of 20, so 112 in the same proportions).
# Both bounds are linear in the counts (the LP's and the fluid sum's), so the fractions of the
# bounds compare as for the whole cluster; figures in the tables are the fraction's x the divisor.
SIM_DIVISOR = {"large": 20}
# Variants run per cluster where not all fit the machine (large/20 at 300 s: ~200,000 requests and
# 3-6 min a run): the router's own view, placed on arrival and behind the queue.
SIM_VARIANTS = {"large": ("routable, early", "routable, late")}


def scaled_down(instances: list, divisor: int) -> list:
    """The first 1/divisor of each deployment's instances (refused unless every count divides)."""
    by: dict[str, list] = {}
    for i in instances:
        by.setdefault(i.deployment, []).append(i)
    bad = {d: len(v) for d, v in by.items() if len(v) % divisor}
    if bad:
        raise ValueError(f"instance counts {bad} are not multiples of {divisor}")
    return [i for v in by.values() for i in v[: len(v) // divisor]]


def _headroom(row: dict) -> float:
    """The pair's validated headroom, the lower of the two mix-average measurements (the verdict's)."""
    return min(row["oracle"]["headroom"], row["oracle"]["headroom_resampled"])


def sim_pairs(rows: list[dict], every: bool = False) -> list[tuple[str, str]]:
    """SIM_PAIRS, then every pair whose headroom reaches the threshold on either mix-average
    measurement (a borderline pair is simulated; its targets are required only when both do);
    `every`: then the others too (`BELOW_THRESHOLD_VARIANTS` only)."""
    out = list(SIM_PAIRS)
    for r in rows:
        p = (r["cluster"], r["workload"])
        if _reaches(r) and p not in out:
            out.append(p)
    if every:
        out += [(r["cluster"], r["workload"]) for r in rows if (r["cluster"], r["workload"]) not in out]
    return out


def _reaches(row: dict) -> bool:
    return max(row["oracle"]["headroom"], row["oracle"]["headroom_resampled"]) >= HEADROOM_THRESHOLD


def routable_classes(reqs: SimRequests) -> RequestClasses:
    return RequestClasses.from_quantiles(reqs.num_prompt_tokens, reqs.max_tokens, *ROUTABLE_BINS)


def _table(classes: RequestClasses, b: dict) -> ClassTable:
    return ClassTable(
        classes,
        tuple(b["configs"]),
        np.asarray(b["mu_sim"]),
        np.asarray(b["proportions"]),
        np.asarray(b["class_mean_prompt"]),
        np.asarray(b["class_mean_output"]),
    )


def run_sim(row: dict, min_span_s: float = MIN_SPAN_S) -> dict:
    """Every VARIANTS policy at 1.3x and 0.7x the class-aware bound, one stream per load."""
    cluster = load_cluster(ROOT / row["cluster_path"])
    div = SIM_DIVISOR.get(cluster.name, 1)
    instances = scaled_down(instances_from_plan(search_plan(cluster)), div)
    base = workload(row["workload"], cluster)
    if base.duration_s <= 0:  # a synthetic mix has no arrival process: Poisson (the load sets the rate)
        gaps = np.random.default_rng(1).exponential(1.0, len(base))
        arrival = np.cumsum(gaps) - gaps[0]
        base = SimRequests(base.name, arrival, base.num_prompt_tokens, base.num_output_tokens, base.max_tokens)
    q, o = row["routable"], row["oracle"]
    oracle = RequestClasses.from_quantiles(base.num_prompt_tokens, base.num_output_tokens, *ORACLE_BINS)
    mean_out = base.mean_output_tokens
    class_bound_rps = o["validated_out_tok_s"] / div / mean_out
    win_rate = window_requests(base, SimConfig()).requests_per_s
    runs = []
    for load in (SATURATION, MODERATE):
        # Past saturation the drain only adds the backlog's latencies (not reported at 1.3x); the
        # window's throughput and served mix are the same without it.
        cfg = SimConfig(drain=load < 1.0)
        scale = load * class_bound_rps / win_rate
        copies = max(1, int(np.ceil(min_span_s / (base.duration_s / scale))))
        for variant, names in VARIANTS.items():
            if variant not in SIM_VARIANTS.get(cluster.name, VARIANTS):
                continue
            if not _reaches(row) and variant not in BELOW_THRESHOLD_VARIANTS:
                continue
            informed = variant.startswith("informed")
            reqs = base.tiled(copies).scaled(scale)
            if informed:
                reqs = SimRequests(reqs.name, reqs.arrival_s, reqs.num_prompt_tokens, reqs.num_output_tokens, reqs.num_output_tokens)
            route, b = (oracle, o) if informed else (routable_classes(base), q)
            table = _table(route, b)
            labels = route.assign(reqs.num_prompt_tokens, reqs.max_tokens)
            for name in names:
                policy = HeteroClassesPolicy(0, table) if name == "hetero_classes" else make_policy(name, 0)
                queue = AdmissionQueue(policy, AdmissionConfig(max_queue_requests=10**9)) if variant.endswith("late") else None
                t = time.perf_counter()
                res = Simulator(instances, policy, reqs, cfg, admission=queue).run()
                rep = summarize(res, None, rate_scale=scale)
                tok_s = rep.output_tokens_per_s * div  # the whole cluster's equivalent
                t0, t1 = res.window_s
                arrived = (reqs.arrival_s >= t0) & (reqs.arrival_s <= t1)
                started = (res.first_token_s >= t0) & (res.first_token_s <= t1)
                a = np.bincount(labels[arrived], minlength=route.num_classes).astype(float)
                st = np.bincount(labels[started], minlength=route.num_classes).astype(float)
                ratio = st[a > 0] / a[a > 0]
                wall = time.perf_counter() - t
                runs.append(
                    {
                        "variant": variant,
                        "policy": name,
                        "load": load,
                        "copies": copies,
                        "span_s": float(reqs.duration_s),
                        "num_requests": len(reqs),
                        "output_tokens_per_s": tok_s,
                        "of_class_bound": tok_s / o["validated_out_tok_s"],
                        "of_routable_bound": tok_s / b["validated_out_tok_s"],
                        "of_mix_bound": tok_s / o["mix_measured_out_tok_s"],
                        "divisor": div,
                        "num_instances": len(instances),
                        "ttft_p50_s": rep.ttft_s.p50,
                        "ttft_p99_s": rep.ttft_s.p99,
                        "tpot_p50_s": rep.tpot_s.p50,
                        "mix_skew": float(ratio.max() / ratio.min()),
                        "overflows": getattr(policy, "num_overflows", None),
                        "pulled": getattr(policy, "num_pulled", None),
                        "policy_rev": POLICY_REV,
                        "wall_s": wall,
                    }
                )
                log(
                    f"  {row['cluster']} / {row['workload']} / {variant} / {name} @ {load}: "
                    f"{tok_s:,.0f} tok/s = {runs[-1]['of_class_bound']:.3f} of the class-aware bound, "
                    f"{runs[-1]['of_mix_bound']:.3f} of mix; TTFT p99 {rep.ttft_s.p99:.2f}s; "
                    f"skew {runs[-1]['mix_skew']:.2f}; {wall:.0f}s"
                )
    return {"cluster": row["cluster"], "workload": row["workload"], "runs": runs}


JOINT_CASES = [
    ("cluster_configs/laptop.yaml", "azure-conv"),
    ("cluster_configs/paper_mixed.yaml", "azure-code"),
    ("cluster_configs/paper_mixed.yaml", "azure-conv"),
    ("cluster_configs/paper_npu.yaml", "azure-conv"),
    ("benchmarks/clusters/mixed_long.yaml", "mooncake-conv"),
    ("cluster_configs/large.yaml", "azure-conv"),
]


def run_joint(rows: list[dict]) -> list[dict]:
    """Step 3: the joint MILP beside the exhaustive plan (both priced by the throughput model's
    per-class rates), its solve and whole-plan times, a brute force where it is small, and the
    joint plan's class-aware bound measured in the simulator (`class_bound`, as for the exhaustive
    plan in `rows`), so its gain is checked beyond the model that chose it."""
    bounds = {(r["cluster"], r["workload"]): r["oracle"] for r in rows}
    from hetserve.planner.joint import brute_force, joint_plan, joint_problem, solve_joint

    out = []
    for path, wl in JOINT_CASES:
        cluster = load_cluster(ROOT / path)
        reqs = workload(wl, cluster)
        prompts, outputs = reqs.num_prompt_tokens, reqs.num_output_tokens
        problem = joint_problem(cluster, prompts, outputs)
        sol = solve_joint(problem)
        t, c = time.perf_counter(), time.process_time()
        plan = joint_plan(cluster, prompts, outputs)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        ex = next(r for r in plan.runners_up if r.description.startswith("the exhaustive"))
        single = joint_problem(cluster)
        row = {
            "cluster": cluster.name,
            "workload": wl,
            "joint_out_tok_s": sol.output_tokens_per_s(problem),
            "exhaustive_routed_out_tok_s": ex.output_tokens_per_s,
            "exhaustive_mean_out_tok_s": solve_joint(single).output_tokens_per_s(single),
            "milp_s": sol.solve_s,
            "plan_wall_s": wall,
            "plan_cpu_s": cpu,
            "deployments": ", ".join(f"{d.num_instances}x {d.name}" for d in plan.deployments),
            "num_configs": len(problem.configs),
            "num_classes": int(problem.mu.shape[1]),
            "brute_force_out_tok_s": None,
        }
        combos = 1
        for i, cand in enumerate(problem.cands):
            n, k = cand.pool.num_nodes, len(problem.inst[i])
            combos *= math.comb(n + k, k)
        if combos <= 400:
            row["brute_force_out_tok_s"] = brute_force(problem)[0] * problem.mean_output_tokens
        ex_bound = bounds.get((cluster.name, wl))
        if ex_bound is not None:
            # The default plan is priced on the cluster file's workload means; the same exhaustive
            # search on this trace's means separates what planning for the trace gives from what
            # the joint objective adds.
            means = dataclasses.replace(
                cluster.workload,
                mean_input_tokens=float(reqs.mean_prompt_tokens),
                mean_output_tokens=float(reqs.mean_output_tokens),
            )
            traced = search_plan(dataclasses.replace(cluster, workload=means))
            row["exhaustive_trace_deployments"] = ", ".join(f"{d.num_instances}x {d.name}" for d in traced.deployments)
            row["exhaustive_validated_out_tok_s"] = ex_bound["validated_out_tok_s"]
            row["joint_validated_out_tok_s"] = _validated_bound(plan, ex_bound, reqs)
            row["exhaustive_trace_validated_out_tok_s"] = _validated_bound(traced, ex_bound, reqs)
        log(
            f"joint {cluster.name} / {wl}: {row['joint_out_tok_s']:,.0f} vs exhaustive {ex.output_tokens_per_s:,.0f}; {wall:.2f}s"
        )
        out.append(row)
    return out


def _validated_bound(plan, ex_bound: dict, reqs: SimRequests) -> float:
    """The plan's validated class-aware bound (oracle classes), output tokens/s; the exhaustive
    plan's own measurement where the plan has its deployments."""
    key = sorted((d.name, float(d.num_instances)) for d in plan.deployments)
    if key == sorted(zip(ex_bound["configs"], ex_bound["counts"], strict=True)):
        return float(ex_bound["validated_out_tok_s"])
    oracle = RequestClasses.from_quantiles(reqs.num_prompt_tokens, reqs.num_output_tokens, *ORACLE_BINS)
    b = class_bound(instances_from_plan(plan), reqs, oracle)
    return b.validated * b.mean_output_tokens


def _joint_section(joint: list[dict]) -> str:
    L = ["## Step 3: joint plan (TP choice and class routing in one MILP)\n"]
    L.append(
        "`hetserve plan CLUSTER --objective joint --trace TRACE` (`hetserve.planner.joint`, scipy `milp` / HiGHS): "
        "pools x node options x configurations x classes (oracle classes, prompt quartiles x output terciles), priced by "
        "the throughput model's per-class rates. `exhaustive, routed`: the default exhaustive plan's nodes with the "
        "class LP's routing (the joint optimum can only match or beat it); `exhaustive, mean`: the default plan's "
        "own objective (every instance priced on the workload means; a different workload for the traces). "
        "`brute force`: every split of every pool's nodes over its options, each priced by the class LP (where "
        "that is under 400 combinations; `tests/planner/test_planner_joint.py` checks 5 random small clusters "
        "node by node). Times on this 2-core machine: the MILP alone, and the whole `joint_plan` with its "
        "runners-up (one MILP per alternative).\n"
    )
    L.append(
        "| cluster | workload | configs x classes | joint tok/s | exhaustive, routed | gain | exhaustive, mean | "
        "brute force | simulator: joint / exhaustive class-aware bound | simulator: joint / exhaustive on the "
        "trace's means | MILP s | plan wall s | plan CPU s | joint deployments | exhaustive on the trace's means |"
    )
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---|")
    for r in joint:
        bf = r["brute_force_out_tok_s"]
        gain = r["joint_out_tok_s"] / r["exhaustive_routed_out_tok_s"] - 1
        L.append(
            f"| {r['cluster']} | {r['workload']} | {r['num_configs']} x {r['num_classes']} | {r['joint_out_tok_s']:,.0f} | "
            f"{r['exhaustive_routed_out_tok_s']:,.0f} | {_pct(gain)} | {r['exhaustive_mean_out_tok_s']:,.0f} | "
            f"{'-' if bf is None else f'{bf:,.0f}'} | {_validated(r, 'exhaustive_validated_out_tok_s')} | "
            f"{_validated(r, 'exhaustive_trace_validated_out_tok_s')} | {r['milp_s']:.3f} | {r['plan_wall_s']:.2f} | {r['plan_cpu_s']:.2f} | "
            f"{r['deployments']} | {r.get('exhaustive_trace_deployments', '-')} |"
        )
    L.append(
        "\nThe MILP's figures are the throughput model's. The `simulator` column checks them: the joint plan's "
        "validated class-aware bound (`sim.class_bound`, measured exactly as the exhaustive plan's in the summary) "
        "over the exhaustive plan's; where the joint plan chose the exhaustive plan's deployments the two are "
        "one measurement. The default exhaustive plan is priced on the cluster file's workload means, so the next "
        "column runs the same exhaustive search on the trace's means: the joint objective's own contribution is "
        "the gain over that plan.\n"
    )
    return "\n".join(L) + "\n"


def _validated(r: dict, other: str) -> str:
    j, e = r.get("joint_validated_out_tok_s"), r.get(other)
    if j is None or e is None:
        return "-"
    return f"{j:,.0f} / {e:,.0f} ({_pct(j / e - 1)})"


def decision(rows: list[dict]) -> tuple[bool, str]:
    """Is there >= 3% headroom on any pair that matters (a shipped cluster or a held-in trace)?"""
    worth = [r for r in rows if min(r["oracle"]["headroom"], r["oracle"]["headroom_resampled"]) >= HEADROOM_THRESHOLD]
    if not worth:
        best = max(rows, key=lambda r: min(r["oracle"]["headroom"], r["oracle"]["headroom_resampled"]))
        return False, (
            f"No pair reaches {HEADROOM_THRESHOLD:.0%} headroom (validated class-aware bound over the mix-average bound, "
            f"the lower of the two mix-average measurements): the largest is {best['cluster']} / {best['workload']} at "
            f"{min(best['oracle']['headroom'], best['oracle']['headroom_resampled']):+.1%}. By the issue's rule this "
            "could stop at step 1; the headroom is borderline (and the routable classes' is similar), so steps 2 and 3 "
            "were built and are reported below for what they show, their targets not being required."
        )
    rest = [r for r in rows if r not in worth]
    top = max((min(r["oracle"]["headroom"], r["oracle"]["headroom_resampled"]) for r in rest), default=0.0)
    return True, (
        "Pairs with >= 3% headroom (validated, the lower of the two mix-average measurements): "
        + ", ".join(
            f"{r['cluster']} / {r['workload']} ({min(r['oracle']['headroom'], r['oracle']['headroom_resampled']):+.1%})"
            for r in worth
        )
        + f"; every other pair is below it (at most {top:+.1%}). Each of them is simulated below (synthetic mixes "
        "with Poisson arrivals; `large` on 1/20 of its plan, every deployment's count divided by 20)."
    )


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def write_md(
    path: Path,
    rows: list[dict],
    command: str,
    elapsed_s: float,
    sims: list[dict],
    sim_s: float,
    joint: list[dict],
    live: list[dict] | None = None,
    notes: str = "",
) -> None:
    go, verdict = decision(rows)
    L = ["# Comparative advantage: the class-aware fluid bound beside the mix-average one (simulated)\n"]
    L.append(
        f"Command: `{command}` (bounds {elapsed_s / 60:.1f} min, simulator runs {sim_s / 60:.1f} min wall). "
        f"Machine: {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs (shared with other jobs), Python {platform.python_version()}.\n"
    )
    L.append(f"**Verdict: {verdict}**\n")
    L.append("""## What is measured, precisely

- **Plan**: each cluster planned by `hetserve.planner.search_plan` (throughput objective); one
  *configuration* per deployment (accelerator type x TP), with its instance count.
- **Classes** (`hetserve.model.classes.RequestClasses`): *oracle* = prompt quartiles, then output
  terciles inside each prompt quartile (12 near-equal classes; the true output is known);
  *routable* = prompt sextiles x `max_tokens` halves, what a router sees before a request runs (with the
  clients' `max_tokens = min(2048, context left)` the second split adds little).
- **mu[j, k]**: one instance of configuration j saturated in the simulator with class k alone (every request of
  the class waiting at t=0, `sim.fluid.saturated_capacity`: the same batching loop and measurement as the
  mix-average bound), requests/s = output tokens/s over the class's mean output.
- **Mix-average bound** (`mix`): `sim.fluid.fluid_bound` on the whole workload (every instance on the whole mix),
  the bound that `hetero` reaches at 0.99 (benchmarks/scheduling.md). `mix (resampled)`: the same, each
  configuration saturated with 8,000 requests drawn class by class in the workload's proportions, the
  same drawing as the validation below (so the two share their sampling).
- **Class-aware LP** (`hetserve.model.classes.solve_class_lp`, scipy HiGHS): maximise lambda subject to
  sum_j mu[j,k] x[j,k] >= lambda p_k and sum_k x[j,k] <= n_j. `LP same-mix`: the LP's model with every
  instance on the workload mix (1 / sum_k p_k / mu[j,k] per instance), so `LP gain` is the LP's own headroom.
- **Validated**: each configuration saturated with the class mix the LP gives it (8,000 requests drawn from
  the classes in the LP's proportions); the rate those measured instances serve in the workload's
  proportions (the minimum over classes of served / p_k). **Headroom** = validated / mix - 1 (and / mix
  resampled - 1). The LP assumes an instance serving a mix delivers its time-weighted pure-class rates;
  a real batch mixing long and short requests does a little better than time-sharing (mix > LP same-mix on
  most rows), which is why the validated figure, not the LP's, decides.
- **Model**: the same LP on the throughput model's per-class rates (`model_class_rates`: the planner's batch rule
  B = min(max_num_seqs, KV / (l_in + l_out)) and `steady_state`), for comparison.
- Figures in output tokens/s of the workload's mix (requests/s x the workload's mean output).
- Scale: every workload request is used (no sampling); synthetic mixes 8,000 requests; `large.yaml`
  (thousands of instances) needs only its 14 configurations saturated, no cluster-wide simulation.
""")
    L.append("## Summary (oracle classes)\n")
    L.append(
        "| cluster | workload | instances | mix tok/s | mix (resampled) | LP same-mix | class-aware LP | validated | "
        "**headroom** | vs resampled | LP gain | model gain | routable headroom |"
    )
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        o, q = r["oracle"], r["routable"]
        L.append(
            f"| {r['cluster']} | {r['workload']} | {r['num_instances']} | {o['mix_measured_out_tok_s']:,.0f} | "
            f"{o['mix_resampled_out_tok_s']:,.0f} | {o['mix_sim_out_tok_s']:,.0f} | {o['lp_sim_out_tok_s']:,.0f} | "
            f"{o['validated_out_tok_s']:,.0f} | **{_pct(o['headroom'])}** | {_pct(o['headroom_resampled'])} | "
            f"{_pct(o['headroom_lp'])} | {_pct(o['headroom_model'])} | {_pct(q['headroom'])} |"
        )
    L.append("")
    L.append(_observations(rows))
    if sims:
        L.append(_sim_section(sims, rows))
    if joint:
        L.append(_joint_section(joint))
    if live:
        L.append(_live_section(live, rows))
    if notes:
        L.append("## Notes of this run\n")
        L.append(notes.strip() + "\n")
    for r in rows:
        o = r["oracle"]
        L.append(f"## {r['cluster']} / {r['workload']}\n")
        L.append(
            f"{WORKLOAD_NOTES.get(r['workload'], r['workload'])}: {r['num_requests']:,} requests "
            f"({r['num_clipped']} prompts clipped), mean prompt {r['mean_prompt_tokens']:,.0f}, mean output "
            f"{r['mean_output_tokens']:,.0f}. Plan: {r['plan']}. {r['wall_s']:.0f} s wall for both class sets.\n"
        )
        L.append(
            "LP split (oracle classes): share of each class served by each configuration, and (in brackets) mu, one instance's saturated requests/s on that class alone (simulator):\n"
        )
        cfgs = o["configs"]
        L.append("| class | p | mean prompt | mean out | " + " | ".join(cfgs) + " |")
        L.append("|---|---:|---:|---:|" + "---:|" * len(cfgs))
        mu = np.asarray(o["mu_sim"])
        counts = np.asarray(o["counts"])
        for k, label in enumerate(o["classes"]):
            if o["proportions"][k] <= 0:
                continue
            # Per-instance mu relative to the configuration's mu on the whole mix (its speed on class k
            # against its average): comparative advantage shows as columns moving apart.
            cells = []
            for j in range(len(cfgs)):
                cells.append(f"{o['share'][j][k]:.2f} ({mu[j, k]:.2f}/s)")
            L.append(
                f"| {label} | {o['proportions'][k]:.3f} | {o['class_mean_prompt'][k]:,.0f} | "
                f"{o['class_mean_output'][k]:,.0f} | " + " | ".join(cells) + " |"
            )
        L.append(
            "\nInstances per configuration: "
            + ", ".join(f"{c} x{int(n)}" for c, n in zip(cfgs, counts, strict=True))
            + ".\n"
        )
    path.write_text("\n".join(L) + "\n")


def _sim_section(sims: list[dict], rows: list[dict]) -> str:
    L = ["## Step 2 in the simulator: `hetero_classes` against hetero and the best baseline\n"]
    L.append(
        f"Offered load relative to the **class-aware bound** (validated, oracle classes): {SATURATION}x and {MODERATE}x. "
        f"The trace (lengths shuffled over its arrival times, as in benchmarks/scheduling.md) is replayed back to back "
        "until its span is at least the `span` column's virtual seconds (scheduling.md uses 1800 s; shorter where a "
        "pair's runs would not fit the machine: `--min-span-s`); "
        "window = arrivals from 25% of the span to the last. Simulated: every pair whose headroom reaches 3% on either "
        "mix-average measurement (targets required where both do), in three variants; with `--every-pair` the "
        "pairs below it too, routable early only (no target there). `large` (2,240 instances) runs on 1/20 of its "
        "plan: every deployment's instance count divided by 20 (all are multiples of 20: 112 instances in the "
        "plan's proportions), the load scaled with it, and tok/s reported x 20; both bounds are linear in the "
        "counts, so the fractions compare as for the whole cluster; it runs the two routable variants only (each "
        "run is ~200,000 requests). Past saturation a run stops at the window's end (no drain: the window's "
        "throughput and served mix are the same). Three variants per pair, "
        "each in its own stream of the same arrivals: **routable, early**: the clients' max_tokens = min(2048, "
        "context left), so the router's classes are prompt sextiles x max_tokens halves (their simulator-measured "
        "per-configuration rates), each request placed on arrival; **routable, late**: the same behind the "
        "admission queue with late binding (the live router's default; queue unbounded here); **informed, "
        "early**: each client asks for its true output as max_tokens (as `hetserve bench` replays the traces), "
        "so the router's classes are the oracle ones. `rev` 3 of `hetero_classes`: rates at the online fit's "
        "measured speeds, re-solved every 100 requests from the observed class mix past a 2% hysteresis, "
        "hetero's pick while it has a free batch slot, and behind the queue the class pull (`pick_queued`). "
        "Best baseline: `pow2` (Ray Serve's default; within 0.2% of hetero at saturation in "
        "benchmarks/scheduling.md). `skew`: max/min over the router's classes of (requests started in the window "
        "/ arrived in it); 1.0 = the served mix is the workload's. At a 300 s span every policy reads a few "
        "per cent low against the bounds (benchmarks/scheduling.md, at 1800 s, has hetero at 0.994 of the "
        "mix-average bound on paper-mixed / code): compare the policies with each other, in the same stream.\n"
    )
    L.append(
        "| cluster | workload | span | variant | policy | /class-aware @1.3 | /mix-average @1.3 | /routable bound @1.3 | "
        "skew @1.3 | overflows / pulled @1.3 | p99 TTFT @0.7 | p50 TTFT @0.7 | targets |"
    )
    L.append("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    heads = {(r["cluster"], r["workload"]): _headroom(r) for r in rows}
    for s in sims:
        by = {(r.get("variant", "routable, early"), r["policy"], r["load"]): r for r in s["runs"]}
        head = heads[(s["cluster"], s["workload"])]
        for variant, names in VARIANTS.items():
            for name in names:
                sat, mod = by.get((variant, name, SATURATION)), by.get((variant, name, MODERATE))
                if sat is None or mod is None:
                    continue
                target = ""
                if name == "hetero_classes":
                    ok1 = sat["of_class_bound"] >= 0.97
                    ok2 = sat["of_mix_bound"] - 1 >= head / 2
                    target = f">=0.97 {'ok' if ok1 else 'MISSED'}; >= half headroom {'ok' if ok2 else 'MISSED'}"
                    if head < HEADROOM_THRESHOLD:
                        target += f" (headroom {head:+.1%} < 3%: not required)"
                moved = "-"
                if sat["overflows"] is not None:
                    moved = f"{sat['overflows']} / {sat.get('pulled') or 0}"
                L.append(
                    f"| {s['cluster']} | {s['workload']} | {sat['span_s']:,.0f} s | {variant} | {name} | "
                    f"**{sat['of_class_bound']:.3f}** | {sat['of_mix_bound']:.3f} | "
                    f"{sat['of_routable_bound']:.3f} | {sat['mix_skew']:.2f} | {moved} | "
                    f"{mod['ttft_p99_s']:.2f} s | {mod['ttft_p50_s']:.2f} s | {target} |"
                )
    L.append("")
    for s in sims:
        by = {(r.get("variant", "routable, early"), r["policy"], r["load"]): r for r in s["runs"]}
        parts = []
        for variant in VARIANTS:
            hc, h = by.get((variant, "hetero_classes", SATURATION)), by.get((variant, "hetero", SATURATION))
            hcm, hm = by.get((variant, "hetero_classes", MODERATE)), by.get((variant, "hetero", MODERATE))
            if None in (hc, h, hcm, hm):
                continue
            parts.append(
                f"{variant}: {hc['output_tokens_per_s'] / h['output_tokens_per_s'] - 1:+.1%} over hetero at {SATURATION}x "
                f"(skew {hc['mix_skew']:.2f} vs {h['mix_skew']:.2f}), p99 TTFT at {MODERATE}x {hcm['ttft_p99_s']:.2f} s "
                f"vs {hm['ttft_p99_s']:.2f} s"
            )
        L.append(f"- {s['cluster']} / {s['workload']}: " + "; ".join(parts) + ".")
    L.append("")
    return "\n".join(L) + "\n"


def _live_section(live: list[dict], rows: list[dict]) -> str:
    """`hetserve bench` JSONs (open-loop replay, every policy in one invocation) beside the bounds."""
    heads = {(r["cluster"], r["workload"]): r["oracle"]["headroom"] for r in rows}
    L = ["## Live: `hetserve bench` on an emulated cluster, every policy in one run\n"]
    L.append(
        "The plan carries the trace's request classes (`hetserve plan --trace ... --json`, `Plan.classes`: prompt "
        "quartiles x output terciles, each deployment's per-class rate from the throughput model); the app serves "
        "that plan file (`--app-arg plan=`), so the live router builds `hetero_classes` with its table "
        "(`make_policy(name, seed, classes)`; `/v1/hetserve/plan` shows `request_classes`). The bench replays the "
        "trace open loop through the router's handle and switches only the router between policies. Loads are "
        "`hetserve bench --load`'s: fractions of the **mix-average** fluid bound of the window's requests; "
        "`/class-aware` divides by that bound times (1 + the pair's validated headroom from the tables above). "
        "Each request asks for its trace output length (max_tokens), so the router's classes are the oracle "
        "ones here. **Machine caveat**: emulated engines, Serve, the router and the replayer share this machine's 2 "
        "CPUs (nothing else ran): engines step late when the CPUs are short, and a run's window is short (the "
        "whole invocation must fit the session), so the batches of the slow types are still filling during "
        "part of it; compare within one run only.\n"
    )
    for doc in live:
        head = heads.get((doc["cluster"], doc["pair_workload"]), 0.0)
        L.append(f"### {doc['label']}\n")
        L.append(f"Command: `{doc['command']}`\n")
        L.append(
            f"{doc['cluster']} / {doc['stream']}: {doc['num_requests']:,} requests, time scale {doc['time_scale']:g}; "
            f"fluid (mix-average) bound of the window {doc['offered_bound_output_tokens_per_s']:,.0f} output tok/s "
            f"(emulated); validated class-aware headroom of the pair {_pct(head)}. "
            f"Wall per run: {', '.join(f'{w:.0f}' for w in doc['wall_s'])} s.\n"
        )
        L.append(
            "| load | policy | live tok/s | /mix-average | /class-aware | vs hetero | TTFT p99 | TTFT p50 | errors |"
        )
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---|")
        by = {(m["policy"], m["load"]): m for m in doc["measured"]}
        for m in sorted(doc["measured"], key=lambda m: (-m["load"], m["policy"])):
            h = by.get(("hetero", m["load"]))
            vs = m["output_tokens_per_s"] / h["output_tokens_per_s"] if h and h["output_tokens_per_s"] else math.nan
            errs = ", ".join(f"{k}: {v}" for k, v in (m.get("errors") or {}).items()) or "0"
            name = f"**{m['policy']}**" if m["policy"] == "hetero_classes" else m["policy"]
            L.append(
                f"| {m['load']:g} | {name} | {m['output_tokens_per_s']:,.0f} | {m['fraction_of_bound']:.3f} | "
                f"{m['fraction_of_bound'] / (1 + head):.3f} | {vs:.3f} | {m['ttft_s']['p99']:.2f} s | "
                f"{m['ttft_s']['p50']:.2f} s | {errs} |"
            )
        L.append("")
    return "\n".join(L) + "\n"


def _observations(rows: list[dict]) -> str:
    lines = ["## Observations\n"]
    heads = [r["oracle"]["headroom"] for r in rows]
    lp = [r["oracle"]["headroom_lp"] for r in rows]
    model = [r["oracle"]["headroom_model"] for r in rows]
    lines.append(
        f"- Validated headroom ranges {min(heads) * 100:+.1f}% to {max(heads) * 100:+.1f}% over the pairs; the LP's own gain "
        f"(class-aware over same-mix, in its time-sharing model) {min(lp) * 100:+.1f}% to {max(lp) * 100:+.1f}%; "
        f"the throughput model's {min(model) * 100:+.1f}% to {max(model) * 100:+.1f}%."
    )
    mixing = [r["oracle"]["mix_measured_out_tok_s"] / r["oracle"]["mix_sim_out_tok_s"] - 1 for r in rows]
    lines.append(
        f"- A batch that mixes the classes beats time-sharing them: the measured mix-average bound sits "
        f"{min(mixing) * 100:+.1f}% to {max(mixing) * 100:+.1f}% from the LP's same-mix figure. Part of the LP's gain is "
        "therefore gain over a baseline that is lower than the real one, and it does not survive validation."
    )
    for r in rows:
        if r["cluster"] != "paper-mixed" or r["workload"] != "azure-conv":
            continue
        o = r["oracle"]
        mu, n, p = np.asarray(o["mu_sim"]), np.asarray(o["counts"]), np.asarray(o["proportions"])
        keep = p > 0
        per = 1.0 / (p[keep][None, :] / mu[:, keep]).sum(axis=1)  # one instance on the whole mix
        share = n * per / float(np.dot(n, per))
        f, sl = int(np.argmax(per)), int(np.argmin(per))
        ratio = mu[f, keep] / mu[sl, keep]
        slow = [j for j in range(len(per)) if per[j] < per[f] / 3]
        lines.append(
            f"- Why so little ({r['cluster']} / {r['workload']}): the comparative advantage is real: one "
            f"{o['configs'][f]} instance is {ratio.min():.1f}x to {ratio.max():.1f}x as fast as one {o['configs'][sl]} "
            f"depending on the class (prefill-heavy classes at the low end, long decodes at the high end), but the "
            f"slow types ({', '.join(o['configs'][j] for j in slow)}) hold {share[slow].sum():.0%} of the cluster's "
            "capacity, so moving their work to the classes they are relatively best at moves the total by a few per "
            "cent at most; between the big types the per-class speed ratios are close to constant."
        )
    routable = [r["routable"]["headroom"] for r in rows]
    lines.append(
        f"- Routable classes (prompt and max_tokens only, what a router can see) give {min(routable) * 100:+.1f}% to "
        f"{max(routable) * 100:+.1f}% (validated): what a router could reach without the output length; finer prompt bins "
        "make up for it on the Azure traces, not on Mooncake or the synthetic mixes."
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "comparative_advantage.md"))
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every number as JSON")
    ap.add_argument("--only", default=None, help="comma-separated indices into the pair list (debugging)")
    ap.add_argument("--bounds", default=None, metavar="JSON", help="reuse the bounds of an earlier --json run")
    ap.add_argument(
        "--sims",
        default=None,
        metavar="JSON",
        help="reuse the simulator runs of earlier --json runs (the missing pairs are run unless --no-sim)",
    )
    ap.add_argument("--no-sim", action="store_true", help="bounds only (step 1)")
    ap.add_argument(
        "--live",
        default=None,
        metavar="LABEL=WORKLOAD:JSON,...",
        help="`hetserve bench --json-out` files to report (the bench command beside each, in JSON.cmd)",
    )
    ap.add_argument("--min-span-s", type=float, default=MIN_SPAN_S, help="shortest span of a simulator run")
    ap.add_argument("--notes", default=None, metavar="MD", help="markdown appended as this run's notes")
    ap.add_argument("--sim-only", default=None, metavar="C/W,...", help="run only these cluster/workload sims")
    ap.add_argument("--joint", action="store_true", help="also step 3: the joint MILP plan beside the exhaustive one")
    ap.add_argument("--joint-from", default=None, metavar="JSON", help="reuse the joint-plan rows of an earlier run")
    ap.add_argument("--sim-pairs-only", action="store_true", help="compute bounds only for the simulated pairs")
    ap.add_argument(
        "--every-pair", action="store_true", help="also simulate the pairs below the threshold (routable, early)"
    )
    args = ap.parse_args()
    pairs = PAIRS if args.only is None else [PAIRS[int(i)] for i in args.only.split(",")]
    t = time.perf_counter()
    bounds_s = 0.0
    if args.bounds:
        rows = []
        for f in args.bounds.split(","):
            prev = json.loads(Path(f).read_text())
            rows += prev["bounds"]
            bounds_s += prev["bounds_wall_s"]
        order = {(load_cluster(ROOT / p.cluster).name, p.workload): i for i, p in enumerate(PAIRS)}
        rows.sort(key=lambda r: order.get((r["cluster"], r["workload"]), len(order)))
    else:
        if args.sim_pairs_only:
            names = {p: (load_cluster(ROOT / p.cluster).name, p.workload) for p in pairs}
            pairs = [p for p in pairs if names[p] in SIM_PAIRS]
        rows = []
        for p in pairs:
            rows.append(run_pair(p))
            if args.json:  # record each pair as it completes
                done = {"bounds": rows, "bounds_wall_s": time.perf_counter() - t, "sims": [], "sim_wall_s": 0.0}
                Path(args.json).write_text(json.dumps(done, indent=1, default=float))
        bounds_s = time.perf_counter() - t
    sims: list[dict] = []
    t_sim = time.perf_counter()
    sim_s = 0.0
    if args.sims:
        seen: dict[tuple[str, str], dict] = {}
        for f in args.sims.split(","):
            prev = json.loads(Path(f).read_text())
            for x in prev["sims"]:  # a later file's run of a pair replaces an earlier one
                seen[(x["cluster"], x["workload"])] = x
            sim_s += prev["sim_wall_s"]
        sims = list(seen.values())
    loaded_s = sim_s
    if not args.no_sim:
        by = {(r["cluster"], r["workload"]): r for r in rows}
        done = {(x["cluster"], x["workload"]) for x in sims}
        only = {tuple(x.split("/", 1)) for x in args.sim_only.split(",")} if args.sim_only else None
        for p in sim_pairs(rows, args.every_pair):
            if p in by and p not in done and (only is None or p in only):
                sims.append(run_sim(by[p], args.min_span_s))
                sim_s = loaded_s + time.perf_counter() - t_sim
                if args.json:
                    out = {"bounds": rows, "bounds_wall_s": bounds_s, "sims": sims, "sim_wall_s": sim_s}
                    Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    if args.joint_from:
        joint = json.loads(Path(args.joint_from).read_text())["joint"]
    else:
        joint = run_joint(rows) if args.joint else []
    command = "python benchmarks/comparative_advantage.py " + shlex.join(sys.argv[1:])
    live = []
    for spec in args.live.split(",") if args.live else []:
        label, _, rest = spec.partition("=")
        pair_workload, _, f = rest.partition(":")
        doc = json.loads(Path(f).read_text())
        doc.update(label=label, pair_workload=pair_workload, command=Path(f + ".cmd").read_text().strip())
        live.append(doc)
    if args.json:
        out = {"bounds": rows, "bounds_wall_s": bounds_s, "sims": sims, "sim_wall_s": sim_s, "joint": joint, "live": live}
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    notes = Path(args.notes).read_text() if args.notes else ""
    write_md(Path(args.out), rows, command, bounds_s, sims, sim_s, joint, live, notes)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
