"""hetserve's Prometheus metrics (`ray.util.metrics`), tagged by deployment, accelerator, instance.

Ray exports them from every node's metrics agent with a `ray_` prefix, e.g.
`ray_hetserve_requests_routed_total`. The router records what it decides and observes (routing,
Q, C, latencies, decision time); each instance what its engine measures (tokens/s, KV, queue).
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.util.metrics import Counter, Gauge, Histogram

from hetserve.records import InstanceStats

__all__ = ["InstanceMetrics", "InstanceTags", "RouterMetrics"]

TAG_KEYS = ("deployment", "accelerator", "instance")

# Seconds; TTFT and end-to-end reach minutes under overload, TPOT is tens of ms.
_LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
_TPOT_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28]
_DECISION_BUCKETS_S = [1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2]


@dataclass(frozen=True, slots=True)
class InstanceTags:
    deployment: str
    accelerator: str
    instance: str

    def as_dict(self) -> dict[str, str]:
        return {"deployment": self.deployment, "accelerator": self.accelerator, "instance": self.instance}


class RouterMetrics:
    """Recorded by each router replica, per instance it routes to."""

    def __init__(self) -> None:
        self._routed: dict[InstanceTags, int] = {}
        self.requests_routed = Counter(
            "hetserve_requests_routed", "Requests the scheduler sent to the instance.", TAG_KEYS
        )
        self.outstanding_tokens = Gauge(
            "hetserve_outstanding_tokens",
            "Q: outstanding work on the instance as this router sees it (output-token equivalents).",
            TAG_KEYS,
        )
        self.capacity_tokens_per_s = Gauge(
            "hetserve_capacity_tokens_per_s",
            "C: the scheduler's capacity estimate for the instance (output tokens/s).",
            TAG_KEYS,
        )
        self.fit_speed = Gauge(
            "hetserve_fit_speed_vs_plan",
            "Measured step time / the plan's, least squares over the instance's recent engine steps.",
            TAG_KEYS,
        )
        self.capacity_uncertainty = Gauge(
            "hetserve_capacity_rel_uncertainty", "Relative 1-sigma uncertainty of C (the online fit).", TAG_KEYS
        )
        self.fit_error = Gauge(
            "hetserve_step_time_rel_error",
            "RMS relative error of predicted vs measured engine step times; model=fit|plan.",
            (*TAG_KEYS, "model"),
        )
        self.fit_coeff = Gauge(
            "hetserve_fit_coefficient_s",
            "Fitted step-time coefficient of the instance (a_p, b_p, a_d, c_d, b_d), s per unit.",
            (*TAG_KEYS, "coefficient"),
        )
        self.ttft_s = Histogram(
            "hetserve_ttft_s", "Time to first token seen by the router, s.", _LATENCY_BUCKETS_S, TAG_KEYS
        )
        self.tpot_s = Histogram(
            "hetserve_tpot_s", "Mean time per output token after the first, s.", _TPOT_BUCKETS_S, TAG_KEYS
        )
        self.e2e_s = Histogram(
            "hetserve_e2e_latency_s", "End-to-end request latency at the router, s.", _LATENCY_BUCKETS_S, TAG_KEYS
        )
        self.decision_s = Histogram(
            "hetserve_scheduler_decision_s",
            "Time the scheduling policy took to choose an instance, s.",
            _DECISION_BUCKETS_S,
            ("policy",),
        )

    def routed(self, tags: InstanceTags) -> None:
        """Counted here, exported by `flush` (a Ray metric record per request cost ~2% of the
        router's CPU in benchmarks/overhead.py's profile; the router flushes every stats period)."""
        self._routed[tags] = self._routed.get(tags, 0) + 1

    def flush(self) -> None:
        pending, self._routed = self._routed, {}
        for tags, n in pending.items():
            self.requests_routed.inc(n, tags.as_dict())

    def load(self, tags: InstanceTags, outstanding_tokens: float, capacity_tokens_per_s: float) -> None:
        t = tags.as_dict()
        self.outstanding_tokens.set(outstanding_tokens, t)
        self.capacity_tokens_per_s.set(capacity_tokens_per_s, t)

    def fit(self, tags: InstanceTags, summary: dict[str, float | None]) -> None:
        """The online capacity fit of one instance (`LoadTracker.fit_summary`; empty: none)."""
        if not summary:
            return
        t = tags.as_dict()
        self.fit_speed.set(float(summary["fit_speed_vs_plan"] or 0.0), t)
        unc = summary.get("capacity_rel_uncertainty")
        if unc is not None and unc == unc:  # not NaN
            self.capacity_uncertainty.set(float(unc), t)
        self.fit_error.set(float(summary["fit_step_rel_rmse"] or 0.0), {**t, "model": "fit"})
        self.fit_error.set(float(summary["plan_step_rel_rmse"] or 0.0), {**t, "model": "plan"})
        for name in ("a_p", "b_p", "a_d", "c_d", "b_d"):
            self.fit_coeff.set(float(summary[f"fit_{name}"] or 0.0), {**t, "coefficient": name})

    def latency(self, tags: InstanceTags, ttft_s: float | None, tpot_s: float | None, e2e_s: float) -> None:
        t = tags.as_dict()
        if ttft_s is not None:
            self.ttft_s.observe(ttft_s, t)
        if tpot_s is not None:
            self.tpot_s.observe(tpot_s, t)
        self.e2e_s.observe(e2e_s, t)

    def decision(self, policy: str, seconds: float) -> None:
        self.decision_s.observe(seconds, {"policy": policy})


class InstanceMetrics:
    """Recorded by each instance replica from its engine's stats, with the plan's prediction."""

    def __init__(self, tags: InstanceTags) -> None:
        self._tags = tags.as_dict()
        self.measured = Gauge(
            "hetserve_measured_output_tokens_per_s",
            "Output tokens/s the instance's engine delivered over its recent window.",
            TAG_KEYS,
        ).set_default_tags(self._tags)
        self.predicted = Gauge(
            "hetserve_predicted_output_tokens_per_s",
            "Output tokens/s the throughput model predicted for the instance (the plan).",
            TAG_KEYS,
        ).set_default_tags(self._tags)
        self.kv_usage = Gauge(
            "hetserve_kv_usage", "Fraction of the instance's KV cache in use.", TAG_KEYS
        ).set_default_tags(self._tags)
        self.running = Gauge(
            "hetserve_running_requests", "Sequences in the instance's running batch.", TAG_KEYS
        ).set_default_tags(self._tags)
        self.waiting = Gauge(
            "hetserve_waiting_requests", "Requests waiting in the instance's engine queue.", TAG_KEYS
        ).set_default_tags(self._tags)

    def update(self, stats: InstanceStats, predicted_tokens_per_s: float) -> None:
        self.measured.set(stats.output_tokens_per_s)
        self.predicted.set(predicted_tokens_per_s)
        self.kv_usage.set(stats.kv_usage)
        self.running.set(stats.num_running)
        self.waiting.set(stats.num_waiting)
