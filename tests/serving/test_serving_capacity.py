"""Capacity measured live, on emulated instances whose true speed differs from the plan's.

One A100 and two L4 instances serve llama-3.1-8b at batch 4 (the share test's cluster). The
emulated L4 engines run `emulated_speed` times slower than the plan believes (3: the plan is 3x
too optimistic; 1/3: 3x too pessimistic). Under a closed loop of 48 clients, with learning on,
the router's C of each L4 converges to within 10% of its true saturated rate (its simulated twin
saturated alone: the same batching step at the true coefficients), which learning off cannot, and
hetero's p99 TTFT beats least_requests' by at least 5% (throughput is the same for all: the closed
loop keeps every instance saturated). Also: the A100 slowing 2x mid-run (`emulated_speed_changes`), where C
must follow it down.

These claims can fail: HETSERVE_TEST_POLICY=pow2 (or least_requests) swaps the candidate policy,
HETSERVE_TEST_LEARN=0 switches its capacity learning off.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from serving_helpers import deployed, require_resources  # noqa: E402

from hetserve.app import load_app_args  # noqa: E402
from hetserve.catalog import default_catalog  # noqa: E402
from hetserve.cluster import load_cluster  # noqa: E402
from hetserve.model.latency import LatencyModel, load_profiles  # noqa: E402
from hetserve.planner import search_plan  # noqa: E402
from hetserve.serving.builder import build_application  # noqa: E402
from hetserve.sim import SimRequests  # noqa: E402
from hetserve.sim.fluid import saturated_capacity  # noqa: E402
from hetserve.sim.instances import with_true_speed  # noqa: E402

pytestmark = pytest.mark.ray

MODEL = "llama-3.1-8b"
CLUSTER_YAML = """
name: capacity-test
model: llama-3.1-8b
workload: {mean_input_tokens: 64, mean_output_tokens: 32, max_request_tokens: 2048}
engine: {max_num_seqs: 4}
nodes:
  - {name: a100-0, accelerator: A100-SXM4-80GB, count: 1}
  - {name: l4-0, accelerator: L4, count: 2, overrides: {tp_degrees: [1]}}
"""
CANDIDATE = os.environ.get("HETSERVE_TEST_POLICY", "hetero")
LEARN = os.environ.get("HETSERVE_TEST_LEARN", "1") != "0"
NUM_CLIENTS = 48
WARMUP_S = 6.0
WINDOW_S = 10.0
REQUEST = {"model": MODEL, "prompt": "x" * 256, "max_tokens": 32}  # 64 prompt tokens
# hetero's p99 TTFT must beat least_requests' by 5%: least_requests against itself measured within
# 0.5% (1.004, 0.996, 1.000, 1.001 over the four cases), hetero 0.40-0.72 of it.
BEATS = 0.95


def true_capacity(plan, deployment: str, factor: float) -> float:
    """The plan's instance of `deployment` saturated alone, in the simulator, at its true coefficients."""
    spec = with_true_speed(plan.deployment(deployment).instances()[0], factor).settled()
    n = 400
    reqs = SimRequests("fixed", np.zeros(n), np.full(n, 64), np.full(n, 32), np.full(n, 32))
    return saturated_capacity(spec, reqs).output_tokens_per_s


async def _closed_loop(handle, stop: asyncio.Event, ttfts: list[float], waiting: dict[int, float], key: int) -> None:
    """One client: TTFT recorded at the first chunk (not at completion: a request that waits
    long would otherwise be left out); `waiting[key]` holds the start of a request still
    waiting for its first token."""
    stream = handle.options(stream=True)
    while not stop.is_set():
        t0 = time.monotonic()
        waiting[key] = t0
        first = True
        async for _ in stream.generate_stream.remote(dict(REQUEST)):
            if first:
                first = False
                waiting.pop(key, None)
                if not stop.is_set():
                    ttfts.append(time.monotonic() - t0)
        waiting.pop(key, None)


async def _measure(handle, warmup_s: float = WARMUP_S) -> tuple[list[dict], float]:
    stop = asyncio.Event()
    ttfts: list[float] = []
    waiting: dict[int, float] = {}
    clients = [asyncio.create_task(_closed_loop(handle, stop, ttfts, waiting, k)) for k in range(NUM_CLIENTS)]
    await asyncio.sleep(warmup_s)
    ttfts.clear()  # only the window's first tokens count
    await asyncio.sleep(WINDOW_S)
    now = time.monotonic()
    # Requests still waiting at the end count with their wait so far (a lower bound of their TTFT).
    samples = ttfts + [now - t0 for t0 in waiting.values()]
    instances = await handle.instances.remote()
    stop.set()
    for c in clients:
        c.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return instances, float(np.percentile(samples, 99))


NEEDS = {"A100-SXM4-80GB": 1, "L4": 2}  # the accelerators CLUSTER_YAML's instances take


def _cluster(tmp_path: Path):
    require_resources(**NEEDS)
    cfg = tmp_path / "capacity.yaml"
    cfg.write_text(CLUSTER_YAML)
    return load_cluster(cfg)


