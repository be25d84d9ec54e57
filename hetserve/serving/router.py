"""The router deployment (ingress): OpenAI HTTP and Python handle methods over one scheduler.

Each router replica holds a scheduling policy and a LoadTracker over every instance (replica) of
every instance deployment. A request is validated, placed by `policy.select` on the instance with
the best score, and streamed from exactly that replica (replica_router.py); streamed tokens and
completion update the tracker, and the instances' periodic stats reconcile it. Several router
replicas each track their own dispatches; reconciliation counts the others' work as external.
What the client sees of a request's chunks (unary response, stream chunks, server-sent events)
is rendered by serving/render.py; `n` > 1 requests fan out in serving/fanout.py; keys and body
limits are checked at the door (serving/door.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import ActorDiedError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from hetserve.engines.base import EngineError, RequestTooLongError, TokenChunk, UnsupportedParameterError
from hetserve.records import DEFAULT_MAX_TOKENS, DEFAULT_OUTPUT_TOKENS, DeploymentPlan, PlanClasses, RequestInfo
from hetserve.scheduling import LoadTracker, NoInstanceError, make_policy
from hetserve.scheduling.admission import AdmissionConfig, AdmissionQueue, Binding, Bound, Full, Queued
from hetserve.scheduling.base import InstanceView
from hetserve.serving import door, fanout, render
from hetserve.serving.door import BodyTooLarge, DoorMiddleware
from hetserve.serving.engine_deployment import stats_from_routing
from hetserve.serving.errors import RequestError, from_exception, from_validation_errors
from hetserve.serving.health import HealthConfig, InstanceHealth
from hetserve.serving.instance_directory import instance_replicas
from hetserve.serving.metrics import InstanceTags, RouterMetrics
from hetserve.serving.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    model_list,
)
from hetserve.serving.prepare import Prepared, RequestPreparer, placement_info
from hetserve.serving.replica_router import TARGET_KWARG

__all__ = ["RouterIngress", "RouterServer", "RouterSpec", "api"]

logger = logging.getLogger("ray.serve")

# Chunk interval the router asks instances for on unary requests, s (streams keep the deployment's).
UNARY_STREAM_INTERVAL_S = 0.5

api = FastAPI(title="hetserve", description="OpenAI-compatible API over a heterogeneous cluster.")
# API keys and the body limit, checked before FastAPI parses a body; the router replica
# configures its process's door at start (serving/door.py).
api.add_middleware(DoorMiddleware)


@api.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = from_validation_errors(exc.errors(), drop_prefix="body")
    return JSONResponse(err.body(), status_code=err.status_code)


@api.exception_handler(RequestError)
async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return render.error_response(exc)


@api.exception_handler(BodyTooLarge)
async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    err = RequestError(413, str(exc.detail), code="body_too_large")
    return render.error_response(err)


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """Everything a router replica is built from (pickled by Serve)."""

    model: str
    max_model_len: int  # longest request (prompt + output) the plan sized KV caches for
    vocab_size: int
    policy: str
    deployments: tuple[DeploymentPlan, ...]  # the plan's records: prediction, KV size, batch limit
    plan_view: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    stats_period_s: float = 1.0
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    startup_timeout_s: float = 60.0
    tokenizer_path: str | None = None  # local HF tokenizer: exact counts, chat template, ids to instances
    detokenize: bool = False  # instances stream ids only (emulated + tokenizer): the router makes the text
    learn_capacity: bool = True  # the online capacity fit (False: C stays at the plan's prediction)
    # Reliability (see RouterServer): retries, failure detection, admission, the door.
    max_tries: int = 3
    retry_backoff_s: float = 0.05
    instance_timeout_s: float = 60.0
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    queue_timeout_s: float = 300.0
    health: HealthConfig = field(default_factory=HealthConfig)
    api_key_digests: tuple[str, ...] = ()
    max_body_bytes: int | None = None
    classes: PlanClasses | None = None  # the plan's request classes (hetero_classes' table)


@dataclass(slots=True)
class _KnownReplica:
    """An instance (replica) the router knows, with its latest stats report."""

    instance_id: str
    deployment: DeploymentPlan
    node_id: str | None
    tags: InstanceTags
    last_seq: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class _InstanceFailure(Exception):
    """A call failed because of its instance (not the request): retry elsewhere if nothing has
    reached the client yet."""

    def __init__(self, instance_id: str, error: RequestError, dead: bool = False):
        super().__init__(error.message)
        self.instance_id = instance_id
        self.error = error
        self.dead = dead


def _is_instance_failure(exc: BaseException) -> bool:
    """Failures of the instance: actor death or unavailability, Serve refusing to reach it, an
    engine error other than the request's own (too long, a field the engine cannot honour). The
    request's own 4xx never are."""
    if isinstance(exc, (RayActorError, BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError)):
        return True
    cause = exc
    for _ in range(10):  # RayTaskError chains
        if isinstance(cause, RequestTooLongError | UnsupportedParameterError | RequestError):
            return False
        if isinstance(cause, EngineError | RayActorError):
            return True
        nxt = getattr(cause, "cause", None)
        if nxt is None or nxt is cause:
            break
        cause = nxt
    return False


