"""A plan of one configuration on one node, priced exactly as the planner prices it.

For what-if studies, `hetserve profile`, and tests that need one engine of a given type: the
DeploymentPlan it returns carries the same coefficients and KV capacity a full search would.
"""

from __future__ import annotations

from hetserve.config import AcceleratorSpec, ConfigError, EngineSettings, ModelSpec
from hetserve.model import LatencyModel
from hetserve.planner.candidates import price_configuration
from hetserve.records import DeploymentPlan, InstanceConfig, Plan, Workload

__all__ = ["plan_single_configuration"]

_ENGINE_DEFAULTS = EngineSettings()


def plan_single_configuration(
    model: ModelSpec,
    accel: AcceleratorSpec,
    workload: Workload,
    *,
    tp: int = 1,
    max_num_seqs: int = _ENGINE_DEFAULTS.max_num_seqs,
    gpu_memory_utilization: float = _ENGINE_DEFAULTS.gpu_memory_utilization,
    reserve_gib: float = _ENGINE_DEFAULTS.reserve_gib,
    max_num_batched_tokens: int = _ENGINE_DEFAULTS.max_num_batched_tokens,
    num_instances: int = 1,
    latency_model: LatencyModel | None = None,
    node: str = "node0",
) -> Plan:
    """`num_instances` instances of TP `tp` on `accel`, all on `node`; ConfigError if it does not fit."""
    config = InstanceConfig(accel.name, tp, max_num_seqs, gpu_memory_utilization)
    pred, latency = price_configuration(
        model, accel, config, workload, latency_model or LatencyModel.default(), reserve_gib=reserve_gib
    )
    if not pred.feasible:
        raise ConfigError(f"{model.name} on {tp} x {accel.name}: {pred.reason}")
    dp = DeploymentPlan(
        config,
        (node,) * num_instances,
        pred,
        config.deployment_name,
        coeffs=latency.coeffs,
        coeffs_source=latency.source,
        max_num_batched_tokens=max_num_batched_tokens,
    )
    return Plan(f"{accel.name}-single", model.name, "single", (dp,), workload)
