"""Capacity-learning scenarios: clusters whose true speed differs from what the plan believes.

Each scenario takes instances as the plan sees them (`coeffs` = the plan's coefficients, the
router's prior; `predicted_tokens_per_s` = the plan's prediction) and gives some of them a
different true speed (`InstanceSpec.true_coeffs`) or a mid-run slowdown (`speed_changes`):
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

from hetserve.records import LatencyCoeffs
from hetserve.sim.instances import InstanceSpec, with_true_speed

__all__ = ["SCENARIOS", "make_scenario"]


def _of_type(specs: Sequence[InstanceSpec], accelerator: str, f: Callable[[InstanceSpec], InstanceSpec]):
    return [f(s) if s.accelerator == accelerator else s for s in specs]


def plan_optimistic(specs: Sequence[InstanceSpec], target: str, change_s: float) -> list[InstanceSpec]:
    return _of_type(specs, target, lambda s: with_true_speed(s, 3.0))


def plan_pessimistic(specs: Sequence[InstanceSpec], target: str, change_s: float) -> list[InstanceSpec]:
    return _of_type(specs, target, lambda s: with_true_speed(s, 1.0 / 3.0))


def mid_run_slowdown(specs: Sequence[InstanceSpec], target: str, change_s: float) -> list[InstanceSpec]:
    first = next(i for i, s in enumerate(specs) if s.accelerator == target)
    return [with_true_speed(s, 1.0, ((change_s, 2.0),)) if i == first else s for i, s in enumerate(specs)]


def roofline_off(specs: Sequence[InstanceSpec], target: str, change_s: float) -> list[InstanceSpec]:
    def off(s: InstanceSpec) -> InstanceSpec:
        c = s.coeffs
        true = LatencyCoeffs(
            a_p=1.5 * c.a_p, b_p=1.5 * c.b_p, a_d=2 * c.a_d, c_d=2 * c.c_d, b_d=2 * c.b_d, q_p=1.5 * c.q_p
        )
        return replace(s, true_coeffs=true)

    return _of_type(specs, target, off)


SCENARIOS: dict[str, Callable[[Sequence[InstanceSpec], str, float], list[InstanceSpec]]] = {
    "plan_optimistic": plan_optimistic,
    "plan_pessimistic": plan_pessimistic,
    "mid_run_slowdown": mid_run_slowdown,
    "roofline_off": roofline_off,
}


def make_scenario(name: str, specs: Sequence[InstanceSpec], target: str, change_s: float = 0.0) -> list[InstanceSpec]:
    """`specs` (as the plan sees them) with scenario `name` applied to accelerator type `target`."""
    try:
        return SCENARIOS[name](specs, target, change_s)
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
