"""The router-side admission queue (plain Python): placement with room, late binding, bounds."""

from __future__ import annotations

import math

import pytest

from hetserve.records import RequestInfo
from hetserve.scheduling import LoadTracker, NoInstanceError, make_policy
from hetserve.scheduling.admission import AdmissionConfig, AdmissionQueue, Bound, Full, Queued


def _setup(slots: int = 2, **config):
    tracker = LoadTracker(default_output_tokens=32)
    tracker.add_instance("fast", "A", "A100", 1000.0, 100_000, max_num_seqs=slots)
    tracker.add_instance("slow", "B", "T4", 100.0, 100_000, max_num_seqs=slots)
    policy = make_policy("hetero")
    queue: AdmissionQueue[str] = AdmissionQueue(policy, AdmissionConfig(**config))
    queue.set_slots("fast", slots)
    queue.set_slots("slow", slots)
    return tracker, policy, queue


def _req(i: int, prompt: int = 64, max_tokens: int = 32) -> RequestInfo:
    return RequestInfo(f"r{i}", prompt, max_tokens)


def test_requests_wait_for_room_and_bind_late_to_the_instance_that_frees_first():
    tracker, _, queue = _setup(slots=2, max_queue_requests=10)
    placed = []
    for i in range(4):  # fills both instances' slots
        d = queue.offer(_req(i), f"r{i}", tracker.views(), 0.0)
        assert isinstance(d, Bound)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
        placed.append(d.instance_id)
    assert sorted(placed) == ["fast", "fast", "slow", "slow"]
    assert isinstance(queue.offer(_req(4), "r4", tracker.views(), 0.0), Queued)
    assert isinstance(queue.offer(_req(5), "r5", tracker.views(), 0.0), Queued)
    assert queue.next_binding(tracker.views(), 0.1) is None  # nobody has room yet
    # The slow instance finishes one first: the head of the queue goes there, not to the fast
    # instance's backlog (where placement on arrival would have put it).
    slow_rid = next(f"r{i}" for i, iid in enumerate(placed) if iid == "slow")
    tracker.on_complete(slow_rid, 0.2)
    b = queue.next_binding(tracker.views(), 0.2)
    assert b is not None and (b.item, b.instance_id) == ("r4", "slow")
    tracker.on_dispatch(b.request, b.instance_id, 0.2)
    assert queue.next_binding(tracker.views(), 0.2) is None and len(queue) == 1


def test_full_queue_refuses_with_a_retry_estimate_and_bounds_work_too():
    tracker, _, queue = _setup(slots=1, max_queue_requests=2)
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert isinstance(queue.offer(_req(2), "x", tracker.views(), 0.0), Queued)
    assert isinstance(queue.offer(_req(3), "x", tracker.views(), 0.0), Queued)
    full = queue.offer(_req(4), "x", tracker.views(), 0.0)
    assert isinstance(full, Full) and full.retry_after_s >= 1.0 and "2 requests wait" in full.reason
    assert queue.remove("r2") and not queue.remove("r2")
    assert isinstance(queue.offer(_req(5), "x", tracker.views(), 0.0), Queued)

    tracker, _, queue = _setup(slots=1, max_queue_requests=100, max_queue_work_tokens=100.0)
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert isinstance(queue.offer(_req(2, max_tokens=64), "x", tracker.views(), 0.0), Queued)  # ~45 tokens
    assert isinstance(queue.offer(_req(3, max_tokens=64), "x", tracker.views(), 0.0), Queued)
    assert isinstance(queue.offer(_req(4, max_tokens=64), "x", tracker.views(), 0.0), Full)
    assert queue.queued_work_tokens == pytest.approx(2 * (0.2 * 64 + 32))


def test_refuse_now_counts_free_slots_queue_places_and_requests_still_arriving():
    """The door's check before parsing: refuse exactly when every free batch slot and queue place
    is spoken for, by the queue and by `arriving` requests (let in, bodies still being read)."""
    tracker, _, queue = _setup(slots=1, max_queue_requests=2)  # 2 instances x 1 slot + 2 places
    assert queue.refuse_now(tracker.views) is None
    assert queue.refuse_now(tracker.views, arriving=3) is None
    full = queue.refuse_now(tracker.views, arriving=4)
    assert isinstance(full, Full) and full.retry_after_s >= 1.0
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert queue.refuse_now(tracker.views, arriving=1) is None  # slots taken, places left
    assert isinstance(queue.refuse_now(tracker.views, arriving=2), Full)
    queue.offer(_req(2), "x", tracker.views(), 0.0)
    queue.offer(_req(3), "x", tracker.views(), 0.0)
    full = queue.refuse_now(tracker.views)
    assert isinstance(full, Full) and "2 requests wait" in full.reason
    assert isinstance(queue.offer(_req(4), "x", tracker.views(), 0.0), Full)  # the same verdict
    assert queue.num_refused == 4
    queue.remove("r3")
    assert queue.refuse_now(tracker.views) is None
    # A zero-length queue refuses nothing while an instance has a free slot.
    tracker, _, queue = _setup(slots=1, max_queue_requests=0)
    assert queue.refuse_now(tracker.views, arriving=1) is None
    assert isinstance(queue.offer(_req(0), "x", tracker.views(), 0.0), Bound)
    # Without late binding requests go straight to instances: the door never refuses.
    tracker, _, queue = _setup(slots=1, max_queue_requests=0, late_binding=False)
    assert queue.refuse_now(tracker.views, arriving=100) is None


