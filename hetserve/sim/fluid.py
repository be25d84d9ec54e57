"""The fluid bound: what the cluster could deliver if no instance ever idled.

Each distinct instance configuration is saturated alone in the simulator (every request of the
workload, or of an even sample of it, waiting at t=0 in arrival order, repeated when one pass is
too short for the batch mix to settle) and its steady throughput is measured over the saturated
span, excluding the ramp-up (first 10%, or until the mix settled) and the drain (after the last
request was admitted). Sampling is cheaper but noisy: with the traces' heavy-tailed output
lengths the mean output of 2,000 requests is off by ~3%, and output tokens/s with it. The
bound is the sum over the cluster's instances. It bounds every policy that gives each instance a
share of the same request mix; a policy that sorted requests by shape onto the instances whose
prefill/decode speed ratio favours them can beat it: sim/class_bound.py measures that class-aware
bound and `hetero_classes` routes for it.
Plain Python, no ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hetserve.records import PlannedInstance
from hetserve.scheduling.policies import RoundRobinPolicy
from hetserve.sim.simulator import SimConfig, SimResult, Simulator
from hetserve.sim.workload import SimRequests

__all__ = ["FluidBound", "InstanceCapacity", "fluid_bound", "relaxation_fraction", "saturated_capacity"]

RAMP_FRACTION = 0.1
# Most repetitions of the request list in one saturation run (cost grows linearly).
MAX_COPIES = 8


@dataclass(frozen=True, slots=True)
class InstanceCapacity:
    """One instance's saturated throughput on a workload."""

    output_tokens_per_s: float
    requests_per_s: float
    total_tokens_per_s: float  # prompt + output tokens of the requests it completes


@dataclass(frozen=True)
class FluidBound:
    """Per-instance saturated throughputs and their sums (the bound)."""

    per_instance: dict[str, InstanceCapacity]

    @property
    def output_tokens_per_s(self) -> float:
        return sum(c.output_tokens_per_s for c in self.per_instance.values())

    @property
    def requests_per_s(self) -> float:
        return sum(c.requests_per_s for c in self.per_instance.values())

    @property
    def total_tokens_per_s(self) -> float:
        return sum(c.total_tokens_per_s for c in self.per_instance.values())


def _config_key(spec: PlannedInstance) -> tuple:
    return (spec.final_coeffs, spec.kv_capacity_tokens, spec.max_num_seqs, spec.max_num_batched_tokens)


def relaxation_fraction(spec: PlannedInstance, requests: SimRequests) -> float:
    """How long a saturation run takes to reach its steady batch mix, as a fraction of the run.

    A batch reaches its steady mix once the longest request admitted at the start has left: about
    max_output decode steps. The run lasts about N * mean_output * step / B steps' worth, so the
    ratio is max_output * B / (N * mean_output), with B <= max_num_seqs. For the Azure code trace
    (max output 1,899, mean 28, 8,819 requests) on a 256-sequence batch it is ~2: one pass over the
    trace never settles, and its tokens/s would be read ~1.5% low.
    """
    outs = requests.num_output_tokens
    return float(outs.max()) * spec.max_num_seqs / (len(requests) * float(outs.mean()))


def saturated_capacity(
    spec: PlannedInstance, requests: SimRequests, num_requests: int | None = None
) -> InstanceCapacity:
    """Saturate `spec` alone with `requests` (or an even sample of `num_requests`), all waiting at
    t=0, repeated until the batch mix settles within the first third of the run (see
    `relaxation_fraction`); measured from the later of 10% of the run and the settling time."""
    if len(requests) == 0:
        raise ValueError(f"instance {spec.instance_id}: no requests to saturate it with")
    spec = spec.settled()  # its true speed, after any speed change
    sample = requests.sample(num_requests) if num_requests else requests
    ratio = relaxation_fraction(spec, sample)
    copies = min(MAX_COPIES, max(1, math.ceil(3.0 * ratio)))
    rep = lambda a: np.tile(a, copies)  # noqa: E731
    burst = SimRequests(
        sample.name,
        np.zeros(len(sample) * copies),
        rep(sample.num_prompt_tokens),
        rep(sample.num_output_tokens),
        rep(sample.max_tokens),
    )
    cfg = SimConfig(window_s=(0.0, 0.0), record_timeline=False, record_steps=True, reconcile_interval_s=1e9)
    res = Simulator([spec], RoundRobinPolicy(), burst, cfg).run()
    # Saturated until the last request entered the batch (the queue then only drains).
    t_end = float(np.nanmax(res.first_token_s))
    t_start = max(RAMP_FRACTION, min(0.5, ratio / copies)) * t_end
    if not t_end > 0:
        raise ValueError(f"instance {spec.instance_id}: saturation run produced no span")
    steps_t, steps_tok = res.step_log[0]
    tok = np.interp([t_start, t_end], steps_t, steps_tok)
    span = t_end - t_start
    done = (res.finish_s >= t_start) & (res.finish_s <= t_end)
    # Prompts count when their first token is out (prefill done), outputs as they are emitted.
    started = (res.first_token_s >= t_start) & (res.first_token_s <= t_end)
    out_per_s = float(tok[1] - tok[0]) / span
    return InstanceCapacity(
        output_tokens_per_s=out_per_s,
        requests_per_s=float(np.count_nonzero(done)) / span,
        total_tokens_per_s=out_per_s + float(burst.num_prompt_tokens[started].sum()) / span,
    )


def fluid_bound(
    instances: Sequence[PlannedInstance], requests: SimRequests, num_requests: int | None = None
) -> FluidBound:
    """Sum of the instances' saturated throughputs; each distinct configuration is run once."""
    cache: dict[tuple, InstanceCapacity] = {}
    per: dict[str, InstanceCapacity] = {}
    for spec in instances:
        key = _config_key(spec)
        if key not in cache:
            cache[key] = saturated_capacity(spec, requests, num_requests)
        per[spec.instance_id] = cache[key]
    return FluidBound(per)


def requests_started_in_window(result: SimResult) -> SimRequests:
    """The requests whose first token came out inside the result's measurement window: the work
    the cluster actually did there, whose saturated rate is the fair bound for that run (the
    traces' request mix drifts over the hour, and a backlog shifts which requests a window sees)."""
    t0, t1 = result.window_s
    m = (result.first_token_s >= t0) & (result.first_token_s <= t1)
    return result.requests.take(m)
