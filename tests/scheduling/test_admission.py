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