def _hetero_and_least_requests(
    cluster, plan, name: str, emulation: dict, warmup_s: float = WARMUP_S
) -> tuple[dict[str, tuple[list[dict], float]], dict]:
    """Serve the plan with the candidate policy, then with least_requests (learning on), each
    under the same closed loop; `emulation`: the emulated engines' true speed (app args). Returns
    {label: (instances, p99 TTFT)} and a compact view of it for messages."""
    results = {}
    for label, policy, learn in [("hetero", CANDIDATE, LEARN), ("lr", "least_requests", True)]:
        args = load_app_args(
            {
                "policy": policy,
                "learn_capacity": learn,
                **emulation,
                "time_scale": 1.0,
                "stats_period_s": 0.5,
                "router_replicas": 1,
                # The claim is the policy's and C's; late binding (binding only to instances with a
                # free slot) evens out every policy and hides both (p99 TTFT 3.83 s vs 3.82 s).
                "late_binding": False,
            }
        )
        with deployed(build_application(cluster.model, plan, args), f"{name}-{label}", None, NEEDS) as handle:
            results[label] = asyncio.run(_measure(handle, warmup_s))
    shown = {
        k: ([(r["accelerator"], round(r["capacity_tokens_per_s"])) for r in inst], round(p99, 3))
        for k, (inst, p99) in results.items()
    }
    return results, shown


def _without_profiles_of(accelerator: str) -> LatencyModel:
    """The default latency model with every profile of `accelerator` removed: that type is then
    priced by its roofline prior, as a type nobody profiled is."""
    return LatencyModel([p for p in load_profiles() if p.accelerator != accelerator], default_catalog().models)


@pytest.mark.parametrize(
    ("factor", "roofline"),
    [(3.0, False), (1.0 / 3.0, False), (2.0, True)],
    ids=["plan-3x-optimistic", "plan-3x-pessimistic", "roofline-prior-2x-off"],
)
def test_live_capacity_converges_and_hetero_beats_the_baselines(
    serve_url, tmp_path: Path, factor: float, roofline: bool
):
    """(a) the L4s run 3x slower than planned, (b) 3x faster, (d) the L4 has no profile (the plan
    prices it by its roofline prior) and runs 2x slower than that prior."""
    cluster = _cluster(tmp_path)
    plan = search_plan(cluster, latency_model=_without_profiles_of("L4") if roofline else None)
    if roofline:
        assert plan.deployment("L4-tp1").coeffs_source == "roofline", plan.deployment("L4-tp1").coeffs_source
    truth = true_capacity(plan, "L4-tp1", factor)
    # Learning off is not run here (HETSERVE_TEST_LEARN=0 does that): C then stays at the plan's,
    # 3x off, and the C assertions below fail for it.
    results, shown = _hetero_and_least_requests(cluster, plan, "capacity", {"emulated_speed": {"L4": factor}})
    print(f"truth L4 {truth:.0f} tok/s; (accelerator, C) and p99 TTFT: {shown}")
    for r in results["hetero"][0]:
        if r["accelerator"] == "L4":
            assert r["capacity_tokens_per_s"] == pytest.approx(truth, rel=0.1), shown
            # The fit's measured speed vs the plan (mixed steps priced by their binding branch).
            assert r["fit_speed_vs_plan"] == pytest.approx(factor, rel=0.1), (r["fit_speed_vs_plan"], shown)
    # With learning off, p99 TTFT in this closed loop was within 2% of hetero's in the one run
    # made (9.05 vs 9.21 s, shared machine); least_requests' is far worse (16 s).
    assert results["hetero"][1] <= BEATS * results["lr"][1], shown


SLOWDOWN_AFTER_S = 1.0  # emulated seconds after the A100's first step
# The fit forgets with a half-life of 4 s of engine busy time; on a loaded machine the emulated
# engines lag (busy time < wall time), so C is read 20 s after the slowdown, TTFT over the last 10.
SLOWDOWN_WARMUP_S = 11.0


def test_live_capacity_follows_a_mid_run_slowdown(serve_url, tmp_path: Path):
    """The A100 (the fast instance, alone in its deployment) slows 2x 1 s into the run: by the end
    of the window C of it is within 10% of its new saturated rate, and hetero's p99 TTFT is at
    least 5% better than least_requests'."""
    cluster = _cluster(tmp_path)
    plan = search_plan(cluster)
    truth = true_capacity(plan, "A100-SXM4-80GB-tp1", 2.0)
    slowdown = {"emulated_speed_changes": {"A100-SXM4-80GB": [[SLOWDOWN_AFTER_S, 2.0]]}}
    results, shown = _hetero_and_least_requests(cluster, plan, "slowdown", slowdown, SLOWDOWN_WARMUP_S)
    print(f"truth A100 after the slowdown {truth:.0f} tok/s; (accelerator, C) and p99 TTFT: {shown}")
    for r in results["hetero"][0]:
        if r["accelerator"] == "A100-SXM4-80GB":
            assert r["capacity_tokens_per_s"] == pytest.approx(truth, rel=0.1), shown
    assert results["hetero"][1] <= BEATS * results["lr"][1], shown
