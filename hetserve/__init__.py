"""hetserve: serve one LLM at the highest throughput a heterogeneous Ray cluster can give.

Public surface below; ray and vllm are imported only by hetserve.serving, hetserve.app and
hetserve.engines.vllm_engine.
"""

from hetserve.catalog import Catalog, default_catalog, ray_resource_name
from hetserve.cluster import Cluster, load_cluster, resolve_cluster
from hetserve.config import ClusterSpec, ModelSpec
from hetserve.errors import ConfigError, RuntimeFailure
from hetserve.planner import load_plan, search_plan
from hetserve.records import DeploymentPlan, InstanceConfig, LatencyCoeffs, Plan, PlannedInstance, RequestInfo

__all__ = [
    "Catalog",
    "Cluster",
    "ClusterSpec",
    "ConfigError",
    "DeploymentPlan",
    "InstanceConfig",
    "LatencyCoeffs",
    "ModelSpec",
    "Plan",
    "PlannedInstance",
    "RequestInfo",
    "RuntimeFailure",
    "default_catalog",
    "load_cluster",
    "load_plan",
    "ray_resource_name",
    "resolve_cluster",
    "search_plan",
]