def _own_serve_request_context(request_id: str) -> None:
    """Give this task its own Serve request id. The children of an `n` > 1 request call their
    instances concurrently from one HTTP request's context, and Serve's handle keys pending
    assignments by that context's internal request id: with one id for all, only one child is
    ever assigned a replica and the others wait forever."""
    serve.context._set_request_context(_internal_request_id=request_id)


def _release_memory() -> None:
    """Give freed heap back to the OS after a burst (glibc keeps it otherwise, so an idle router
    would stay at its peak RSS)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class RouterServer:
    """Ingress of the app: validates, admits, places and streams every request.

    Per request: validate (model, token ids, prompt + max_tokens within the context) -> admit
    (hetserve.scheduling.admission): placed at once by `policy.select` among routable instances
    with room, else queued at the router (bounded by count and work; full: 429 + Retry-After; no
    routable instance: 503) and bound late, when an instance has room -> `tracker.on_dispatch`
    -> stream from that exact replica, each chunk's tokens reported to the tracker ->
    `on_complete` (also on failure or client disconnect, which aborts the request on the
    instance).

    Failures of the instance (actor death, engine error, no chunk for `instance_timeout_s`)
    before anything reached the client are retried on another instance, at most `max_tries`
    tries with backoff, never on an instance tried already; a unary request is retried any time
    before it completes (its output is only sent once complete). A stream that has sent tokens
    ends with an error event. Routable = reported healthy, not dead (a call failed with actor
    death: out at once), not stale (no report for `report_timeout_s`), circuit breaker not open
    (serving/health.py).

    Every `min(stats_period_s, 0.25)` s the replica set is re-read from the instance directory
    (replicas added or replaced by Serve join, gone ones leave), each replica's fresh stats
    report is folded into the tracker (C, KV, drift of Q, other router replicas' work as
    external), and the queue is offered to instances that gained room.

    HTTP routes are the `http_*` methods; `generate` / `generate_stream` serve Python handles.
    """

    async def __init__(self, spec: RouterSpec, instances: dict[str, DeploymentHandle]):  # type: ignore[misc]  # Serve awaits an async constructor
        self._spec = spec
        tokenizer = None
        if spec.tokenizer_path:
            from hetserve.serving.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(spec.tokenizer_path)
        self._prepare = RequestPreparer(
            spec.model,
            spec.max_model_len,
            spec.vocab_size,
            spec.default_max_tokens,
            tokenizer=tokenizer,
            detokenize=spec.detokenize,
        )
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
        self._policy = make_policy(spec.policy, seed=spec.seed, classes=spec.classes)
        self._policy_name = spec.policy  # `reconfigure` may swap the policy
        self._tracker = self._new_tracker()
        self._admission: AdmissionQueue[asyncio.Future] = AdmissionQueue(self._policy, spec.admission)
        self._health = InstanceHealth(spec.health)
        self._instances: dict[str, _KnownReplica] = {}
        self._metrics = RouterMetrics()
        self._created_s = int(time.time())
        self._counts = {"retried": 0, "refused_429": 0, "refused_503": 0, "failed": 0, "queued": 0}
        self._busy_since_trim = False
        door.configure(spec.api_key_digests, spec.max_body_bytes, self._shed)
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
                    self._admission.remove_instance(iid)
                    self._health.remove(iid)
                    del self._instances[iid]
            for snap in snaps:
                inst = self._instances.get(snap.instance_id)
                stats = stats_from_routing(snap.routing_stats)
                if inst is None:
                    kv = stats.kv_capacity_tokens if stats and stats.kv_capacity_tokens else dep.kv_capacity_tokens
                    self._tracker.add_instance(
                        snap.instance_id,
                        dep.name,
                        dep.config.accelerator,
                        dep.prediction.output_tokens_per_s,
                        kv,
                        max_num_seqs=dep.config.max_num_seqs,
                        coeffs=dep.coeffs,
                    )
                    self._admission.set_slots(snap.instance_id, dep.config.max_num_seqs)
                    self._health.add(snap.instance_id, now_s)
                    inst = _KnownReplica(
                        snap.instance_id,
                        dep,
                        snap.node_id,
                        InstanceTags(dep.name, dep.config.accelerator, snap.instance_id),
                    )
                    self._instances[snap.instance_id] = inst
                seq = int(snap.routing_stats.get("seq", 0))
                if stats is not None and seq > inst.last_seq:
                    inst.last_seq = seq
                    inst.stats = snap.routing_stats
                    self._health.on_report(snap.instance_id, now_s)
                    self._tracker.set_healthy(snap.instance_id, stats.healthy)
                    # Reports reach us up to a stats period late (via Serve's controller). Date
                    # each at when the engine took it, so the tracker's "dispatched before the
                    # previous report" test compares against what the engine could have seen.
                    age_s = max(0.0, wall_s - float(snap.routing_stats.get("time_s", wall_s)))
                    self._tracker.reconcile(snap.instance_id, stats, now_s - age_s)

    async def _reconcile_forever(self) -> None:
        period_s = min(self._spec.stats_period_s, 0.25)
        last_metrics_s = 0.0
        while True:
            try:
                self._sync_instances()
                self._pump()
                now_s = time.monotonic()
                if now_s - last_metrics_s >= self._spec.stats_period_s:
                    last_metrics_s = now_s
                    self._metrics.flush()
                    for view in self._tracker.views():
                        inst = self._instances.get(view.instance_id)
                        if inst is not None:
                            self._metrics.load(inst.tags, view.outstanding_tokens, view.capacity_tokens_per_s)
                            self._metrics.fit(inst.tags, self._tracker.fit_summary(view.instance_id))
                idle = not len(self._admission) and not any(v.num_outstanding for v in self._tracker.views())
                if idle and self._busy_since_trim:
                    self._busy_since_trim = False
                    _release_memory()
            except Exception:  # keep reconciling: one bad report must not stop the loop
                logger.exception("hetserve router: reconcile failed")
            await asyncio.sleep(period_s)

    async def _wait_for_instances(self) -> None:
        self._sync_instances()
        deadline_s = time.monotonic() + self._spec.startup_timeout_s
        while not self._instances and time.monotonic() < deadline_s:
            await asyncio.sleep(0.05)
            self._sync_instances()

    def _routable_views(self, now_s: float) -> list[InstanceView]:
        return [v for v in self._tracker.views() if v.healthy and self._health.routable(v.instance_id, now_s)]

    # ---- admission -----------------------------------------------------------------------------
    def _dispatch(self, info: RequestInfo, instance_id: str, now_s: float) -> None:
        self._policy.on_dispatch(info, instance_id, now_s)
        self._tracker.on_dispatch(info, instance_id, now_s)
        self._health.on_bind(instance_id, now_s)
        self._busy_since_trim = True

    def _pump(self) -> None:
        """Bind queued requests, head first, while an instance has room."""
        while len(self._admission):
            now_s = time.monotonic()
            binding: Binding[asyncio.Future] | None = self._admission.next_binding(self._routable_views(now_s), now_s)
            if binding is None:
                return
            fut = binding.item
            if fut.done():  # its client went away meanwhile
                continue
            if binding.instance_id is None:
                fut.set_exception(self._unavailable(binding.error or "no instance"))
                continue
            self._dispatch(binding.request, binding.instance_id, now_s)
            fut.set_result(binding.instance_id)

    def _queue_full(self, full: Full) -> RequestError:
        """The 429 for a refused admission (one request or an `n` > 1 group)."""
        self._counts["refused_429"] += 1
        return RequestError(
            429,
            f"the service is at capacity ({full.reason}); retry after {math.ceil(full.retry_after_s)} s",
            type="rate_limit_exceeded",
            code="queue_full",
            retry_after_s=full.retry_after_s,
        )

    def _shed(self, arriving: int = 0) -> RequestError | None:
        """The 429 a new request gets now whatever it is (no slot or queue place is left), before
        it is parsed: the door (with its `arriving` count) and the handle methods ask first, so a
        refusal under overload costs no work."""
        full = self._admission.refuse_now(lambda: self._routable_views(time.monotonic()), arriving)
        return None if full is None else self._queue_full(full)

    def _unavailable(self, why: str) -> RequestError:
        self._counts["refused_503"] += 1
        return RequestError(
            503,
            f"no healthy instance can take the request: {why}",
            type="service_unavailable",
            code="no_instance",
            retry_after_s=1.0,
        )

    async def _bind(self, info: RequestInfo, exclude: frozenset[str]) -> str:
        """Admit `info` and return the instance it is dispatched to (waiting in the router's
        queue if none has room). Raises RequestError 429 (queue full) or 503 (none routable).
        A retry (`exclude` non-empty) was admitted before: never refused, first in the queue."""
        if not self._instances:
            await self._wait_for_instances()
        now_s = time.monotonic()
        t0 = time.perf_counter()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()  # resolved by the pump if queued
        try:
            decision = self._admission.offer(
                info, fut, self._routable_views(now_s), now_s, exclude, retry=bool(exclude)
            )
        except NoInstanceError as exc:
            raise self._unavailable(str(exc)) from None
        if isinstance(decision, Bound):
            self._metrics.decision(self._policy_name, time.perf_counter() - t0)
            self._dispatch(info, decision.instance_id, now_s)
            return decision.instance_id
        if isinstance(decision, Full):
            raise self._queue_full(decision)
        self._counts["queued"] += 1
        return (await self._await_bindings([info], [fut]))[0]

    async def _bind_children(self, children: Sequence[Prepared]) -> list[str]:
        """`_bind` for the children of an `n` > 1 request (serving/fanout.py): admitted, refused
        (429, as n requests) or queued together, and bound to one instance."""
        if not self._instances:
            await self._wait_for_instances()
        now_s = time.monotonic()
        infos = [placement_info(c, now_s) for c in children]
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future] = [loop.create_future() for _ in infos]
        try:
            decisions = self._admission.offer_group(infos, futs, self._routable_views(now_s), now_s)
        except NoInstanceError as exc:
            raise self._unavailable(str(exc)) from None
        if isinstance(decisions, Full):
            raise self._queue_full(decisions)
        for info, fut, decision in zip(infos, futs, decisions, strict=True):
            if isinstance(decision, Bound):
                self._dispatch(info, decision.instance_id, now_s)
                fut.set_result(decision.instance_id)
            elif isinstance(decision, Queued):
                self._counts["queued"] += 1
        return await self._await_bindings(infos, futs)

    async def _await_bindings(self, infos: Sequence[RequestInfo], futs: Sequence[asyncio.Future]) -> list[str]:
        """Wait (at most `queue_timeout_s`) until the pump has bound every one of `infos`. On a
        timeout (503), a refusal of one of them, or the client going away, all of them leave the
        queue, and any already dispatched is abandoned on its instance."""
        self._busy_since_trim = True
        gathered = asyncio.gather(*futs)
        try:
            return list(await asyncio.wait_for(asyncio.shield(gathered), self._spec.queue_timeout_s))
        except BaseException as exc:
            gathered.cancel()
            for info, fut in zip(infos, futs, strict=True):
                self._admission.remove(info.request_id)
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._abandon(info.request_id, fut.result())
                fut.cancel()
            if isinstance(exc, TimeoutError):
                raise self._unavailable(f"waited {self._spec.queue_timeout_s:.0f} s in the router's queue") from None
            raise

    def _abandon(self, request_id: str, instance_id: str) -> None:
        """A dispatched request that never reached its instance (its client left first)."""
        now_s = time.monotonic()
        self._tracker.on_complete(request_id, now_s)
        self._policy.on_complete(request_id, instance_id, now_s)
        self._admission.on_complete(request_id)
        self._health.on_abandon(instance_id)

    # ---- dispatch ----------------------------------------------------------------------------
    async def _stream_tokens(
        self, prepared: Prepared, buffered: bool = False, bound_to: str | None = None
    ) -> AsyncGenerator[TokenChunk, None]:
        """Admit, place and stream the request's chunks, retrying failed instances.

        `buffered` (unary requests): chunks are held until the request completes, so a failure at
        any point before that is retried elsewhere. Streams retry only before their first chunk.
        `bound_to`: already admitted and dispatched there (a child of an `n` > 1 request)."""
        req = prepared.request
        arrival_s = time.monotonic()
        tried: set[str] = set()
        last: _InstanceFailure | None = None
        for attempt in range(max(1, self._spec.max_tries)):
            if attempt:
                self._counts["retried"] += 1
                await asyncio.sleep(self._spec.retry_backoff_s * 2 ** (attempt - 1))
            info = placement_info(prepared, time.monotonic())
            try:
                instance_id = bound_to if bound_to and not attempt else await self._bind(info, frozenset(tried))
            except RequestError as err:
                if last is not None and err.status_code == 503:
                    break  # nowhere left to retry: report the instance's failure
                raise
            tried.add(instance_id)
            held: list[TokenChunk] = []
            sent = False
            try:
                # aclosing: a client that leaves mid-stream closes the try at once (its finally
                # aborts the request on the instance), not whenever the GC finalizes it.
                async with aclosing(self._attempt(prepared, instance_id, arrival_s, buffered)) as chunks:
                    async for chunk in chunks:
                        if buffered:
                            held.append(chunk)
                        else:
                            sent = True
                            yield chunk
                for chunk in held:
                    yield chunk
                return
            except _InstanceFailure as failure:
                last = failure
                if sent:
                    raise failure.error from None
                logger.warning(
                    "hetserve router: request %s failed on instance %s (try %d of %d), retrying: %s",
                    req.request_id,
                    instance_id,
                    attempt + 1,
                    self._spec.max_tries,
                    failure.error.message[:200],
                )
        assert last is not None
        self._counts["failed"] += 1
        raise last.error

    async def _attempt(
        self, prepared: Prepared, instance_id: str, arrival_s: float, buffered: bool = False
    ) -> AsyncGenerator[TokenChunk, None]:
        """One try on `instance_id` (already dispatched in the tracker): stream its chunks.
        Failures of the instance become _InstanceFailure (after updating its health)."""
        req = prepared.request
        inst = self._instances.get(instance_id)
        if inst is None:  # left the replica set between binding and now
            self._abandon(req.request_id, instance_id)
            raise _InstanceFailure(
                instance_id, RequestError(503, f"instance {instance_id} left", type="service_unavailable")
            )
        self._metrics.routed(inst.tags)
        # A unary request reaches its client only complete: fewer, larger chunks (each one costs
        # this router's event loop a message; under overload they would crowd out admission).
        kwargs: dict[str, Any] = {TARGET_KWARG: instance_id}
        if buffered:
            kwargs["stream_interval_s"] = UNARY_STREAM_INTERVAL_S
        response = self._handles[inst.deployment.name].generate.remote(req, **kwargs)
        first_s = last_s = None
        num_out = 0
        done = False
        verdict: bool | None = None  # True: instance served; False: instance failed
        timeout_s = self._spec.instance_timeout_s
        try:
            iterator = response.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(iterator.__anext__(), timeout_s)
                except StopAsyncIteration:
                    break
                last_s = time.monotonic()
                if first_s is None and chunk.token_ids:
                    first_s = last_s
                num_out = chunk.num_output_tokens
                self._tracker.on_tokens(req.request_id, len(chunk.token_ids), last_s)
                yield chunk
            done = True
            verdict = True
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except TimeoutError:
            verdict = False
            self._health.on_failure(instance_id, time.monotonic())
            raise _InstanceFailure(
                instance_id,
                RequestError(
                    503,
                    f"instance {instance_id} ({inst.deployment.name}) sent nothing for {timeout_s:.0f} s",
                    type="service_unavailable",
                    code="instance_timeout",
                ),
            ) from None
        except Exception as exc:
            if not _is_instance_failure(exc):
                verdict = True  # the request's own problem, not the instance's
                raise from_exception(exc) from None
            verdict = False
            dead = isinstance(exc, ActorDiedError)
            now_s = time.monotonic()
            if dead:
                self._health.on_dead(instance_id)
            self._health.on_failure(instance_id, now_s)
            raise _InstanceFailure(
                instance_id,
                RequestError(
                    503,
                    f"instance {instance_id} ({inst.deployment.name}) went away during the request: "
                    f"{type(exc).__name__}: {str(exc)[:300]}",
                    type="service_unavailable",
                    code="instance_unavailable",
                ),
                dead=dead,
            ) from None
        finally:
            if not done:
                response.cancel()  # the client went away or the call failed: free the engine's KV
            if verdict is True:
                self._health.on_success(instance_id)
            elif verdict is None:
                self._health.on_abandon(instance_id)
            end_s = time.monotonic()
            self._tracker.on_complete(req.request_id, end_s)
            self._policy.on_complete(req.request_id, instance_id, end_s)
            self._admission.on_complete(req.request_id)
            ttft = first_s - arrival_s if first_s is not None else None
            tpot = (
                (last_s - first_s) / (num_out - 1)
                if first_s is not None and last_s is not None and num_out > 1
                else None
            )
            if done:
                self._metrics.latency(inst.tags, ttft, tpot, end_s - arrival_s)
            self._pump()  # its slot is free: bind the next queued request

    async def _complete(self, prepared: Prepared, bound_to: str | None = None) -> dict[str, Any]:
        if prepared.n > 1:
            return await fanout.complete_choices(prepared, self._bind_children, self._complete, self._abandon)
        if bound_to is not None:  # a child of an n > 1 request, in its own task
            _own_serve_request_context(prepared.request.request_id)
        chunks = self._stream_tokens(prepared, buffered=True, bound_to=bound_to)
        return await render.response_of(prepared, self._spec.model, chunks)

    async def _chunk_dicts(
        self, prepared: Prepared, bound_to: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """OpenAI stream chunks; a chat stream carries the assistant role in its first chunk."""
        if prepared.n > 1:
            async with aclosing(
                fanout.stream_choices(prepared, self._bind_children, self._chunk_dicts, self._abandon)
            ) as merged:
                async for item in merged:
                    yield item
            return
        if bound_to is not None:  # a child of an n > 1 request, iterated by its own task
            _own_serve_request_context(prepared.request.request_id)
        tokens = self._stream_tokens(prepared, bound_to=bound_to)
        async with aclosing(tokens), aclosing(render.stream_of(prepared, self._spec.model, tokens)) as items:
            async for item in items:
                yield item

    async def _sse(self, prepared: Prepared) -> StreamingResponse | JSONResponse:
        return await render.sse_of(self._chunk_dicts(prepared))

    # ---- Python API (handles) ------------------------------------------------------------------
    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Unary: an OpenAI completion (or chat completion, if `messages` is given) as a dict.
        Raises RequestError with status_code and message on refusal or failure."""
        if (refusal := self._shed()) is not None:
            raise refusal
        return await self._complete(self._prepare.from_dict(request))

    async def generate_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming (`handle.options(stream=True).generate_stream.remote(...)`): OpenAI chunks."""
        if (refusal := self._shed()) is not None:
            raise refusal
        prepared = self._prepare.from_dict(request)
        async for item in self._chunk_dicts(prepared):
            yield item

    async def instances(self) -> list[dict[str, Any]]:
        """Each instance's state as this router replica sees it (also GET /v1/hetserve/instances)."""
        self._sync_instances()
        now_s = time.monotonic()
        out = []
        for view in self._tracker.views():
            inst = self._instances[view.instance_id]
            stats = stats_from_routing(inst.stats)
            out.append(
                {
                    "instance_id": view.instance_id,
                    "deployment": view.deployment,
                    "accelerator": view.accelerator,
                    "tp": inst.deployment.config.tp,
                    "node_id": inst.node_id,
                    "healthy": view.healthy,
                    "capacity_tokens_per_s": view.capacity_tokens_per_s,
                    "predicted_tokens_per_s": inst.deployment.prediction.output_tokens_per_s,
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
                    # What C rests on: fitted coefficients, speed vs plan, step-time error of the
                    # fit and of the plan (measured vs predicted), C's uncertainty and mix.
                    **self._tracker.fit_summary(view.instance_id),
                    "routable": view.healthy and self._health.routable(view.instance_id, now_s),
                    **self._health.describe(view.instance_id, now_s),
                }
            )
        return out

    async def router_stats(self) -> dict[str, Any]:
        """This router replica: process memory, queue and refusal counts (also GET
        /v1/hetserve/router; tests and benchmarks read memory here)."""
        views = self._tracker.views()
        return {
            "router": self._router_id,
            "pid": os.getpid(),
            "rss_bytes": _rss_bytes(),
            "queue_length": len(self._admission),
            "queued_work_tokens": self._admission.queued_work_tokens,
            "in_flight": sum(v.num_outstanding for v in views),
            "bound_past_head": self._admission.num_passed_head,
            "policy": {"name": self._policy_name, **self._policy.stats()},
            **self._counts,
        }

    def plan(self) -> dict[str, Any]:
        return {**self._spec.plan_view, "policy": self._policy_name} if self._spec.plan_view else {}

    def _new_tracker(self) -> LoadTracker:
        return LoadTracker(
            default_output_tokens=self._spec.default_output_tokens,
            learn_capacity=self._spec.learn_capacity,
            # Reports are dated when the engine took them; a request dispatched within about a
            # period of that may not have reached the engine yet.
            report_grace_s=max(1.0, 2.0 * self._spec.stats_period_s),
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve `user_config` of the router deployment: `{"policy": name, "seed": n}` swaps in a
        fresh policy and a fresh load tracker (instances rejoin at the next reconcile), without
        touching the instance replicas. A router-only, lightweight update: `hetserve bench`
        compares policies on the same running instances this way."""
        config = config or {}
        name = str(config.get("policy", self._policy_name))
        self._policy = make_policy(name, seed=int(config.get("seed", self._spec.seed)), classes=self._spec.classes)
        self._policy_name = name
        self._admission.policy = self._policy
        self._tracker = self._new_tracker()
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
        healthy = len(self._routable_views(time.monotonic()))
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

    @api.get("/v1/hetserve/router")
    async def http_router(self):
        return await self.router_stats()


RouterIngress = serve.ingress(api)(RouterServer)
