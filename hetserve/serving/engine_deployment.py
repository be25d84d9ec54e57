"""One instance = one Serve replica holding one engine; its deployment is one planned configuration.

The replica streams TokenChunks to the router, reports its engine's measured stats through
Serve's `record_routing_stats` (which reach the router's request router with the replica list),
and fails Serve's health check when the engine is dead so Serve replaces it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import ray
from ray import serve

from hetserve.engines import EngineSpec, create_engine
from hetserve.engines.base import GenerateRequest, TokenChunk
from hetserve.records import InstanceStats
from hetserve.serving.metrics import InstanceMetrics, InstanceTags

__all__ = ["InstanceServer", "stats_from_routing"]


def stats_from_routing(routing_stats: dict[str, Any]) -> InstanceStats | None:
    """The InstanceStats inside a replica's routing-stats dict (None before its first report)."""
    raw = routing_stats.get("stats")
    return InstanceStats(**raw) if raw else None


class InstanceServer:
    """A Serve replica running one engine on the accelerators its deployment reserved."""

    async def __init__(self, engine: str, spec: EngineSpec, stream_interval_s: float = 0.05):  # type: ignore[misc]  # Serve awaits an async constructor
        """`engine`: "emulated" or "vllm"; `spec`: the plan's deployment record plus runtime knobs;
        `stream_interval_s`: see `generate`."""
        self._spec = spec
        self._deployment = spec.deployment.name
        self._predicted_tokens_per_s = spec.deployment.prediction.output_tokens_per_s
        self._stream_interval_s = stream_interval_s
        self._engine = create_engine(engine, spec)
        await self._engine.start()
        self.instance_id = serve.get_replica_context().replica_id.unique_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self._metrics = InstanceMetrics(InstanceTags(self._deployment, spec.accelerator, self.instance_id))
        self._report_seq = 0

    async def generate(
        self, request: GenerateRequest, target_instance: str | None = None, stream_interval_s: float | None = None
    ) -> AsyncIterator[TokenChunk]:
        """Stream the request's output. `target_instance` is the replica the router chose (read by
        the request router, see replica_router.py); it is ignored here. `stream_interval_s`
        overrides the deployment's interval for this request (the router asks unary requests,
        which reach their client only complete, for fewer, larger chunks).

        Stream batching: after each chunk sent, wait `stream_interval_s` before reading the next;
        both engines merge the tokens produced meanwhile into one chunk, so a fast instance sends
        one message per interval instead of one per token (the first token goes out at once).
        """
        interval_s = self._stream_interval_s if stream_interval_s is None else stream_interval_s
        async for chunk in self._engine.generate(request):
            yield chunk
            if interval_s > 0 and chunk.finish_reason is None:
                await asyncio.sleep(interval_s)

    def whoami(self, target_instance: str | None = None) -> dict[str, str]:
        """Which replica and node answered (tests and debugging of routing)."""
        return {"instance_id": self.instance_id, "node_id": self.node_id, "deployment": self._deployment}

    def record_routing_stats(self) -> dict[str, Any]:
        """Called by Serve every `request_routing_stats_period_s`; the dict reaches every handle's
        request router with the replica list. `seq` lets the router fold each report in once."""
        stats = self._engine.stats()
        self._metrics.update(stats, self._predicted_tokens_per_s)
        self._report_seq += 1
        return {
            "instance_id": self.instance_id,
            "node_id": self.node_id,
            "seq": self._report_seq,
            "time_s": time.time(),
            "stats": asdict(stats),
        }

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def __del__(self):
        await self._engine.shutdown()
