"""A live replay as the simulator's `SimResult`, so `sim.report.summarize` computes its metrics.

One definition of every figure (window, throughput, TTFT/TPOT/E2E percentiles, goodput, token
and capacity shares, fraction of the fluid bound) serves the simulator and the live benchmark:
predicted and measured are then comparable by construction. What a client cannot see is marked:
busy time and preemptions are unknown live (NaN / 0); a request's instance is unknown to the
client, so `instance_of` says only served (0) or not (-1), and per-instance tokens come from
the engines' own counters read at the window's two ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hetserve.bench.clients import InstanceCounter
from hetserve.bench.replay import ReplayRecord
from hetserve.records import PlannedInstance
from hetserve.sim.fluid import FluidBound
from hetserve.sim.report import DEFAULT_SLO, SLO, PolicyReport, summarize
from hetserve.sim.simulator import SimResult

__all__ = ["live_instances", "live_report", "live_result"]


def live_instances(
    planned: Sequence[PlannedInstance], counters: Sequence[InstanceCounter], bound: FluidBound
) -> tuple[list[PlannedInstance], FluidBound]:
    """The planned PlannedInstances renamed to the live replicas (matched by deployment, in id order),
    and the bound re-keyed the same way. Raises if the live deployment sizes differ from the plan."""
    by_dep: dict[str, list[PlannedInstance]] = {}
    for spec in planned:
        by_dep.setdefault(spec.deployment, []).append(spec)
    live: list[PlannedInstance] = []
    per = {}
    live_by_dep: dict[str, list[str]] = {}
    for c in counters:
        live_by_dep.setdefault(c.deployment, []).append(c.instance_id)
    for dep, ids in sorted(live_by_dep.items()):
        specs = by_dep.get(dep, [])
        if len(specs) != len(ids):
            raise ValueError(f"deployment {dep!r}: {len(ids)} live replicas, the plan has {len(specs)}")
        for spec, iid in zip(specs, sorted(ids), strict=True):
            live.append(dataclasses.replace(spec, instance_id=iid))
            per[iid] = bound.per_instance[spec.instance_id]
    return live, FluidBound(per)


def live_result(record: ReplayRecord, policy: str, instances: Sequence[PlannedInstance]) -> SimResult:
    before = {c.instance_id: c.total_output_tokens for c in record.counters_at_window[0]}
    after = {c.instance_id: c.total_output_tokens for c in record.counters_at_window[1]}
    window_tokens = np.array(
        [max(0, after.get(s.instance_id, 0) - before.get(s.instance_id, 0)) for s in instances], dtype=float
    )
    served = np.array([e is None for e in record.errors])
    n_inst = len(instances)
    return SimResult(
        policy=policy,
        requests=record.requests,
        instances=list(instances),
        window_s=record.window_s,
        instance_of=np.where(served, 0, -1),
        first_token_s=record.first_token_s,
        finish_s=record.finish_s,
        num_preemptions=np.zeros(len(record.requests), dtype=np.int64),
        window_output_tokens=window_tokens,
        window_busy_s=np.full(n_inst, np.nan),
        total_output_tokens=np.array([after.get(s.instance_id, 0) for s in instances], dtype=float),
        total_busy_s=np.full(n_inst, np.nan),
        end_s=float(np.nanmax(record.finish_s)) if np.any(served) else 0.0,
        num_events=len(record.requests),
        num_steps=0,
    )


def live_report(
    record: ReplayRecord,
    policy: str,
    planned: Sequence[PlannedInstance],
    bound: FluidBound,
    slo: SLO = DEFAULT_SLO,
    rate_scale: float = 1.0,
) -> PolicyReport:
    """`summarize` of the live run against the same bound the simulator uses."""
    instances, live_bound = live_instances(planned, record.counters_at_window[1], bound)
    report = summarize(live_result(record, policy, instances), live_bound, slo, rate_scale=rate_scale)
    # num_rejected counts every failed request live (the client cannot tell a refusal from a loss).
    return report
