"""The request classes a plan carries for class-aware routing (`hetero_classes`).

Binned from a trace's lengths (prompt quartiles, then output terciles inside each: the oracle
layout of benchmarks/comparative_advantage.md; a router reads the output bin off max_tokens) and
priced per deployment by the throughput model's per-class rate (`model.classes.model_class_rates`,
the planner's batch rule and `steady_state`), so the plan is the one place the rates are computed
and the live router reads them from it. Plain Python + numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike

from hetserve.model.classes import RequestClasses, model_class_rates
from hetserve.records import Plan, PlanClasses

__all__ = ["ROUTING_BINS", "plan_classes", "with_classes"]

# Prompt bins x output bins inside each (equal-count quantiles of the trace).
ROUTING_BINS = (4, 3)


def plan_classes(
    plan: Plan, prompts: ArrayLike, outputs: ArrayLike, source: str, bins: tuple[int, int] = ROUTING_BINS
) -> PlanClasses:
    """The classes of the requests (prompt, output lengths) and every deployment's rate on each."""
    p = np.asarray(prompts, dtype=np.int64)
    o = np.asarray(outputs, dtype=np.int64)
    if len(p) == 0 or len(p) != len(o):
        raise ValueError(f"plan classes: need equal, non-empty prompt and output lengths (got {len(p)}, {len(o)})")
    classes = RequestClasses.from_quantiles(p, o, *bins)
    labels = classes.assign(p, o)
    nk = classes.num_classes
    counts = np.bincount(labels, minlength=nk).astype(float)
    present = counts > 0
    mean_in = np.array([p[labels == k].mean() if present[k] else 1.0 for k in range(nk)])
    mean_out = np.array([o[labels == k].mean() if present[k] else 1.0 for k in range(nk)])
    rates = [
        model_class_rates(dp.coeffs, dp.kv_capacity_tokens, dp.config.max_num_seqs, mean_in, mean_out)
        for dp in plan.deployments
    ]
    second = classes.second_edges or tuple(() for _ in range(classes.num_prompt_bins))
    return PlanClasses(
        source=source,
        prompt_edges=tuple(int(e) for e in classes.prompt_edges),
        second_edges=tuple(tuple(int(e) for e in es) for es in second),
        proportions=tuple(float(c) for c in counts / counts.sum()),
        mean_prompt_tokens=tuple(float(x) for x in mean_in),
        mean_output_tokens=tuple(float(x) for x in mean_out),
        deployments=tuple(dp.name for dp in plan.deployments),
        requests_per_s=tuple(tuple(float(x) for x in row) for row in rates),
    )


def with_classes(plan: Plan, prompts: ArrayLike, outputs: ArrayLike, source: str) -> Plan:
    """The plan carrying the classes of these requests (`Plan.classes`)."""
    return dataclasses.replace(plan, classes=plan_classes(plan, prompts, outputs, source))
