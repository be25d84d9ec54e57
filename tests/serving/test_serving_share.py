"""Heterogeneity-aware routing on live emulated instances: under the same saturating load, each
instance's share of output tokens follows its capacity with `hetero` and not with `round_robin`.

One A100 and two L4 instances (about 5x apart) serve llama-3.1-8b at batch 4. A closed loop of 48
clients keeps every instance saturated under `hetero`; round robin hands out requests evenly, so
the L4s throttle the loop and the A100 idles.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from hetserve.app import load_app_args  # noqa: E402
from hetserve.cluster import load_cluster  # noqa: E402
from hetserve.planner import search_plan  # noqa: E402
from hetserve.serving.builder import build_application  # noqa: E402
from serving_helpers import deployed, require_resources  # noqa: E402

pytestmark = pytest.mark.ray

MODEL = "llama-3.1-8b"
CLUSTER_YAML = """
name: share-test
model: llama-3.1-8b
workload: {mean_input_tokens: 64, mean_output_tokens: 32, max_request_tokens: 2048}
engine: {max_num_seqs: 4}
nodes:
  - {name: a100-0, accelerator: A100-SXM4-80GB, count: 1}
  - {name: l4-0, accelerator: L4, count: 2, overrides: {tp_degrees: [1]}}
"""
NUM_CLIENTS = 48
WARMUP_S = 3.0
WINDOW_S = 10.0
REQUEST = {"model": MODEL, "prompt": "x" * 256, "max_tokens": 32}  # 64 prompt tokens


async def _closed_loop(handle, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await handle.generate.remote(dict(REQUEST))


async def _measure(handle) -> tuple[list[tuple[str, float, float]], float]:
    """Per instance: (deployment, token share over a steady window from engine-reported totals,
    capacity share from the plan's per-instance prediction); and the delivered output tokens/s
    (emulated accelerator time)."""
    stop = asyncio.Event()
    clients = [asyncio.create_task(_closed_loop(handle, stop)) for _ in range(NUM_CLIENTS)]
    await asyncio.sleep(WARMUP_S)
    before = {r["instance_id"]: r for r in await handle.instances.remote()}
    await asyncio.sleep(WINDOW_S)
    after = {r["instance_id"]: r for r in await handle.instances.remote()}
    stop.set()
    for client in clients:
        client.cancel()  # cancelling a handle call aborts the request on its instance
    await asyncio.gather(*clients, return_exceptions=True)
    delta = {i: after[i]["total_output_tokens"] - before[i]["total_output_tokens"] for i in after}
    total = sum(delta.values())
    predicted = {i: after[i]["predicted_tokens_per_s"] for i in after}
    return [
        (after[i]["deployment"], delta[i] / total, predicted[i] / sum(predicted.values())) for i in sorted(after)
    ], total / WINDOW_S


def test_token_shares_follow_capacity_with_hetero_and_not_with_round_robin(serve_url, tmp_path: Path):
    needs = {"A100-SXM4-80GB": 1, "L4": 2}
    require_resources(**needs)
    cfg = tmp_path / "share.yaml"
    cfg.write_text(CLUSTER_YAML)
    cluster = load_cluster(cfg)
    plan = search_plan(cluster)
    assert sorted((d.config.accelerator, d.num_instances) for d in plan.deployments) == [
        ("A100-SXM4-80GB", 1),
        ("L4", 2),
    ]
    results = {}
    for policy in ("hetero", "round_robin"):
        # late_binding off: the claim is the policy's own. With the router queue's late binding
        # every policy picks only among instances with a free slot, which alone gives round
        # robin capacity-proportional shares (measured: A100 0.719 of tokens, capacity 0.775).
        args = load_app_args(
            {"policy": policy, "time_scale": 1.0, "stats_period_s": 0.5, "router_replicas": 1, "late_binding": False}
        )
        with deployed(build_application(cluster.model, plan, args), f"share-{policy}", None, needs) as handle:
            results[policy] = asyncio.run(_measure(handle))

    (hetero, hetero_rate), (rr, rr_rate) = results["hetero"], results["round_robin"]
    shown = {p: [(d, round(share, 3), round(cap, 3)) for d, share, cap in results[p][0]] for p in results}
    print(f"(deployment, token share, capacity share): {shown}; tok/s hetero {hetero_rate:.0f}, rr {rr_rate:.0f}")
    for _, share, cap in hetero:
        assert abs(share - cap) <= 0.15 * cap, shown
    assert any(abs(share - cap) > 0.15 * cap for _, share, cap in rr), shown
    assert hetero_rate > 1.3 * rr_rate, (hetero_rate, rr_rate)
