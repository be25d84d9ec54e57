"""Scheduling policies and the per-instance load view (plain Python, no ray) shared by the
simulator and the live router."""

from hetserve.scheduling.base import (
    InstanceView,
    NoInstanceError,
    SchedulingPolicy,
    estimate_work,
    make_policy,
    policy_names,
)
from hetserve.scheduling.load import LoadTracker
from hetserve.scheduling.placement import Placement, place

__all__ = [
    "InstanceView",
    "LoadTracker",
    "NoInstanceError",
    "Placement",
    "SchedulingPolicy",
    "estimate_work",
    "make_policy",
    "place",
    "policy_names",
]
