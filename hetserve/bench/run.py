"""One benchmark: a request stream at one or more offered loads, through one or more policies, on
one running app; optionally the simulator on the same setup for a prediction beside each run.

Loads are fractions of the fluid bound exactly as in `hetserve simulate` (sim.compare's offered
bound and rate scale, computed once here and handed to both): the live run and its prediction
replay the same requests at the same times against the same bound. Results are `Comparison`s,
the simulator's own type, so tables, JSON and plots are shared with `hetserve simulate`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hetserve.bench.clients import BenchClient
from hetserve.bench.measure import live_report
from hetserve.bench.replay import ReplayRecord, replay
from hetserve.sim import SLO, Comparison, PlannedInstance, SimConfig, SimRequests
from hetserve.sim.compare import RunSpec, compare_policies, offered_bound, rate_scale_for_load
from hetserve.sim.fluid import FluidBound

__all__ = ["BenchPoint", "BenchResult", "offered_points", "predict", "run_bench"]


@dataclass(frozen=True)
class BenchPoint:
    rate_scale: float
    load: float | None  # fraction of the offered bound, when asked that way


@dataclass
class BenchResult:
    measured: Comparison
    predicted: Comparison | None = None
    records: list[ReplayRecord] = field(default_factory=list)

    def errors(self) -> list[dict[str, int]]:
        return [r.errors_by_kind for r in self.records]


def offered_points(
    instances: Sequence[PlannedInstance],
    requests: SimRequests,
    loads: Sequence[float] | None,
    rate_scales: Sequence[float] | None,
    config: SimConfig,
    bound: FluidBound | None = None,
) -> tuple[FluidBound, list[BenchPoint]]:
    """The offered bound of the stream's window and the rate scale of each load (sim.compare's)."""
    bound = bound or offered_bound(instances, requests, config)
    if loads is not None:
        return bound, [BenchPoint(rate_scale_for_load(requests, bound, x, config), x) for x in loads]
    return bound, [BenchPoint(s, None) for s in (rate_scales or [1.0])]


def predict(
    instances: Sequence[PlannedInstance],
    requests: SimRequests,
    policies: Sequence[str],
    points: Sequence[BenchPoint],
    bound: FluidBound,
    config: SimConfig,
    slo: SLO,
    seed: int = 0,
) -> Comparison:
    """The simulator on the same stream, scales and bound, one run per (point, policy)."""
    out = Comparison(requests.name, len(instances), bound)
    for p in points:
        c = compare_policies(
            instances, requests, policies, rate_scales=[p.rate_scale], seed=seed, config=config, slo=slo, bound=bound
        )
        for run, rep, b in zip(c.runs, c.reports, c.bounds, strict=True):
            out.runs.append(RunSpec(run.policy, run.rate_scale, p.load))
            out.reports.append(rep)
            out.bounds.append(b)
    return out


async def run_bench(
    client: BenchClient,
    instances: Sequence[PlannedInstance],
    requests: SimRequests,
    policies: Sequence[str],
    points: Sequence[BenchPoint],
    bound: FluidBound,
    slo: SLO,
    time_scale: float,
    use_policy: Callable[[str], Any] | None = None,
    config: SimConfig | None = None,
    on_run_start: Callable[[RunSpec, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_run_end: Callable[[RunSpec, ReplayRecord], None] | None = None,
    settle_s: float = 0.0,
) -> BenchResult:
    """Replay every point through every policy; `use_policy(name)` switches the app (blocking
    call, run in a thread) before each run; None: the app's current policy, one name only."""
    config = config or SimConfig()
    measured = Comparison(requests.name, len(instances), bound)
    result = BenchResult(measured)
    for p in points:
        scaled = requests.scaled(p.rate_scale)
        window = config.window_for(scaled)
        for name in policies:
            if use_policy is not None:
                await asyncio.to_thread(use_policy, name)
            if settle_s > 0:
                await asyncio.sleep(settle_s)
            run = RunSpec(name, p.rate_scale, p.load)
            if on_run_start is not None:
                on_run_start(run, len(scaled))
            t0 = time.monotonic()
            record = await replay(client, scaled, window, time_scale, on_progress)
            record.wall_s = time.monotonic() - t0
            report = live_report(record, name, instances, bound, slo, rate_scale=p.rate_scale)
            measured.runs.append(run)
            measured.reports.append(report)
            measured.bounds.append(bound)
            result.records.append(record)
            if on_run_end is not None:
                on_run_end(run, record)
    return result
