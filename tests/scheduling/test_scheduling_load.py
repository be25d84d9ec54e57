"""LoadTracker: Q follows dispatch, streaming and completion; C learns only from saturated
stretches; reconcile corrects drift; the views are what the policies need."""

from __future__ import annotations

import pytest
from scheduling_factories import request

from hetserve.records import InstanceStats, RequestInfo
from hetserve.scheduling import LoadTracker, make_policy


def tracker(**kw) -> LoadTracker:
    t = LoadTracker(prefill_weight=0.5, default_output_tokens=100, **kw)
    t.add_instance("b-slow", "slow", "T4", 100.0, 10_000, max_num_seqs=8)
    t.add_instance("a-fast", "fast", "H100", 1000.0, 100_000, max_num_seqs=64)
    return t


def q(t: LoadTracker, iid: str) -> float:
    return t.view(iid).outstanding_tokens


def test_views_are_sorted_and_seeded_from_the_plan():
    t = tracker()
    vs = t.views()
    assert [v.instance_id for v in vs] == ["a-fast", "b-slow"]
    assert [v.capacity_tokens_per_s for v in vs] == [1000.0, 100.0]
    assert [v.predicted_tokens_per_s for v in vs] == [1000.0, 100.0]
    with pytest.raises(ValueError, match="added twice"):
        t.add_instance("a-fast", "fast", "H100", 1000.0, 100_000)
    with pytest.raises(ValueError, match="predicted_tokens_per_s must be > 0"):
        t.add_instance("c", "x", "y", 0.0, 100)


def test_work_estimate_weights_the_prompt_and_caps_output_at_max_tokens():
    t = tracker()
    assert t.work_estimate(RequestInfo("r", 200, 500)) == 0.5 * 200 + 100
    assert t.work_estimate(RequestInfo("r", 200, 30)) == 0.5 * 200 + 30


def test_q_rises_on_dispatch_falls_as_tokens_stream_and_returns_to_zero():
    t = tracker()
    r = RequestInfo("r1", 200, 500)
    t.on_dispatch(r, "a-fast", 0.0)
    assert q(t, "a-fast") == 0.5 * 200 + 100 and t.view("a-fast").num_outstanding == 1
    t.on_tokens("r1", 1, 0.1)  # first token: prefill done, 99 estimated output tokens left
    assert q(t, "a-fast") == 99
    t.on_tokens("r1", 49, 0.5)
    assert q(t, "a-fast") == 50
    t.on_complete("r1", 0.6)
    assert q(t, "a-fast") == 0 and t.view("a-fast").num_outstanding == 0
    assert q(t, "b-slow") == 0


def test_a_request_past_its_estimate_doubles_it_up_to_max_tokens():
    t = tracker()
    t.on_dispatch(RequestInfo("long", 10, 300), "a-fast", 0.0)
    t.on_tokens("long", 100, 1.0)  # reached the estimate of 100: now expect 200 in all
    assert q(t, "a-fast") == 100
    t.on_tokens("long", 150, 2.0)  # 250 > 200: doubled again, capped at max_tokens = 300
    assert q(t, "a-fast") == 50


def test_q_is_exact_however_tokens_are_grouped():
    """The simulator reports a fast-forwarded run of k steps as one call; the live router gets a
    chunk per token. Q must not depend on the grouping (it is compared across instances)."""
    one, many = tracker(), tracker()
    for t in (one, many):
        for k in range(5):
            t.on_dispatch(RequestInfo(f"r{k}", 333 + k, 1000), "a-fast", 0.0)
            t.on_tokens(f"r{k}", 1, 0.1)
    for k in range(5):
        for _ in range(170):
            one.on_tokens(f"r{k}", 1, 1.0)
        many.on_tokens_many([f"r{k}"], 170, 1.0)
    assert q(one, "a-fast") == q(many, "a-fast")


def test_output_length_estimate_follows_completed_requests():
    t = LoadTracker(default_output_tokens=100, output_ewma_alpha=0.5)
    t.add_instance("a", "d", "x", 100.0, 10_000)
    t.on_dispatch(RequestInfo("r", 10, 1000), "a", 0.0)
    t.on_tokens("r", 300, 1.0)
    t.on_complete("r", 1.0)
    assert t.mean_output_tokens == 200.0
    assert t.work_estimate(RequestInfo("s", 0, 1000)) == 200.0


