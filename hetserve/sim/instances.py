"""Simulated instances: one per planned replica, priced by the latency model. Plain Python, no ray."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hetserve.cluster import Cluster
from hetserve.model import LatencyModel, memory_fit
from hetserve.planner import search_plan
from hetserve.records import LatencyCoeffs, Plan

__all__ = ["InstanceSpec", "instances_for_cluster", "instances_from_plan", "scale_coeffs", "with_true_speed"]


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Everything the simulator needs to run one instance and the router needs to seed it."""

    instance_id: str
    deployment: str
    accelerator: str
    coeffs: LatencyCoeffs
    kv_capacity_tokens: int
    max_num_seqs: int
    predicted_tokens_per_s: float
    max_num_batched_tokens: int = 8192
    tp: int = 1
    true_coeffs: LatencyCoeffs | None = None
    """What the instance's steps really take, when it is not what the plan believes (`coeffs`,
    the router's prior): a throttled card, another kernel, a plan that is off. None: the plan is
    right."""
    speed_changes: tuple[tuple[float, float], ...] = ()
    """(time_s, factor): from the first stats tick at or after time_s, every step takes `factor`
    times its true time (a mid-run slowdown is factor 2). Factors compound."""

    @property
    def run_coeffs(self) -> LatencyCoeffs:
        """The coefficients the instance's steps run at from the start."""
        return self.true_coeffs or self.coeffs

    @property
    def final_coeffs(self) -> LatencyCoeffs:
        """The coefficients after every speed change (what saturating it at the end measures)."""
        factor = 1.0
        for _, f in self.speed_changes:
            factor *= f
        return scale_coeffs(self.run_coeffs, factor)

    def settled(self) -> InstanceSpec:
        """This instance at its final speed from t=0 (for saturation runs)."""
        return replace(self, true_coeffs=self.final_coeffs, speed_changes=())


def scale_coeffs(c: LatencyCoeffs, factor: float) -> LatencyCoeffs:
    """Every step `factor` times as long."""
    if factor == 1.0:
        return c
    return LatencyCoeffs(
        a_p=c.a_p * factor, b_p=c.b_p * factor, a_d=c.a_d * factor,
        c_d=c.c_d * factor, b_d=c.b_d * factor, q_p=c.q_p * factor,
    )  # fmt: skip


def with_true_speed(
    spec: InstanceSpec, factor: float = 1.0, changes: tuple[tuple[float, float], ...] = ()
) -> InstanceSpec:
    """The instance with steps `factor` times slower than its plan believes (factor 3: the plan is
    3x too optimistic; 1/3: 3x too pessimistic), and optional later speed changes."""
    return replace(spec, true_coeffs=scale_coeffs(spec.coeffs, factor), speed_changes=tuple(changes))


def instances_from_plan(plan: Plan, cluster: Cluster, latency_model: LatencyModel | None = None) -> list[InstanceSpec]:
    """One InstanceSpec per replica of every deployment, ids `<deployment>/<node>/<k>`.

    Step times come from `latency_model.coeffs(model, accel, tp)` (default: the shipped profiles)
    and the KV capacity from `memory_fit` with the cluster's engine settings, the same sources the
    planner priced the plan with.
    """
    lm = latency_model or LatencyModel.default()
    model = cluster.model
    out: list[InstanceSpec] = []
    for dep in plan.deployments:
        cfg = dep.config
        accel = cluster.catalog.accelerator(cfg.accelerator)
        fit = memory_fit(
            model,
            accel,
            cfg.tp,
            cfg.gpu_memory_utilization,
            cluster.engine.reserve_gib,
            cluster.workload.max_request_tokens,
        )
        if not fit.feasible:
            raise ValueError(f"deployment {dep.name or cfg.deployment_name}: {fit.reason}")
        coeffs = lm.coeffs(model, accel, cfg.tp)
        name = dep.name or cfg.deployment_name
        seen: dict[str, int] = {}
        for node in dep.node_names:
            k = seen.get(node, 0)
            seen[node] = k + 1
            out.append(
                InstanceSpec(
                    instance_id=f"{name}/{node}/{k}",
                    deployment=name,
                    accelerator=cfg.accelerator,
                    coeffs=coeffs,
                    kv_capacity_tokens=fit.kv_capacity_tokens,
                    max_num_seqs=cfg.max_num_seqs,
                    predicted_tokens_per_s=dep.prediction.output_tokens_per_s,
                    max_num_batched_tokens=cluster.engine.max_num_batched_tokens,
                    tp=cfg.tp,
                )
            )
    if not out:
        raise ValueError(f"plan for {plan.cluster} has no instances")
    return out


def instances_for_cluster(cluster: Cluster, latency_model: LatencyModel | None = None) -> list[InstanceSpec]:
    """Plan the cluster (throughput objective) and return its instances."""
    lm = latency_model or LatencyModel.default()
    return instances_from_plan(search_plan(cluster, latency_model=lm), cluster, lm)
