"""Discrete-event simulator: the live scheduler and load tracker against emulated instances in
virtual time (plain Python, no ray)."""

from hetserve.records import PlannedInstance
from hetserve.sim.compare import Comparison, RunSpec, compare_policies, offered_bound, rate_scale_for_load
from hetserve.sim.fluid import FluidBound, InstanceCapacity, fluid_bound, saturated_capacity
from hetserve.sim.instances import instances_from_plan
from hetserve.sim.report import DEFAULT_SLO, SLO, LatencyStats, PolicyReport, summarize
from hetserve.sim.simulator import SimConfig, SimResult, Simulator, simulate
from hetserve.sim.workload import SimRequests, poisson_requests, requests_from_trace

__all__ = [
    "DEFAULT_SLO",
    "SLO",
    "Comparison",
    "FluidBound",
    "InstanceCapacity",
    "LatencyStats",
    "PlannedInstance",
    "PolicyReport",
    "RunSpec",
    "SimConfig",
    "SimRequests",
    "SimResult",
    "Simulator",
    "compare_policies",
    "fluid_bound",
    "instances_from_plan",
    "offered_bound",
    "poisson_requests",
    "rate_scale_for_load",
    "requests_from_trace",
    "saturated_capacity",
    "simulate",
    "summarize",
]