def stats(waiting: int, running: int, kv_used: int, total: int, capacity: int = 100_000) -> InstanceStats:
    return InstanceStats(
        num_running=running,
        num_waiting=waiting,
        kv_used_tokens=kv_used,
        kv_capacity_tokens=capacity,
        total_output_tokens=total,
    )


def test_an_idle_or_lightly_loaded_instance_keeps_its_capacity():
    """An idle instance delivers 0 tok/s and a lightly loaded one what it is given: neither is its
    capacity, so C stays at the seed."""
    t = tracker(capacity_window_s=5.0)
    for s in range(0, 60):
        t.reconcile("a-fast", stats(waiting=0, running=0, kv_used=0, total=0), float(s))
    # Transient queueing (a request arrived during a step) with a half-empty batch is not saturation.
    for s in range(60, 120):
        t.reconcile("a-fast", stats(waiting=1, running=10, kv_used=5_000, total=20 * s), float(s))
    assert t.view("a-fast").capacity_tokens_per_s == 1000.0


def test_capacity_learns_from_saturated_stretches_only():
    """Waiting requests and a full batch for a whole window: C moves toward the delivered rate."""
    t = tracker(capacity_window_s=10.0, ewma_alpha=0.5)
    total = 0
    for s in range(0, 11):  # 11 reports, 10 s of saturation at 400 tok/s
        t.reconcile("a-fast", stats(waiting=5, running=64, kv_used=50_000, total=total), float(s))
        total += 400
    assert t.view("a-fast").capacity_tokens_per_s == pytest.approx(0.5 * 1000 + 0.5 * 400)
    # The slow instance, never measured, moves by the same ratio (0.7): units stay comparable.
    assert t.view("b-slow").capacity_tokens_per_s == pytest.approx(100 * 0.7)
    # A stretch broken by an unsaturated report before it spans the window teaches nothing.
    before = t.view("a-fast").capacity_tokens_per_s
    for s in range(11, 30):
        waiting = 0 if s % 5 == 0 else 5
        t.reconcile("a-fast", stats(waiting=waiting, running=64, kv_used=50_000, total=total), float(s))
        total += 10
    assert t.view("a-fast").capacity_tokens_per_s == before
    # KV-limited saturation counts too (the batch is below max_num_seqs but the cache is full).
    for s in range(30, 41):
        t.reconcile(
            "b-slow", stats(waiting=3, running=4, kv_used=9_500, total=60 * (s - 30), capacity=10_000), float(s)
        )
    assert t.view("b-slow").capacity_tokens_per_s == pytest.approx(0.5 * 70 + 0.5 * 60)


def test_reconcile_forgets_lost_requests_and_counts_foreign_ones():
    t = tracker()
    for k in range(4):
        t.on_dispatch(RequestInfo(f"r{k}", 100, 200), "a-fast", float(k))
    t.reconcile("a-fast", stats(waiting=0, running=4, kv_used=400, total=0), 10.0)
    assert t.view("a-fast").num_outstanding == 4
    # The engine now holds 1: three completions were lost; the oldest flights go.
    t.reconcile("a-fast", stats(waiting=0, running=1, kv_used=100, total=0), 11.0)
    assert t.view("a-fast").num_outstanding == 1
    before = q(t, "a-fast")
    t.on_tokens("r0", 1, 11.5)  # forgotten: no effect
    assert q(t, "a-fast") == before
    t.on_tokens("r3", 1, 11.5)  # the survivor is the newest one: its prefill part leaves Q
    assert q(t, "a-fast") == before - 0.5 * 100 - 1
    # Another router replica sent 2 more: counted at the mean work per request.
    t.reconcile("a-fast", stats(waiting=2, running=1, kv_used=100, total=0), 12.0)
    v = t.view("a-fast")
    assert v.num_outstanding == 3 and v.outstanding_tokens > 2 * 150
    assert v.kv_used_tokens == 100


def test_unhealthy_and_removed_instances_are_not_chosen():
    t = tracker()
    policy = make_policy("hetero")
    t.set_healthy("a-fast", False)
    assert policy.select(request(), t.views(), 0.0) == "b-slow"
    t.set_healthy("a-fast", True)
    assert policy.select(request(), t.views(), 0.0) == "a-fast"
    t.on_dispatch(request(7), "a-fast", 0.0)
    t.remove_instance("a-fast")
    assert [v.instance_id for v in t.views()] == ["b-slow"]
    t.on_tokens("r7", 1, 1.0)  # unknown now: ignored
    t.on_complete("r7", 1.0)


