"""Instance-granular routing on top of Ray Serve's request-router API.

Ray Serve picks a replica of a deployment inside the caller's handle, with a `RequestRouter`.
hetserve's scheduler lives in the router deployment and must (a) see every replica of every
instance deployment with its measured stats, and (b) send a request to the exact replica it chose.
`InstanceRequestRouter` does both with Serve's own transport:

  (a) Serve builds one RequestRouter per handle and feeds it the running replicas (long poll from
      the controller), each with the dict its `record_routing_stats()` last returned. The router
      registers itself in the process-wide `instance_directory`, which the router deployment reads.
  (b) the caller names the chosen replica in the request kwargs (`TARGET_KWARG`);
      `choose_replicas` returns exactly that replica. If it is gone (restarted, scaled down), the
      request falls back to the least-loaded replica (Serve's queue-length probe), never fails.

Serve pickles this module by value, so it holds no state of its own (see instance_directory).
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from hetserve.serving.instance_directory import register_router

__all__ = ["REQUEST_ROUTER_PATH", "TARGET_KWARG", "InstanceRequestRouter"]

# Keyword argument of the instance method call that names the chosen replica (its unique id).
TARGET_KWARG = "target_instance"
REQUEST_ROUTER_PATH = "hetserve.serving.replica_router.InstanceRequestRouter"


class InstanceRequestRouter(RequestRouter):
    """Send each request to the replica named by `kwargs[TARGET_KWARG]`; least-loaded otherwise.

    Ranks returned to Serve: `[[target]]` when the target is a current replica, else
    `[all candidates]`, from which Serve's base class takes the one with the shortest queue
    (cached or probed). A target whose queue is full (`max_ongoing_requests`) is retried with
    Serve's backoff rather than moved: the scheduler chose it, and instance deployments set
    max_ongoing_requests far above the engine's batch so this does not happen in practice.
    """

    def initialize_state(self, **kwargs) -> None:
        register_router(self._deployment_id.app_name, self._deployment_id.name, self)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        target = pending_request.kwargs.get(TARGET_KWARG) if pending_request is not None else None
        if target is not None:
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == target:
                    return [[replica]]
        return [list(candidate_replicas)] if candidate_replicas else []
