"""The placement decision as one pure function: (request, instance views) -> (deployment, replica).

Everything the decision needs is in its arguments (the policy object carries only its own seeded
state), so it can run wherever the views are: in the router replica today, outside the token path
later (a placement service that hands the caller a replica to stream from directly). No ray, no
clock: the time is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hetserve.records import RequestInfo
from hetserve.scheduling.base import InstanceView, SchedulingPolicy

__all__ = ["Placement", "place"]


@dataclass(frozen=True, slots=True)
class Placement:
    deployment: str
    instance_id: str  # the Serve replica's unique id (live) or the simulator's instance id


def place(policy: SchedulingPolicy, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> Placement:
    """The policy's choice among the healthy instances whose KV can hold the request.
    Raises NoInstanceError when there is none."""
    instance_id = policy.select(request, instances, now_s)
    for v in instances:
        if v.instance_id == instance_id:
            return Placement(v.deployment, instance_id)
    raise ValueError(f"policy {policy.name!r} chose {instance_id!r}, which is not among the instances")