def test_exclusions_and_unplaceable_requests():
    tracker, _, queue = _setup(slots=4)
    d = queue.offer(_req(0), "x", tracker.views(), 0.0, exclude=frozenset({"fast"}))
    assert d == Bound("slow")
    with pytest.raises(NoInstanceError):
        queue.offer(_req(1), "x", tracker.views(), 0.0, exclude=frozenset({"fast", "slow"}))
    # A queued head whose instances all went away is handed back unbound instead of blocking.
    for i in range(2, 10):
        tracker.on_dispatch(_req(i), "fast" if i % 2 else "slow", 0.0)
    assert isinstance(queue.offer(_req(20), "x", tracker.views(), 0.0), Queued)
    b = queue.next_binding([], 0.0)
    assert b is not None and b.instance_id is None and len(queue) == 0


def test_without_late_binding_requests_are_placed_on_arrival_within_the_bound():
    tracker, _, queue = _setup(slots=1, max_queue_requests=2, late_binding=False)
    outcomes = []
    for i in range(5):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        outcomes.append(type(d).__name__)
        if isinstance(d, Bound):
            tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert outcomes == ["Bound", "Bound", "Bound", "Bound", "Full"]
    assert len(queue) == 0


def test_config_is_validated():
    with pytest.raises(ValueError):
        AdmissionConfig(slots_factor=0)
    with pytest.raises(ValueError):
        AdmissionConfig(max_queue_requests=-1)
    assert AdmissionConfig().max_queue_work_tokens == math.inf


def test_a_retry_is_never_refused_and_waits_first():
    tracker, _, queue = _setup(slots=1, max_queue_requests=1)
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert isinstance(queue.offer(_req(2), "new", tracker.views(), 0.0), Queued)
    assert isinstance(queue.offer(_req(3), "new", tracker.views(), 0.0), Full)
    retry = queue.offer(_req(9), "retry", tracker.views(), 0.0, exclude=frozenset({"fast"}), retry=True)
    assert isinstance(retry, Queued) and len(queue) == 2
    tracker.on_complete("r0", 1.0)
    tracker.on_complete("r1", 1.0)
    b = queue.next_binding(tracker.views(), 1.0)
    assert b is not None and (b.item, b.instance_id) == ("retry", "slow")


def _children(parent: str, n: int, prompt: int = 64, max_tokens: int = 32) -> list[RequestInfo]:
    return [RequestInfo(f"{parent}-{i}", prompt, max_tokens) for i in range(n)]


def test_the_children_of_an_n_request_are_placed_together_as_n_requests():
    """n=3 on an idle cluster: all three on the instance the policy picks for the first (the
    shared prompt's prefix cache), each counted there as a request; round robin would have
    spread three separate requests over both instances."""
    tracker, _, queue = _setup(slots=4, max_queue_requests=10)
    queue.policy = make_policy("round_robin")
    kids = _children("g", 3)
    decisions = queue.offer_group(kids, ["a", "b", "c"], tracker.views(), 0.0)
    assert isinstance(decisions, list) and len({d.instance_id for d in decisions}) == 1
    where = decisions[0].instance_id
    for kid in kids:
        tracker.on_dispatch(kid, where, 0.0)
    view = next(v for v in tracker.views() if v.instance_id == where)
    assert view.num_outstanding == 3  # n requests' work in the scheduler's view
    spread = [queue.offer(_req(i), "x", tracker.views(), 0.0) for i in range(3)]
    assert len({d.instance_id for d in spread}) == 2  # the same policy, separate requests


