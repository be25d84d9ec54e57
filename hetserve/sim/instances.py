"""Simulated instances: one per planned replica, read from the plan. Plain Python, no ray.

The plan already carries each instance's latency coefficients and KV capacity (the planner priced
it with them), so nothing here recomputes them: the simulator, the emulated engine and the router
all see the same numbers. `with_true_speed` makes an instance whose real speed differs from what
the plan believes, for what-if studies of capacity learning.
"""

from __future__ import annotations

from dataclasses import replace

from hetserve.records import Plan, PlannedInstance

__all__ = ["instances_from_plan", "with_true_speed"]


def instances_from_plan(plan: Plan) -> list[PlannedInstance]:
    """One PlannedInstance per replica of every deployment, ids `<deployment>/<node>/<k>`."""
    out = list(plan.instances())
    if not out:
        raise ValueError(f"plan for {plan.cluster} has no instances")
    return out


def with_true_speed(
    spec: PlannedInstance, factor: float = 1.0, changes: tuple[tuple[float, float], ...] = ()
) -> PlannedInstance:
    """The instance with steps `factor` times slower than its plan believes (factor 3: the plan is
    3x too optimistic; 1/3: 3x too pessimistic), and optional later speed changes."""
    return replace(spec, true_coeffs=spec.coeffs.scaled(factor), speed_changes=tuple(changes))
