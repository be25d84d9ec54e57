"""Simulated instances: one per planned replica, read from the plan. Plain Python, no ray.

The plan already carries each instance's latency coefficients and KV capacity (the planner priced
it with them), so nothing here recomputes them: the simulator, the emulated engine and the router
all see the same numbers.
"""

from __future__ import annotations

from hetserve.records import Plan, PlannedInstance

__all__ = ["instances_from_plan"]


def instances_from_plan(plan: Plan) -> list[PlannedInstance]:
    """One PlannedInstance per replica of every deployment, ids `<deployment>/<node>/<k>`."""
    out = list(plan.instances())
    if not out:
        raise ValueError(f"plan for {plan.cluster} has no instances")
    return out
