"""Admission control and late binding: a bounded router-side queue in front of the policy.

Plain Python (no ray, no clock): the live router and the simulator drive the same object.

Without it every request is committed to an instance the moment it arrives, and an overloaded
cluster queues without limit inside the engines (a slow instance's backlog then holds requests a
fast one could have started sooner). With it:

- An instance *has room* while its outstanding requests (this router's and, from the engines'
  reports, the other router replicas') are below `slots_factor x max_num_seqs` AND their
  estimated KV demand (prompt + expected output each; the other replicas' requests at this
  replica's mean) plus the new request's fits `kv_factor x` its KV cache: a request sent there
  starts in the next batch instead of waiting in the engine (batch slots bind short requests, KV
  long ones).
- A request that arrives while some eligible instance has room is placed at once by the policy,
  among the instances with room. Otherwise it waits here, FIFO, and is bound to an instance
  late, when one has room (`next_binding`, called whenever work completes or reports arrive).
- The queue is bounded by count and by total estimated work (the tracker's units, output-token
  equivalents). A request that does not fit is refused at once (`Full`, with a Retry-After
  estimate: the queued work over the healthy instances' capacity), never queued without limit.

A request with `n` > 1 choices arrives as n child requests (`offer_group`): they count as n
requests against every bound (queue count, queued work, slots, KV), are refused or queued all
together, and are bound to one instance, the one the policy picks for the first, so that the
shared prompt is computed once there and reused from its prefix cache (serving/fanout.py).

With `late_binding=False` a request is placed at arrival on any eligible instance (the policy's
own choice, as without admission control) and only the bound applies: the requests beyond the
cluster's slots count as the queue.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from hetserve.records import RequestInfo
from hetserve.scheduling.base import InstanceView, NoInstanceError, SchedulingPolicy, estimate_work

__all__ = ["AdmissionConfig", "AdmissionQueue", "Binding", "Bound", "Full", "Queued"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """Bounds of the router-side queue and when an instance counts as having room."""

    max_queue_requests: int = 1024
    max_queue_work_tokens: float = math.inf
    slots_factor: float = 1.0  # room while outstanding < slots_factor x max_num_seqs
    kv_factor: float = 1.0  # ... and estimated KV demand <= kv_factor x KV capacity
    late_binding: bool = True
    pick_window: int = 64  # the oldest waiting requests a class-aware policy may pick from

    def __post_init__(self) -> None:
        if self.max_queue_requests < 0:
            raise ValueError(f"max_queue_requests must be >= 0 (got {self.max_queue_requests})")
        if self.max_queue_work_tokens < 0:
            raise ValueError(f"max_queue_work_tokens must be >= 0 (got {self.max_queue_work_tokens})")
        if self.slots_factor <= 0 or self.kv_factor <= 0:
            raise ValueError(f"slots_factor and kv_factor must be > 0 (got {self.slots_factor}, {self.kv_factor})")


@dataclass(frozen=True, slots=True)
class Bound:
    """Placed now on `instance_id` (the caller dispatches it)."""

    instance_id: str


@dataclass(frozen=True, slots=True)
class Queued:
    """Waiting in the router-side queue; `next_binding` will place it."""

    position: int


@dataclass(frozen=True, slots=True)
class Full:
    """Refused: the queue is at its bound. Retry after `retry_after_s`."""

    retry_after_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Binding(Generic[T]):
    """A queued request leaving the queue: bound to `instance_id`, or (instance_id None) no
    longer placeable (no healthy instance can hold it; `error` says why)."""

    item: T
    request: RequestInfo
    instance_id: str | None
    error: str | None = None


@dataclass(slots=True)
class _Entry(Generic[T]):
    item: T
    request: RequestInfo
    work: float
    exclude: frozenset[str] = field(default_factory=frozenset)
    group: str | None = None  # children of one n > 1 request share it (and their instance)


class AdmissionQueue(Generic[T]):
    """FIFO of requests waiting for an instance with room; see the module docstring.

    `slots` per instance (its engine's max_num_seqs) are registered with `set_slots`; an instance
    without registered slots always has room (nothing known to bound it by).
    """

    def __init__(self, policy: SchedulingPolicy, config: AdmissionConfig | None = None):
        self.policy = policy
        self.config = config or AdmissionConfig()
        self._slots: dict[str, float] = {}
        self._queue: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._queued_work = 0.0
        self._kv_demand: dict[str, float] = {}  # per instance: KV demand of the requests bound here
        self._num_bound: dict[str, int] = {}
        self._bound: dict[str, tuple[str, float]] = {}  # request id -> (instance, its KV demand)
        self._group_left: dict[str, int] = {}  # group -> its children still queued
        self._group_instance: dict[str, str] = {}  # group -> where its first child was bound
        self.num_refused = 0
        self.num_queued_total = 0
        self.num_passed_head = 0  # bindings of a request other than the head (pick_queued)

    # ---- instances -------------------------------------------------------------------------
    def set_slots(self, instance_id: str, max_num_seqs: int | None) -> None:
        if max_num_seqs is None:
            self._slots.pop(instance_id, None)
        else:
            self._slots[instance_id] = max(1.0, self.config.slots_factor * max_num_seqs)

    def remove_instance(self, instance_id: str) -> None:
        self._slots.pop(instance_id, None)
        self._kv_demand.pop(instance_id, None)
        self._num_bound.pop(instance_id, None)

    def has_room(self, view: InstanceView, request: RequestInfo | None = None) -> bool:
        slots = self._slots.get(view.instance_id)
        if slots is not None and view.num_outstanding >= slots:
            return False
        own = self._kv_demand.get(view.instance_id, 0.0)
        num_own = self._num_bound.get(view.instance_id, 0)
        new = _kv_demand(request, view) if request is not None else 0.0
        # Requests of other router replicas: as many as the view holds beyond ours, each at our mean.
        others = max(0, view.num_outstanding - num_own) * (own / num_own if num_own else new)
        return num_own + max(0, view.num_outstanding - num_own) == 0 or (
            own + others + new <= self.config.kv_factor * view.kv_capacity_tokens
        )

    # ---- bound requests (their KV demand) ---------------------------------------------------
    def _on_bound(self, request: RequestInfo, view: InstanceView) -> None:
        demand = _kv_demand(request, view)
        iid = view.instance_id
        self._bound[request.request_id] = (iid, demand)
        self._kv_demand[iid] = self._kv_demand.get(iid, 0.0) + demand
        self._num_bound[iid] = self._num_bound.get(iid, 0) + 1

    def on_complete(self, request_id: str) -> None:
        """A request this queue bound finished, failed or was abandoned: its KV demand leaves."""
        entry = self._bound.pop(request_id, None)
        if entry is None:
            return
        iid, demand = entry
        if iid in self._num_bound:
            self._num_bound[iid] -= 1
            self._kv_demand[iid] = max(0.0, self._kv_demand[iid] - demand) if self._num_bound[iid] else 0.0

    def _bind(self, request: RequestInfo, candidates: Sequence[InstanceView], now_s: float) -> str:
        iid = self.policy.select(request, candidates, now_s)
        self._on_bound(request, next(v for v in candidates if v.instance_id == iid))
        return iid

    # ---- queue -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_work_tokens(self) -> float:
        return self._queued_work

    def offer(
        self,
        request: RequestInfo,
        item: T,
        views: Sequence[InstanceView],
        now_s: float,
        exclude: frozenset[str] = frozenset(),
        work: float | None = None,
        retry: bool = False,
    ) -> Bound | Queued | Full:
        """Place, queue or refuse a new request. `views`: the instances the caller may route to
        (healthy ones; failed or broken ones already left out); `exclude`: instances this
        request must not go to (tried already). `retry`: a request admitted before whose
        instance failed; never refused, and it waits at the head of the queue. Raises
        NoInstanceError if none can hold it."""
        eligible = _eligible(request, views, exclude)
        if not eligible:
            raise NoInstanceError(
                f"no healthy instance can hold request {request.request_id} "
                f"({request.num_prompt_tokens} prompt + {request.max_tokens} max tokens; "
                f"{sum(v.healthy for v in views)} healthy, {len(exclude)} tried already)"
            )
        w = work if work is not None else _work(request, eligible)
        if not self.config.late_binding and not retry:
            slots = sum(self._slots.get(v.instance_id, math.inf) for v in eligible)
            excess = max(0.0, sum(v.num_outstanding for v in eligible) - slots)
            if excess + 1 > self.config.max_queue_requests:
                return self._refuse(eligible, 0.0, w, "the cluster's queues are full")
            return Bound(self._bind(request, eligible, now_s))
        if not self._queue or retry:
            roomy = [v for v in eligible if self.has_room(v, request)]
            if roomy or (retry and not self.config.late_binding):
                return Bound(self._bind(request, roomy or eligible, now_s))
        if retry:
            self._queue[request.request_id] = _Entry(item, request, w, exclude)
            self._queue.move_to_end(request.request_id, last=False)
            self._queued_work += w
            self.num_queued_total += 1
            return Queued(1)
        if len(self._queue) + 1 > self.config.max_queue_requests:
            return self._refuse(eligible, self._queued_work, w, f"{len(self._queue)} requests wait already")
        if self._queued_work + w > self.config.max_queue_work_tokens and self._queue:
            return self._refuse(eligible, self._queued_work, w, f"{self._queued_work:.0f} tokens of work wait already")
        self._queue[request.request_id] = _Entry(item, request, w, exclude)
        self._queued_work += w
        self.num_queued_total += 1
        return Queued(len(self._queue))

    def refuse_now(self, views: Callable[[], Sequence[InstanceView]], arriving: int = 0) -> Full | None:
        """The refusal a new request gets now, decided before the request is parsed (at the
        door): every free batch slot and every place in the queue is already spoken for, by the
        queue itself and by `arriving` requests (let in at the door, their bodies still being
        read; each will take a slot or a place). Under overload a refusal then costs no parsing
        and no scheduler work, and the requests let in are the ones that fit, so almost none is
        refused after its body was read. None: let it in (offer() still has the last word).
        `views` is called only when the queue and the arrivals could fill every place: every
        request asks, and below that point the answer needs no instance view."""
        if not self.config.late_binding or len(self._queue) + arriving < self.config.max_queue_requests:
            return None
        healthy = [v for v in views() if v.healthy]
        if not healthy:
            return None  # offer() answers that (503), with the request's own reason
        free = sum(max(0.0, self._slots.get(v.instance_id, math.inf) - v.num_outstanding) for v in healthy)
        if len(self._queue) + arriving < self.config.max_queue_requests + free:
            return None
        return self._refuse(healthy, self._queued_work, 0.0, f"{len(self._queue)} requests wait already")

    def remove(self, request_id: str) -> bool:
        """Forget a queued request (its client went away); False if it is not queued."""
        entry = self._queue.pop(request_id, None)
        if entry is None:
            return False
        self._drop_work(entry)
        self._leave_group(entry)
        return True

    def next_binding(self, views: Sequence[InstanceView], now_s: float) -> Binding[T] | None:
        """The head of the queue bound to an instance with room, or None if it must wait.

        Call it repeatedly (dispatching each binding, so that `views` see its work) until None.
        A head that no routable instance can hold any more is returned unbound (the caller
        refuses it) rather than blocking the queue."""
        if not self._queue:
            return None
        picked = self._policy_pick(views, now_s)
        if picked is not None:
            return picked
        rid, entry = next(iter(self._queue.items()))
        eligible = _eligible(entry.request, views, entry.exclude)
        if not eligible:
            self._queue.popitem(last=False)
            self._drop_work(entry)
            self._leave_group(entry)
            return Binding(entry.item, entry.request, None, "no healthy instance can hold it any more")
        pinned = self._group_instance.get(entry.group) if entry.group is not None else None
        sibling = next((v for v in eligible if v.instance_id == pinned), None)
        if sibling is not None:  # a child of a group already bound: joins its siblings
            self._queue.popitem(last=False)
            self._drop_work(entry)
            self._on_bound(entry.request, sibling)
            self._leave_group(entry)
            return Binding(entry.item, entry.request, sibling.instance_id)
        roomy = [v for v in eligible if self.has_room(v, entry.request)]
        if not roomy:
            return None
        self._queue.popitem(last=False)
        self._drop_work(entry)
        iid = self._bind(entry.request, roomy, now_s)
        if entry.group is not None:
            self._group_instance[entry.group] = iid
        self._leave_group(entry)
        return Binding(entry.item, entry.request, iid)

    def _policy_pick(self, views: Sequence[InstanceView], now_s: float) -> Binding[T] | None:
        """A waiting request other than the head that the policy would rather bind now
        (`SchedulingPolicy.pick_queued`; the head for most policies). The policy sees each of
        the oldest `pick_window` plain requests (no group) with the instances that have room
        for it now; None: bind the head as always."""
        if len(self._queue) < 2 or not self.policy.pulls_from_queue:
            return None
        roomy = [v for v in views if v.healthy and self.has_room(v)]
        if not roomy:
            return None
        window = [e for e in itertools.islice(self._queue.values(), self.config.pick_window) if e.group is None]
        if not window or window[0] is not next(iter(self._queue.values())):
            return None
        fits = [[v for v in _eligible(e.request, roomy, e.exclude) if self.has_room(v, e.request)] for e in window]
        i = self.policy.pick_queued([(e.request, f) for e, f in zip(window, fits, strict=True)])
        if i <= 0 or i >= len(window) or not fits[i]:
            return None
        entry = window[i]
        del self._queue[entry.request.request_id]
        self._drop_work(entry)
        self.num_passed_head += 1
        return Binding(entry.item, entry.request, self._bind(entry.request, fits[i], now_s))

    def drain_all(self) -> list[Binding[T]]:
        """Empty the queue (shutdown): every entry unbound."""
        out = [Binding(e.item, e.request, None, "the router is shutting down") for e in self._queue.values()]
        self._queue.clear()
        self._queued_work = 0.0
        self._group_left.clear()
        self._group_instance.clear()
        return out

    def offer_group(
        self, requests: Sequence[RequestInfo], items: Sequence[T], views: Sequence[InstanceView], now_s: float
    ) -> list[Bound | Queued] | Full:
        """Place, queue or refuse the n children of one request with `n` > 1 (same prompt and
        max_tokens), as n requests: refused unless the queue holds all n (count and work),
        placed at once when the first has room somewhere (the others follow it onto that
        instance, which may take them past its slots by n-1: its engine queues them, as vLLM
        queues the children of one request), else queued together and bound, when the first
        leaves the queue, where it goes. One decision per child, in order. Raises
        NoInstanceError if none can hold them."""
        first, n = requests[0], len(requests)
        eligible = _eligible(first, views, frozenset())
        if not eligible:
            raise NoInstanceError(
                f"no healthy instance can hold request {first.request_id} "
                f"({first.num_prompt_tokens} prompt + {first.max_tokens} max tokens; "
                f"{sum(v.healthy for v in views)} healthy)"
            )
        w = _work(first, eligible)
        if not self.config.late_binding:
            slots = sum(self._slots.get(v.instance_id, math.inf) for v in eligible)
            excess = max(0.0, sum(v.num_outstanding for v in eligible) - slots)
            if excess + n > self.config.max_queue_requests:
                return self._refuse(eligible, 0.0, n * w, "the cluster's queues are full")
            return self._bind_together(requests, eligible, now_s)
        if not self._queue:
            roomy = [v for v in eligible if self.has_room(v, first)]
            if roomy:
                return self._bind_together(requests, roomy, now_s)
        if len(self._queue) + n > self.config.max_queue_requests:
            return self._refuse(
                eligible, self._queued_work, n * w, f"{len(self._queue)} requests wait already ({n} choices asked)"
            )
        if self._queued_work + n * w > self.config.max_queue_work_tokens and self._queue:
            return self._refuse(
                eligible, self._queued_work, n * w, f"{self._queued_work:.0f} tokens of work wait already"
            )
        group = first.request_id
        self._group_left[group] = n
        for request, item in zip(requests, items, strict=True):
            self._queue[request.request_id] = _Entry(item, request, w, group=group)
            self._queued_work += w
            self.num_queued_total += 1
        return [Queued(len(self._queue) - n + i + 1) for i in range(n)]

    def _bind_together(
        self, requests: Sequence[RequestInfo], candidates: Sequence[InstanceView], now_s: float
    ) -> list[Bound | Queued]:
        iid = self._bind(requests[0], candidates, now_s)
        view = next(v for v in candidates if v.instance_id == iid)
        for request in requests[1:]:
            self._on_bound(request, view)
        out: list[Bound | Queued] = [Bound(iid) for _ in requests]
        return out

    def _leave_group(self, entry: _Entry[T]) -> None:
        """A grouped child left the queue; the group's pin goes with its last queued child."""
        if entry.group is None:
            return
        left = self._group_left.get(entry.group, 1) - 1
        if left > 0:
            self._group_left[entry.group] = left
        else:
            self._group_left.pop(entry.group, None)
            self._group_instance.pop(entry.group, None)

    # ---- internals -------------------------------------------------------------------------
    def _drop_work(self, entry: _Entry[T]) -> None:
        self._queued_work = max(0.0, self._queued_work - entry.work) if self._queue else 0.0

    def _refuse(self, eligible: Sequence[InstanceView], waiting: float, w: float, why: str) -> Full:
        self.num_refused += 1
        capacity = sum(v.capacity_tokens_per_s for v in eligible)
        # Work ahead of a retry: what waits now plus the instances' own backlog, at full speed.
        backlog = waiting + sum(v.outstanding_tokens for v in eligible)
        retry = (backlog + w) / capacity if capacity > 0 else 1.0
        return Full(retry_after_s=max(1.0, retry), reason=why)


def _eligible(request: RequestInfo, views: Sequence[InstanceView], exclude: frozenset[str]) -> list[InstanceView]:
    return [v for v in views if v.healthy and v.instance_id not in exclude and v.can_hold(request)]


def _kv_demand(request: RequestInfo, view: InstanceView) -> float:
    """KV tokens a request is expected to hold at its end: prompt + expected output."""
    return request.num_prompt_tokens + min(float(request.max_tokens), view.mean_output_tokens)


def _work(request: RequestInfo, views: Sequence[InstanceView]) -> float:
    v = views[0]
    return estimate_work(request, v.prefill_weight, v.mean_output_tokens)
