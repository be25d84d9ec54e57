"""Open-loop replay and its report, against an in-process endpoint (no cluster): the replayer and
the measurement are what is under test; the fake client stands in for the app."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from hetserve.bench.clients import InstanceCounter, Outcome, error_kind
from hetserve.bench.measure import live_report
from hetserve.bench.replay import replay
from hetserve.cluster import load_cluster
from hetserve.commands.bench import bench_stream
from hetserve.planner import search_plan
from hetserve.serving.errors import RequestError
from hetserve.sim import SimRequests, fluid_bound, instances_from_plan


class SlowEndpoint:
    """Answers every request after `ttft_s` (first token) and `e2e_s` (end), wall seconds; the
    first `fail` requests are refused with 429. Counts tokens per instance, alternating two."""

    model = "m"

    def __init__(self, ttft_s: float, e2e_s: float, instance_ids: list[str], deployment: str, fail: int = 0):
        self.ttft_s, self.e2e_s, self.fail = ttft_s, e2e_s, fail
        self.ids, self.dep = instance_ids, deployment
        self.tokens = dict.fromkeys(instance_ids, 0)
        self.calls = 0
        self.in_flight = self.max_in_flight = 0

    async def send(self, num_prompt_tokens: int, max_tokens: int) -> Outcome:
        k = self.calls
        self.calls += 1
        if k < self.fail:
            return Outcome(None, None, 0, "429 rate_limit_exceeded")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.ttft_s)
        first = time.monotonic()
        await asyncio.sleep(self.e2e_s - self.ttft_s)
        self.tokens[self.ids[k % len(self.ids)]] += max_tokens
        self.in_flight -= 1
        return Outcome(first, time.monotonic(), max_tokens)

    async def counters(self) -> list[InstanceCounter]:
        return [InstanceCounter(i, self.dep, n) for i, n in self.tokens.items()]

    async def close(self) -> None:
        return None


def _stream(n: int, gap_s: float, out_tokens: int = 10) -> SimRequests:
    arrival = np.arange(n) * gap_s
    ones = np.full(n, out_tokens, dtype=np.int64)
    return SimRequests("t", arrival, np.full(n, 100, dtype=np.int64), ones, ones.copy())


def test_replay_is_open_loop():
    """Arrivals keep the stream's times however slow the answers: 40 requests 25 ms apart, each
    taking 0.5 s, overlap ~20 deep and finish in ~1.5 s (a closed loop would take 20 s)."""
    ep = SlowEndpoint(0.1, 0.5, ["a"], "d")
    reqs = _stream(40, 0.025)
    t0 = time.monotonic()
    rec = asyncio.run(replay(ep, reqs, (0.25, 0.975), time_scale=1.0))
    wall = time.monotonic() - t0
    assert wall < 5.0
    assert ep.max_in_flight >= 10
    assert rec.max_send_lag_s < 0.5
    assert np.all(np.isfinite(rec.finish_s))


def test_time_scale_maps_wall_to_emulated_seconds():
    """At time_scale 0.5 a wall TTFT of 0.1 s is 0.2 emulated s, and arrivals span half the wall."""
    ep = SlowEndpoint(0.1, 0.2, ["a"], "d")
    rec = asyncio.run(replay(ep, _stream(10, 0.1), (0.2, 0.9), time_scale=0.5))
    ttft = rec.first_token_s - rec.sent_s
    assert np.median(ttft) == pytest.approx(0.2, rel=0.3)


def test_live_report_uses_the_simulators_metrics():
    """Throughput from the instances' counters over the window, errors by kind, token shares vs
    capacity shares; TTFT/E2E percentiles of the window's arrivals, in emulated seconds."""
    cluster = load_cluster("cluster_configs/laptop.yaml")
    plan = search_plan(cluster)
    planned = instances_from_plan(plan)
    dep = planned[0].deployment
    n_dep = sum(1 for s in planned if s.deployment == dep)
    planned = [s for s in planned if s.deployment == dep]
    reqs = _stream(60, 0.02, out_tokens=8)
    bound = fluid_bound(planned, reqs)
    ids = [f"replica{i}" for i in range(n_dep)]
    ep = SlowEndpoint(0.05, 0.15, ids, dep, fail=3)
    rec = asyncio.run(replay(ep, reqs, (0.3, 1.18), time_scale=1.0))
    rep = live_report(rec, "hetero", planned, bound)
    assert rec.errors_by_kind == {"429 rate_limit_exceeded": 3}
    assert rep.num_rejected == 3
    assert rep.ttft_s.p50 == pytest.approx(0.05, abs=0.04)
    assert rep.e2e_s.p50 == pytest.approx(0.15, abs=0.06)
    assert rep.output_tokens_per_s > 0
    assert rep.fraction_of_bound == pytest.approx(rep.output_tokens_per_s / bound.output_tokens_per_s)
    assert sum(i.token_share for i in rep.instances) == pytest.approx(1.0)
    assert sum(i.capacity_share for i in rep.instances) == pytest.approx(1.0)


def test_bench_stream_asks_for_the_true_output_length():
    cluster = load_cluster("cluster_configs/laptop.yaml")
    reqs = bench_stream(cluster, None, 5.0, 50, None)
    assert len(reqs) == 50
    assert np.array_equal(reqs.max_tokens, reqs.num_output_tokens)
    assert np.all(reqs.num_prompt_tokens + reqs.max_tokens <= cluster.workload.max_request_tokens)


def test_error_kind_names_status_and_code():
    assert error_kind(RequestError(429, "busy", code="rate_limit_exceeded")) == "429 rate_limit_exceeded"
    assert error_kind(TimeoutError()) == "TimeoutError"
