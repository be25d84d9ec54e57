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

__all__ = [
    "InstanceView",
    "LoadTracker",
    "NoInstanceError",
    "SchedulingPolicy",
    "estimate_work",
    "make_policy",
    "policy_names",
]