def test_a_late_report_never_drops_a_running_request():
    """Reports dated one period before they arrive: requests dispatched after the report was
    taken, or still on the engine, stay tracked; only a request the engine no longer holds and
    that it must have received is forgotten, without touching the output-length estimate."""
    t = tracker()
    for k in range(4):
        t.on_dispatch(RequestInfo(f"r{k}", 100, 200), "a-fast", float(k))
    t.on_dispatch(RequestInfo("new", 100, 200), "a-fast", 9.9)  # after the report below was taken
    before = t.mean_output_tokens
    report = stats(waiting=0, running=2, kv_used=200, total=0)
    report.request_ids = ("r1", "r3")  # r0 and r2 finished there; their completions were lost
    t.reconcile("a-fast", report, 9.5)
    v = t.view("a-fast")
    assert v.num_outstanding == 3 and t.num_forgotten == 2
    assert t.mean_output_tokens == before
    t.on_tokens("r1", 1, 10.0)
    t.on_complete("new", 10.5)
    assert t.num_dropped_running == 0
    # Another router's request on the engine is counted; one we just completed is not.
    report = stats(waiting=0, running=3, kv_used=300, total=0)
    report.request_ids = ("r1", "r3", "new", "theirs")
    t.reconcile("a-fast", report, 10.2)
    assert t.view("a-fast").num_outstanding == 3  # r1, r3 and "theirs"


def test_counts_only_never_forget_requests_dispatched_after_the_report():
    t = tracker()
    for k in range(4):
        t.on_dispatch(RequestInfo(f"r{k}", 100, 200), "a-fast", float(k))
    for k in range(6):
        t.on_dispatch(RequestInfo(f"late{k}", 100, 200), "a-fast", 9.8)
    # Taken at 9.5, before the six late ones arrived: the engine held the first four.
    t.reconcile("a-fast", stats(waiting=0, running=4, kv_used=400, total=0), 9.5)
    assert t.view("a-fast").num_outstanding == 10 and t.num_forgotten == 0


def test_capacity_follows_the_fitted_step_times_at_any_load_unless_learning_is_off():
    from hetserve.model.online_fit import StepAccumulator, saturated_capacity_tokens_per_s
    from hetserve.records import LatencyCoeffs

    plan = LatencyCoeffs(a_p=5e-5, b_p=2e-3, a_d=2e-4, c_d=1e-8, b_d=1e-2)
    true = LatencyCoeffs(a_p=1.5e-4, b_p=6e-3, a_d=6e-4, c_d=3e-8, b_d=3e-2)  # 3x slower
    seed_c, _ = saturated_capacity_tokens_per_s(plan, 300, 60, 60_000, 32)
    for learn in (True, False):
        t = LoadTracker(default_output_tokens=60, learn_capacity=learn)
        t.add_instance("i", "dep", "X", seed_c, 60_000, max_num_seqs=32, coeffs=plan)
        acc = StepAccumulator()
        for s in range(20):
            t.on_dispatch(RequestInfo(f"r{s}", 300, 60), "i", float(s))
            # Lightly loaded: one or two sequences per step, far from saturation.
            acc.add_step(300, 1, 300, true.prefill_s(300) + true.decode_s(1, 300))
            for _ in range(30):
                acc.add_step(0, 2, 700, true.decode_s(2, 700))
            st = stats(waiting=0, running=1, kv_used=400, total=0, capacity=60_000)
            st.steps = acc.totals()
            t.reconcile("i", st, float(s) + 0.5)
            t.on_complete(f"r{s}", float(s) + 0.9)
        c = t.view("i").capacity_tokens_per_s
        truth, _ = saturated_capacity_tokens_per_s(true, 300, 60, 60_000, 32)
        if learn:
            assert c == pytest.approx(truth, rel=0.1)
            summary = t.fit_summary("i")
            assert summary["fit_speed_vs_plan"] == pytest.approx(3.0, rel=0.01)
            assert summary["capacity_rel_uncertainty"] < 0.1
        else:
            assert c == pytest.approx(seed_c, rel=0.02) and t.fit_summary("i") == {}
