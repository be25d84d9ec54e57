"""Capacity-learning scenarios: clusters whose true speed differs from what the plan believes.

Each scenario takes instances as the plan sees them (`coeffs` = the plan's coefficients, the
router's prior; `predicted_tokens_per_s` = the plan's prediction) and gives some of them a
different true speed (`PlannedInstance.true_coeffs`) or a mid-run slowdown (`speed_changes`):
  plan_optimistic:  every instance of one type runs 3x slower than planned;
  plan_pessimistic: every instance of one type runs 3x faster than planned;
  mid_run_slowdown: one instance slows 2x at `change_s`;
  roofline_off:     one type with no profile: its true steps are 2x the prior's decode cost and
                    1.5x its prefill cost (the roofline prior is off, and not by one factor).
benchmarks/capacity.py and tests/sim/test_sim_capacity.py run them. Plain Python, no ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from hetserve.records import InstanceStats, LatencyCoeffs, PlannedInstance
from hetserve.scheduling import LoadTracker, make_policy
from hetserve.scheduling.admission import AdmissionConfig, AdmissionQueue
from hetserve.sim.instances import with_true_speed
from hetserve.sim.simulator import SimConfig, SimResult, Simulator
from hetserve.sim.workload import SimRequests

__all__ = ["SCENARIOS", "RecordingTracker", "convergence_time_s", "make_scenario", "run_recorded"]


def _of_type(specs: Sequence[PlannedInstance], accelerator: str, f: Callable[[PlannedInstance], PlannedInstance]):
    return [f(s) if s.accelerator == accelerator else s for s in specs]


def plan_optimistic(specs: Sequence[PlannedInstance], target: str, change_s: float) -> list[PlannedInstance]:
    return _of_type(specs, target, lambda s: with_true_speed(s, 3.0))


def plan_pessimistic(specs: Sequence[PlannedInstance], target: str, change_s: float) -> list[PlannedInstance]:
    return _of_type(specs, target, lambda s: with_true_speed(s, 1.0 / 3.0))


def mid_run_slowdown(specs: Sequence[PlannedInstance], target: str, change_s: float) -> list[PlannedInstance]:
    first = next(i for i, s in enumerate(specs) if s.accelerator == target)
    return [with_true_speed(s, 1.0, ((change_s, 2.0),)) if i == first else s for i, s in enumerate(specs)]


def roofline_off(specs: Sequence[PlannedInstance], target: str, change_s: float) -> list[PlannedInstance]:
    def off(s: PlannedInstance) -> PlannedInstance:
        c = s.coeffs
        true = LatencyCoeffs(
            a_p=1.5 * c.a_p, b_p=1.5 * c.b_p, a_d=2 * c.a_d, c_d=2 * c.c_d, b_d=2 * c.b_d, q_p=1.5 * c.q_p
        )
        return replace(s, true_coeffs=true)

    return _of_type(specs, target, off)


SCENARIOS: dict[str, Callable[[Sequence[PlannedInstance], str, float], list[PlannedInstance]]] = {
    "plan_optimistic": plan_optimistic,
    "plan_pessimistic": plan_pessimistic,
    "mid_run_slowdown": mid_run_slowdown,
    "roofline_off": roofline_off,
}


def make_scenario(
    name: str, specs: Sequence[PlannedInstance], target: str, change_s: float = 0.0
) -> list[PlannedInstance]:
    """`specs` (as the plan sees them) with scenario `name` applied to accelerator type `target`."""
    try:
        return SCENARIOS[name](specs, target, change_s)
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


class RecordingTracker(LoadTracker):
    """A LoadTracker that logs every instance's C after each report: (report time, C)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.capacity_log: dict[str, list[tuple[float, float]]] = {}
        self.output_log: list[tuple[float, float]] = []  # (report time, output-length estimate)

    def reconcile(self, instance_id: str, stats: InstanceStats, now_s: float) -> None:
        super().reconcile(instance_id, stats, now_s)
        self._fresh()  # C as of this report (the tracker otherwise recomputes it when read)
        c = self._get(instance_id).view.capacity_tokens_per_s
        self.capacity_log.setdefault(instance_id, []).append((now_s, c))
        self.output_log.append((now_s, self.mean_output_tokens))


def run_recorded(
    specs: Sequence[PlannedInstance],
    policy: str,
    requests: SimRequests,
    config: SimConfig,
    seed: int = 0,
    late_binding: bool = False,
) -> tuple[SimResult, RecordingTracker]:
    """One simulation whose tracker logs C per instance and report; `late_binding`: behind the
    live router's admission queue (scheduling/admission.py, unbounded here), as served live."""
    tracker = RecordingTracker(
        ewma_alpha=config.ewma_alpha,
        default_output_tokens=config.default_output_tokens,
        prefill_weight=config.prefill_weight,
        learn_capacity=config.learn_capacity,
    )
    chosen = make_policy(policy, seed)
    admission: AdmissionQueue[int] | None = (
        AdmissionQueue(chosen, AdmissionConfig(max_queue_requests=1 << 30)) if late_binding else None
    )
    sim = Simulator(specs, chosen, requests, config, tracker=tracker, admission=admission)
    return sim.run(), tracker


def convergence_time_s(
    log: Sequence[tuple[float, float]], truth: float, start_s: float, end_s: float, rtol: float = 0.1
) -> float:
    """Seconds after `start_s` from which C stays within `rtol` of `truth` until `end_s`
    (inf if it never does)."""
    last_bad = start_s
    seen = False
    for t, c in log:
        if t < start_s or t > end_s:
            continue
        seen = True
        if abs(c - truth) > rtol * truth:
            last_bad = t
    if not seen or last_bad >= end_s:
        return float("inf")
    first_good = next((t for t, _ in log if t > last_bad), None)
    return float("inf") if first_good is None or first_good > end_s else first_good - start_s
