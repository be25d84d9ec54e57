"""Metrics of one simulation: throughput over the window, latency percentiles, goodput, per-instance
utilisation and token shares, and the ratio to the fluid bound. Plain Python, no ray."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from hetserve.sim.fluid import FluidBound
from hetserve.sim.simulator import SimResult

__all__ = ["DEFAULT_SLO", "SLO", "InstanceReport", "LatencyStats", "PolicyReport", "summarize"]


@dataclass(frozen=True, slots=True)
class SLO:
    """Per-request latency objectives for goodput (a request counts if it meets both)."""

    ttft_s: float
    tpot_s: float


# Interactive chat on a 70B-class model: first token within 5 s, then at least 5 tokens/s.
DEFAULT_SLO = SLO(ttft_s=5.0, tpot_s=0.2)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: np.ndarray) -> LatencyStats:
        v = values[~np.isnan(values)]
        if v.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(v.mean()))


@dataclass(frozen=True, slots=True)
class InstanceReport:
    instance_id: str
    deployment: str
    accelerator: str
    busy_fraction: float  # time stepping / window
    token_share: float  # its output tokens / all output tokens, inside the window
    capacity_share: float  # its fluid-bound share (0 without a bound)
    output_tokens_per_s: float


@dataclass(frozen=True)
class PolicyReport:
    """One policy at one offered load. Throughputs are measured inside the window (no ramp-up, no
    drain); latencies cover the requests that arrived inside it (their whole life, drain included)."""

    policy: str
    rate_scale: float
    offered_requests_per_s: float  # arrivals inside the window / its length
    window_s: tuple[float, float]
    output_tokens_per_s: float
    total_tokens_per_s: float
    requests_per_s: float
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    e2e_s: LatencyStats
    slo: SLO
    goodput_requests_per_s: float
    slo_attainment: float  # fraction of the window's arrivals meeting both SLOs
    num_requests: int
    num_rejected: int
    num_preemptions: int
    fluid_output_tokens_per_s: float
    fraction_of_bound: float
    instances: tuple[InstanceReport, ...]
    num_events: int
    num_steps: int
    sim_end_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(
    result: SimResult, bound: FluidBound | None = None, slo: SLO = DEFAULT_SLO, rate_scale: float = 1.0
) -> PolicyReport:
    reqs = result.requests
    t0, t1 = result.window_s
    span = max(t1 - t0, 1e-12)
    arrival = reqs.arrival_s
    first, finish = result.first_token_s, result.finish_s
    served = result.instance_of >= 0

    in_window = (arrival >= t0) & (arrival <= t1) & served
    ttft = first - arrival
    e2e = finish - arrival
    outs = reqs.num_output_tokens.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(outs > 1, (finish - first) / np.maximum(outs - 1, 1), 0.0)
    tpot = np.where(np.isnan(finish), np.nan, tpot)

    done_in_window = (finish >= t0) & (finish <= t1)
    meets = (ttft <= slo.ttft_s) & (tpot <= slo.tpot_s)
    started_in_window = (first >= t0) & (first <= t1)
    out_tokens = int(result.window_output_tokens.sum())
    prompt_tokens = float(reqs.num_prompt_tokens[started_in_window].sum())

    shares = result.window_output_tokens / out_tokens if out_tokens else np.zeros(len(result.instances))
    cap_total = bound.output_tokens_per_s if bound else 0.0
    inst_reports = tuple(
        InstanceReport(
            instance_id=spec.instance_id,
            deployment=spec.deployment,
            accelerator=spec.accelerator,
            busy_fraction=float(result.window_busy_s[i] / span),
            token_share=float(shares[i]),
            capacity_share=(
                bound.per_instance[spec.instance_id].output_tokens_per_s / cap_total if bound and cap_total else 0.0
            ),
            output_tokens_per_s=float(result.window_output_tokens[i] / span),
        )
        for i, spec in enumerate(result.instances)
    )
    n_window = int(np.count_nonzero(in_window))
    output_per_s = out_tokens / span
    return PolicyReport(
        policy=result.policy,
        rate_scale=rate_scale,
        offered_requests_per_s=float(np.count_nonzero((arrival >= t0) & (arrival <= t1))) / span,
        window_s=(float(t0), float(t1)),
        output_tokens_per_s=output_per_s,
        total_tokens_per_s=(out_tokens + prompt_tokens) / span,
        requests_per_s=float(np.count_nonzero(done_in_window)) / span,
        ttft_s=LatencyStats.of(ttft[in_window]),
        tpot_s=LatencyStats.of(tpot[in_window]),
        e2e_s=LatencyStats.of(e2e[in_window]),
        slo=slo,
        goodput_requests_per_s=float(np.count_nonzero(done_in_window & meets)) / span,
        slo_attainment=float(np.count_nonzero(in_window & meets)) / n_window if n_window else math.nan,
        num_requests=len(reqs),
        num_rejected=int(np.count_nonzero(~served)),
        num_preemptions=int(result.num_preemptions.sum()),
        fluid_output_tokens_per_s=cap_total,
        fraction_of_bound=output_per_s / cap_total if cap_total else math.nan,
        instances=inst_reports,
        num_events=result.num_events,
        num_steps=result.num_steps,
        sim_end_s=result.end_s,
    )
