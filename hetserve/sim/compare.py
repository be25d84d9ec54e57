"""Compare scheduling policies on one cluster and one request stream, at one or more offered loads.

Definitions used by `hetserve simulate` and benchmarks/scheduling.py:
- measurement window: arrivals from 25% of the stream's span to the last arrival (`SimConfig`);
  it is the same set of requests at every rate scale, because scaling compresses time uniformly.
- offered bound: the fluid bound (sim.fluid) for the requests arriving in that window, unless the
  caller passes one (e.g. computed on one period of a repeated trace).
- load x: rate_scale = x * (offered bound in requests/s) / (stream's mean rate over the window),
  so the window's mean offered rate is x times what the instances could serve saturated.
- `PolicyReport.fraction_of_bound` is against the offered bound; with `run_bounds=True` it is
  against a per-run bound instead: the fluid bound for the requests whose first token came out
  inside the window in that run (the work actually done there), which removes the drift of a
  trace's request mix over the hour from short runs, at the cost of one saturation run per
  instance type per run.
Plain Python, no ray, no clock (wall time is the caller's business).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from hetserve.records import PlannedInstance
from hetserve.scheduling.base import SchedulingPolicy, make_policy
from hetserve.sim.fluid import FluidBound, fluid_bound, requests_started_in_window
from hetserve.sim.report import DEFAULT_SLO, SLO, PolicyReport, summarize
from hetserve.sim.simulator import SimConfig, SimResult, Simulator
from hetserve.sim.workload import SimRequests

# Fewest requests a per-run bound is measured on (the saturation runs need many batch turnovers).
MIN_BOUND_REQUESTS = 200

__all__ = ["Comparison", "RunSpec", "compare_policies", "offered_bound", "rate_scale_for_load", "window_requests"]


def window_requests(requests: SimRequests, config: SimConfig) -> SimRequests:
    """The requests arriving inside the measurement window (independent of the rate scale)."""
    t0, t1 = config.window_for(requests)
    m = (requests.arrival_s >= t0) & (requests.arrival_s <= t1)
    return requests.take(m)


def offered_bound(
    instances: Sequence[PlannedInstance], requests: SimRequests, config: SimConfig, num_requests: int | None = None
) -> FluidBound:
    return fluid_bound(instances, window_requests(requests, config), num_requests)


def rate_scale_for_load(requests: SimRequests, bound: FluidBound, load: float, config: SimConfig) -> float:
    """The rate multiplier that offers `load` times the bound's requests/s over the window."""
    win = window_requests(requests, config)
    return load * bound.requests_per_s / win.requests_per_s


@dataclass(frozen=True)
class RunSpec:
    policy: str
    rate_scale: float
    load: float | None = None  # fraction of the offered bound, when the run was asked that way


@dataclass
class Comparison:
    """Every (policy, load) run of one cluster and stream."""

    stream: str
    num_instances: int
    offered: FluidBound
    reports: list[PolicyReport] = field(default_factory=list)
    runs: list[RunSpec] = field(default_factory=list)
    bounds: list[FluidBound] = field(default_factory=list)  # what each run's fraction_of_bound used

    def report(self, policy: str, load: float | None = None, rate_scale: float | None = None) -> PolicyReport:
        for run, rep in zip(self.runs, self.reports, strict=True):
            if (
                run.policy == policy
                and (load is None or run.load == load)
                and (rate_scale is None or run.rate_scale == rate_scale)
            ):
                return rep
        raise KeyError(f"no run of {policy!r} at load={load} rate_scale={rate_scale}")


PolicyFactory = Callable[[str, int], SchedulingPolicy]


def compare_policies(
    instances: Sequence[PlannedInstance],
    requests: SimRequests,
    policies: Sequence[str],
    loads: Sequence[float] | None = None,
    rate_scales: Sequence[float] | None = None,
    seed: int = 0,
    config: SimConfig | None = None,
    slo: SLO = DEFAULT_SLO,
    bound_requests: int | None = None,
    bound: FluidBound | None = None,
    run_bounds: bool = False,
    make: PolicyFactory = make_policy,
    on_run_start: Callable[[RunSpec, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_run_end: Callable[[RunSpec, PolicyReport, SimResult], None] | None = None,
) -> Comparison:
    """Run every policy at every load (fractions of the offered bound) or rate scale.

    Every run gets a fresh policy built with the same seed and a fresh load tracker, so runs are
    independent and reproducible. Callbacks let a CLI show progress and time runs.
    """
    config = config or SimConfig()
    if (loads is None) == (rate_scales is None):
        raise ValueError("give loads or rate_scales (not both)")
    bound = bound or offered_bound(instances, requests, config, bound_requests)
    points: list[tuple[float, float | None]] = (
        [(rate_scale_for_load(requests, bound, x, config), x) for x in loads]
        if loads is not None
        else [(s, None) for s in rate_scales]  # type: ignore[union-attr]
    )
    out = Comparison(requests.name, len(instances), bound)
    for scale, load in points:
        scaled = requests.scaled(scale)
        for name in policies:
            run = RunSpec(name, scale, load)
            if on_run_start is not None:
                on_run_start(run, len(scaled))
            result = Simulator(instances, make(name, seed), scaled, config, progress=on_progress).run()
            run_bound = bound
            if run_bounds:
                done = requests_started_in_window(result)
                # Too little work in the window to saturate anything: keep the offered bound.
                if len(done) >= MIN_BOUND_REQUESTS:
                    run_bound = fluid_bound(instances, done, bound_requests)
            report = replace(summarize(result, run_bound, slo, rate_scale=scale), policy=name)
            out.runs.append(run)
            out.reports.append(report)
            out.bounds.append(run_bound)
            if on_run_end is not None:
                on_run_end(run, report, result)
    return out
