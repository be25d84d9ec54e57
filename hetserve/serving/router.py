"""The router deployment (ingress): OpenAI HTTP and Python handle methods over one scheduler.

Each router replica holds a scheduling policy and a LoadTracker over every instance (replica) of
every instance deployment. A request is validated, placed by `policy.select` on the instance with
the best score, and streamed from exactly that replica (replica_router.py); streamed tokens and
completion update the tracker, and the instances' periodic stats reconcile it. Several router
replicas each track their own dispatches; reconciliation counts the others' work as external.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from hetserve.engines.base import TokenChunk
from hetserve.records import RequestInfo
from hetserve.scheduling import LoadTracker, NoInstanceError, make_policy, place
from hetserve.serving.engine_deployment import stats_from_routing
from hetserve.serving.errors import RequestError, from_exception, from_validation_errors
from hetserve.serving.instance_directory import instance_replicas
from hetserve.serving.metrics import InstanceTags, RouterMetrics
from hetserve.serving.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    Usage,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    model_list,
)
from hetserve.serving.prepare import Prepared, RequestPreparer
from hetserve.serving.replica_router import TARGET_KWARG

__all__ = ["DeploymentInfo", "RouterIngress", "RouterServer", "RouterSpec", "api"]

logger = logging.getLogger("ray.serve")

api = FastAPI(title="hetserve", description="OpenAI-compatible API over a heterogeneous cluster.")


@api.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = from_validation_errors(exc.errors(), drop_prefix="body")
    return JSONResponse(err.body(), status_code=err.status_code)


@api.exception_handler(RequestError)
async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code)


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """One instance deployment as the router needs it: per-instance prediction and KV size."""

    name: str
    accelerator: str
    tp: int
    num_instances: int
    predicted_tokens_per_s: float  # per instance, output tokens/s (plan)
    kv_capacity_tokens: int
    max_num_seqs: int | None = None  # engine batch limit: lets C learn from batch-limited saturation


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """Everything a router replica is built from (pickled by Serve)."""

    model: str
    max_model_len: int  # longest request (prompt + output) the plan sized KV caches for
    vocab_size: int
    policy: str
    deployments: tuple[DeploymentInfo, ...]
    plan_view: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    stats_period_s: float = 1.0
    default_max_tokens: int = 256
    default_output_tokens: int = 256
    startup_timeout_s: float = 60.0


@dataclass(slots=True)
class _Instance:
    """An instance (replica) the router knows, with its latest stats report."""

    instance_id: str
    deployment: DeploymentInfo
    node_id: str | None
    tags: InstanceTags
    last_seq: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class RouterServer:
    """Ingress of the app: validates, places and streams every request.

    Per request: validate (model, token ids, prompt + max_tokens within the context) ->
    `policy.select(RequestInfo, tracker.views(), now)` over healthy instances whose KV can hold it
    -> `tracker.on_dispatch` -> stream from that exact replica, each chunk's tokens reported to
    the tracker -> `on_complete` (also on failure or client disconnect, which aborts the request
    on the instance). Every `stats_period_s` the replica set is re-read from the instance
    directory (replicas added or replaced by Serve join, gone ones leave) and each replica's fresh
    stats report is folded into the tracker (C, KV, drift of Q).

    HTTP routes are the `http_*` methods; `generate` / `generate_stream` serve Python handles.
    """

    async def __init__(self, spec: RouterSpec, instances: dict[str, DeploymentHandle]):
        self._spec = spec
        self._prepare = RequestPreparer(spec.model, spec.max_model_len, spec.vocab_size, spec.default_max_tokens)
        ctx = serve.get_replica_context()
        self._app_name = ctx.app_name
        self._router_id = ctx.replica_id.unique_id
        self._deployments = {d.name: d for d in spec.deployments}
        missing = set(self._deployments) ^ set(instances)
        if missing:
            raise ValueError(f"router: handles and plan disagree on deployments {sorted(missing)}")
        # `.options()` initialises each handle, which makes Serve build its request router and
        # so fills the instance directory before the first request.
        self._handles = {name: h.options(stream=True) for name, h in instances.items()}
        self._policy = make_policy(spec.policy, seed=spec.seed)
        self._policy_name = spec.policy  # `reconfigure` may swap the policy
        self._tracker = LoadTracker(default_output_tokens=spec.default_output_tokens)
        self._instances: dict[str, _Instance] = {}
        self._metrics = RouterMetrics()
        self._created_s = int(time.time())
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile_forever())

    # ---- instances ---------------------------------------------------------------------------
    def _sync_instances(self) -> None:
        """Add new replicas, drop gone ones, fold in fresh stats reports (once each)."""
        now_s, wall_s = time.monotonic(), time.time()
        for dep in self._spec.deployments:
            snaps = instance_replicas(self._app_name, dep.name)
            if snaps is None:
                continue
            current = {s.instance_id for s in snaps}
            for iid in [i for i, inst in self._instances.items() if inst.deployment.name == dep.name]:
                if iid not in current:
                    self._tracker.remove_instance(iid)
                    del self._instances[iid]
            for snap in snaps:
                inst = self._instances.get(snap.instance_id)
                stats = stats_from_routing(snap.routing_stats)
                if inst is None:
                    kv = stats.kv_capacity_tokens if stats and stats.kv_capacity_tokens else dep.kv_capacity_tokens
                    self._tracker.add_instance(
                        snap.instance_id,
                        dep.name,
                        dep.accelerator,
                        dep.predicted_tokens_per_s,
                        kv,
                        max_num_seqs=dep.max_num_seqs,
                    )
                    inst = _Instance(
                        snap.instance_id,
                        dep,
                        snap.node_id,
                        InstanceTags(dep.name, dep.accelerator, snap.instance_id),
                    )
                    self._instances[snap.instance_id] = inst
                seq = int(snap.routing_stats.get("seq", 0))
                if stats is not None and seq > inst.last_seq:
                    inst.last_seq = seq
                    inst.stats = snap.routing_stats
                    self._tracker.set_healthy(snap.instance_id, stats.healthy)
                    # Reports reach us up to a stats period late (via Serve's controller). Date
                    # each at when the engine took it, so the tracker's "dispatched before the
                    # previous report" test compares against what the engine could have seen.
                    age_s = max(0.0, wall_s - float(snap.routing_stats.get("time_s", wall_s)))
                    self._tracker.reconcile(snap.instance_id, stats, now_s - age_s)

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                self._sync_instances()
                self._metrics.flush()
                for view in self._tracker.views():
                    inst = self._instances.get(view.instance_id)
                    if inst is not None:
                        self._metrics.load(inst.tags, view.outstanding_tokens, view.capacity_tokens_per_s)
            except Exception:  # keep reconciling: one bad report must not stop the loop
                logger.exception("hetserve router: reconcile failed")
            await asyncio.sleep(self._spec.stats_period_s)

    async def _wait_for_instances(self) -> None:
        self._sync_instances()
        deadline_s = time.monotonic() + self._spec.startup_timeout_s
        while not self._instances and time.monotonic() < deadline_s:
            await asyncio.sleep(0.05)
            self._sync_instances()

    # ---- dispatch ----------------------------------------------------------------------------
    async def _stream_tokens(self, prepared: Prepared) -> AsyncIterator[TokenChunk]:
        """Place the request on one instance and stream its chunks, keeping the tracker exact."""
        req = prepared.request
        if not self._instances:
            await self._wait_for_instances()
        now_s = time.monotonic()
        info = RequestInfo(req.request_id, prepared.num_prompt_tokens, req.max_tokens, arrival_s=now_s)
        t0 = time.perf_counter()
        try:
            placement = place(self._policy, info, self._tracker.views(), now_s)
        except NoInstanceError as exc:
            raise from_exception(exc) from None
        self._metrics.decision(self._policy_name, time.perf_counter() - t0)
        instance_id = placement.instance_id
        self._policy.on_dispatch(info, instance_id, now_s)
        self._tracker.on_dispatch(info, instance_id, now_s)
        inst = self._instances[instance_id]
        self._metrics.routed(inst.tags)
        response = self._handles[placement.deployment].generate.remote(req, **{TARGET_KWARG: instance_id})
        first_s = last_s = None
        num_out = 0
        done = False
        try:
            async for chunk in response:
                last_s = time.monotonic()
                if first_s is None and chunk.token_ids:
                    first_s = last_s
                num_out = chunk.num_output_tokens
                self._tracker.on_tokens(req.request_id, len(chunk.token_ids), last_s)
                yield chunk
            done = True
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except RayActorError as exc:  # the replica died mid-request (Serve replaces it)
            raise RequestError(
                503,
                f"instance {instance_id} ({inst.deployment.name}) went away during the request: {exc}",
                type="service_unavailable",
                code="instance_unavailable",
            ) from None
        except Exception as exc:
            raise from_exception(exc) from None
        finally:
            if not done:
                response.cancel()  # the client went away or the call failed: free the engine's KV
            end_s = time.monotonic()
            self._tracker.on_complete(req.request_id, end_s)
            self._policy.on_complete(req.request_id, instance_id, end_s)
            ttft = first_s - now_s if first_s is not None else None
            tpot = (last_s - first_s) / (num_out - 1) if first_s is not None and num_out > 1 else None
            self._metrics.latency(inst.tags, ttft, tpot, end_s - now_s)

    async def _complete(self, prepared: Prepared) -> dict[str, Any]:
        parts: list[str] = []
        finish, num_out = None, 0
        async for chunk in self._stream_tokens(prepared):
            parts.append(chunk.text)
            finish, num_out = chunk.finish_reason or finish, chunk.num_output_tokens
        usage = Usage.of(prepared.num_prompt_tokens, num_out)
        make = completion_response if prepared.kind == "completion" else chat_response
        return make(prepared.request.request_id, self._spec.model, "".join(parts), finish, usage, prepared.created)

    async def _chunk_dicts(self, prepared: Prepared) -> AsyncIterator[dict[str, Any]]:
        """OpenAI stream chunks; a chat stream carries the assistant role in its first chunk."""
        rid, model, created = prepared.request.request_id, self._spec.model, prepared.created
        num_out, first = 0, True
        async for chunk in self._stream_tokens(prepared):
            num_out = chunk.num_output_tokens
            if prepared.kind == "completion":
                yield completion_chunk(rid, model, created, chunk.text, chunk.finish_reason)
            else:
                delta = {"role": "assistant", "content": chunk.text} if first else {"content": chunk.text}
                yield chat_chunk(rid, model, created, delta, chunk.finish_reason)
            first = False
        if prepared.include_usage:
            usage = Usage.of(prepared.num_prompt_tokens, num_out)
            make = completion_chunk if prepared.kind == "completion" else chat_chunk
            empty = "" if prepared.kind == "completion" else {}
            yield make(rid, model, created, empty, None, usage=usage, with_choice=False)

    async def _sse(self, prepared: Prepared) -> StreamingResponse | JSONResponse:
        """Server-sent events. The first chunk is awaited before answering, so refusals and
        placement failures still get their HTTP status; later failures end the stream with an
        error event."""
        chunks = self._chunk_dicts(prepared)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except RequestError as err:
            return JSONResponse(err.body(), status_code=err.status_code)

        async def events() -> AsyncIterator[str]:
            try:
                if first is not None:
                    yield f"data: {json.dumps(first)}\n\n"
                async for item in chunks:
                    yield f"data: {json.dumps(item)}\n\n"
            except RequestError as err:
                yield f"data: {json.dumps(err.body())}\n\n"
            finally:
                await chunks.aclose()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    # ---- Python API (handles) ------------------------------------------------------------------
    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Unary: an OpenAI completion (or chat completion, if `messages` is given) as a dict.
        Raises RequestError with status_code and message on refusal or failure."""
        return await self._complete(self._prepare.from_dict(request))

    async def generate_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming (`handle.options(stream=True).generate_stream.remote(...)`): OpenAI chunks."""
        prepared = self._prepare.from_dict(request)
        async for item in self._chunk_dicts(prepared):
            yield item

    async def instances(self) -> list[dict[str, Any]]:
        """Each instance's state as this router replica sees it (also GET /v1/hetserve/instances)."""
        self._sync_instances()
        out = []
        for view in self._tracker.views():
            inst = self._instances[view.instance_id]
            stats = stats_from_routing(inst.stats)
            out.append(
                {
                    "instance_id": view.instance_id,
                    "deployment": view.deployment,
                    "accelerator": view.accelerator,
                    "tp": inst.deployment.tp,
                    "node_id": inst.node_id,
                    "healthy": view.healthy,
                    "capacity_tokens_per_s": view.capacity_tokens_per_s,
                    "predicted_tokens_per_s": inst.deployment.predicted_tokens_per_s,
                    "outstanding_tokens": view.outstanding_tokens,
                    "num_outstanding": view.num_outstanding,
                    "num_running": stats.num_running if stats else None,
                    "num_waiting": stats.num_waiting if stats else None,
                    "kv_used_tokens": view.kv_used_tokens,
                    "kv_capacity_tokens": view.kv_capacity_tokens,
                    "kv_usage": stats.kv_usage if stats else None,
                    "measured_output_tokens_per_s": stats.output_tokens_per_s if stats else None,
                    "total_output_tokens": stats.total_output_tokens if stats else None,
                    "router": self._router_id,
                }
            )
        return out

    def plan(self) -> dict[str, Any]:
        return {**self._spec.plan_view, "policy": self._policy_name} if self._spec.plan_view else {}

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve `user_config` of the router deployment: `{"policy": name, "seed": n}` swaps in a
        fresh policy and a fresh load tracker (instances rejoin at the next reconcile), without
        touching the instance replicas. A router-only, lightweight update: `hetserve bench`
        compares policies on the same running instances this way."""
        config = config or {}
        name = str(config.get("policy", self._policy_name))
        self._policy = make_policy(name, seed=int(config.get("seed", self._spec.seed)))
        self._policy_name = name
        self._tracker = LoadTracker(default_output_tokens=self._spec.default_output_tokens)
        self._instances = {}
        self._sync_instances()

    # ---- HTTP ----------------------------------------------------------------------------------
    @api.post("/v1/completions")
    async def http_completions(self, body: CompletionRequest):
        prepared = self._prepare.completion(body)
        if body.stream:
            return await self._sse(prepared)
        return JSONResponse(await self._complete(prepared))

    @api.post("/v1/chat/completions")
    async def http_chat_completions(self, body: ChatCompletionRequest):
        prepared = self._prepare.chat(body)
        if body.stream:
            return await self._sse(prepared)
        return JSONResponse(await self._complete(prepared))

    @api.get("/v1/models")
    async def http_models(self):
        return model_list(self._spec.model, self._created_s, self._spec.max_model_len)

    @api.get("/health")
    async def http_health(self):
        self._sync_instances()
        healthy = sum(v.healthy for v in self._tracker.views())
        body = {
            "status": "ok" if healthy else "unavailable",
            "healthy_instances": healthy,
            "instances": len(self._instances),
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @api.get("/v1/hetserve/plan")
    async def http_plan(self):
        return self.plan()

    @api.get("/v1/hetserve/instances")
    async def http_instances(self):
        return {"object": "list", "data": await self.instances()}


RouterIngress = serve.ingress(api)(RouterServer)