def test_an_n_request_is_refused_unless_the_queue_holds_all_n():
    tracker, _, queue = _setup(slots=1, max_queue_requests=3)
    for i in range(2):  # both instances busy: everything new queues
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert isinstance(queue.offer(_req(2), "x", tracker.views(), 0.0), Queued)
    full = queue.offer_group(_children("g", 3), ["a", "b", "c"], tracker.views(), 0.0)
    assert isinstance(full, Full) and "3 choices" in full.reason  # 1 + 3 > 3, though 1 + 1 fits
    ok = queue.offer_group(_children("h", 2), ["a", "b"], tracker.views(), 0.0)
    assert ok == [Queued(2), Queued(3)] and len(queue) == 3

    # The work bound counts n requests' work too.
    tracker, _, queue = _setup(slots=1, max_queue_requests=100, max_queue_work_tokens=100.0)
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    assert isinstance(queue.offer(_req(2, max_tokens=64), "x", tracker.views(), 0.0), Queued)  # ~45 tokens
    assert isinstance(queue.offer_group(_children("g", 2, max_tokens=64), "ab", tracker.views(), 0.0), Full)
    assert isinstance(queue.offer(_req(3, max_tokens=64), "x", tracker.views(), 0.0), Queued)


def test_queued_children_bind_together_where_the_first_goes():
    tracker, _, queue = _setup(slots=1, max_queue_requests=10)
    placed = {}
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
        placed[d.instance_id] = _req(i).request_id
    kids = _children("g", 3)
    assert queue.offer_group(kids, ["a", "b", "c"], tracker.views(), 0.0) == [Queued(1), Queued(2), Queued(3)]
    assert queue.offer(_req(5), "x", tracker.views(), 0.0) == Queued(4)
    tracker.on_complete(placed["slow"], 0.1)  # the slow instance frees one slot
    got = []
    while (b := queue.next_binding(tracker.views(), 0.1)) is not None:
        tracker.on_dispatch(b.request, b.instance_id, 0.1)
        got.append((b.item, b.instance_id))
    # All three children follow the first onto "slow" (past its one slot: its engine queues
    # them); the plain request behind them waits for room.
    assert got == [("a", "slow"), ("b", "slow"), ("c", "slow")] and len(queue) == 1
    tracker.on_complete(placed["fast"], 0.2)
    b = queue.next_binding(tracker.views(), 0.2)
    assert b is not None and (b.item, b.instance_id) == ("x", "fast")


def test_a_group_leaving_the_queue_forgets_its_instance():
    tracker, _, queue = _setup(slots=1, max_queue_requests=10)
    for i in range(2):
        d = queue.offer(_req(i), "x", tracker.views(), 0.0)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    kids = _children("g", 2)
    queue.offer_group(kids, ["a", "b"], tracker.views(), 0.0)
    assert queue.remove("g-0") and queue.remove("g-1") and len(queue) == 0
    assert queue._group_left == {} and queue._group_instance == {}


class _PickLast(type(make_policy("hetero"))):  # type: ignore[misc]
    """A policy that would bind the youngest waiting request with a place (the hook's contract)."""

    pulls_from_queue = True

    def pick_queued(self, waiting):
        self.seen = [(r.request_id, sorted(v.instance_id for v in fits)) for r, fits in waiting]
        return max((i for i, (_, fits) in enumerate(waiting) if fits), default=0)


def test_a_policy_may_bind_a_waiting_request_past_the_head():
    tracker, _, queue = _setup(slots=1, max_queue_requests=10)
    policy = _PickLast()
    queue.policy = policy
    for i in range(2):
        d = queue.offer(_req(i), f"r{i}", tracker.views(), 0.0)
        assert isinstance(d, Bound)
        tracker.on_dispatch(_req(i), d.instance_id, 0.0)
    for i in range(2, 5):
        assert isinstance(queue.offer(_req(i), f"r{i}", tracker.views(), 0.0), Queued)
    assert queue.next_binding(tracker.views(), 0.1) is None  # no room: the policy is not asked
    tracker.on_complete("r0", 0.2)  # r0 was on one of the two; that one has room now
    freed = next(v.instance_id for v in tracker.views() if v.num_outstanding == 0)
    b = queue.next_binding(tracker.views(), 0.2)
    assert b is not None and (b.item, b.instance_id) == ("r4", freed)
    assert policy.seen == [("r2", [freed]), ("r3", [freed]), ("r4", [freed])]
    assert queue.num_passed_head == 1 and len(queue) == 2
    # The default policy binds the head: the same queue with hetero takes r2 next.
    queue.policy = make_policy("hetero")
    tracker.on_dispatch(b.request, b.instance_id, 0.2)
    tracker.on_complete("r4", 0.3)
    b = queue.next_binding(tracker.views(), 0.3)
    assert b is not None and b.item == "r2"
