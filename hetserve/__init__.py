"""hetserve: serve one LLM at the highest throughput a heterogeneous Ray cluster can give.

Public surface below; ray and vllm are imported only by hetserve.serving, hetserve.app and
hetserve.engines.vllm_engine.
"""

from hetserve.catalog import Catalog, default_catalog, ray_resource_name
from hetserve.cluster import Cluster, load_cluster, resolve_cluster
from hetserve.config import ClusterSpec, ConfigError, ModelSpec
from hetserve.records import InstanceConfig, LatencyCoeffs, Plan, RequestInfo

__all__ = [
    "Catalog",
    "Cluster",
    "ClusterSpec",
    "ConfigError",
    "InstanceConfig",
    "LatencyCoeffs",
    "ModelSpec",
    "Plan",
    "RequestInfo",
    "default_catalog",
    "load_cluster",
    "ray_resource_name",
    "resolve_cluster",
]
