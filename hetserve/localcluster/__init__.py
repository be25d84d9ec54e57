"""A heterogeneous Ray cluster on one machine: one local Ray node per cluster-config node.

Each node is started by `ray start` in a session of its own, labelled with its accelerator type as
a Ray custom resource (`catalog.ray_resource_name`) and carrying no GPU. Stopping kills exactly
the processes of those sessions, by PID: never `ray stop`, which would kill every Ray on the host.
Drives the `ray` executable through subprocess; does not import ray.

Modules: `state` (the record and its JSON file), `start`, `stop`, `processes` (which PIDs are a
node's, and signalling them).
"""

from hetserve.localcluster.start import HEAD_NODE_NAME, MAX_LOCAL_NODES, start_local_cluster
from hetserve.localcluster.state import LocalCluster, LocalNode, default_state_file, load_local_cluster
from hetserve.localcluster.stop import StopResult, stop_local_cluster

__all__ = [
    "HEAD_NODE_NAME",
    "MAX_LOCAL_NODES",
    "LocalCluster",
    "LocalNode",
    "StopResult",
    "default_state_file",
    "load_local_cluster",
    "start_local_cluster",
    "stop_local_cluster",
]
