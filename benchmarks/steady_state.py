"""Throughput model vs the batching step it describes: `model.throughput.steady_state` (through
`saturated_capacity_tokens_per_s`, what C is) against the simulator's saturated instance
(`sim.fluid.saturated_capacity`: the engines' own batching loop, requests all waiting) on the
capacity benchmark's lognormal mix and the held-in traces (Azure 2023 code/conv, Mooncake
conversation, clipped to 4096 tokens), on the paper-mixed plan's instance configurations.
Writes steady_state.md next to this script.

    python benchmarks/steady_state.py      # ~1 min on 2 shared cores
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from hetserve.cluster import load_cluster
from hetserve.model.online_fit import saturated_capacity_tokens_per_s
from hetserve.planner import search_plan
from hetserve.records import LatencyCoeffs, PlannedInstance
from hetserve.sim import SimRequests, instances_from_plan, poisson_requests, requests_from_trace
from hetserve.sim.fluid import saturated_capacity
from hetserve.traces import load_trace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = Path(os.environ.get("HETSERVE_DATA_DIR", "/work/shared/data"))
FAST = LatencyCoeffs(a_p=5e-5, b_p=2e-3, a_d=2e-4, c_d=1e-8, b_d=1e-2)  # benchmarks/capacity.py's
TRACES = {
    "azure code": DATA / "azure2023" / "AzureLLMInferenceTrace_code.csv",
    "azure conv": DATA / "azure2023" / "AzureLLMInferenceTrace_conv.csv",
    "mooncake conv": DATA / "mooncake" / "conversation_trace.jsonl",
}
SAMPLE = 3000


def cases() -> list[tuple[str, PlannedInstance, SimRequests]]:
    out = []
    mix = poisson_requests(1.0, SAMPLE, 300, 60, 4096, seed=11, lengths="lognormal")
    exp = poisson_requests(1.0, SAMPLE, 300, 60, 4096, seed=3, lengths="exponential")
    for slow in (1.0, 2.5):
        out.append(
            (
                "capacity mix (lognormal)",
                PlannedInstance("x", "d", f"fake-x{slow:g}", FAST.scaled(slow), 60_000, 32, 1.0),
                mix,
            )
        )
    out.append(("exponential 300/60", PlannedInstance("x", "d", "fake-x1", FAST, 60_000, 32, 1.0), exp))
    plan = search_plan(load_cluster(ROOT / "cluster_configs" / "paper_mixed.yaml"))
    configs: dict = {}
    for s in instances_from_plan(plan):
        configs.setdefault((s.accelerator, s.coeffs), s)
    for name, path in TRACES.items():
        reqs = requests_from_trace(load_trace(path), max_model_len=4096)
        reqs = reqs.sample(SAMPLE) if len(reqs) > SAMPLE else reqs
        out += [(name, s, reqs) for s in configs.values()]
    return out


def main() -> None:
    t0 = time.time()
    rows = []
    for name, spec, reqs in cases():
        p = reqs.num_prompt_tokens.astype(float)
        o = reqs.num_output_tokens.astype(float)
        cv_in, cv_out = float(p.std() / p.mean()), float(o.std() / o.mean())
        sim = saturated_capacity(spec, reqs).output_tokens_per_s
        args = (spec.kv_capacity_tokens, spec.max_num_seqs)
        model, b = saturated_capacity_tokens_per_s(spec.final_coeffs, p.mean(), o.mean(), *args, cv_in, cv_out)
        at_means, _ = saturated_capacity_tokens_per_s(spec.final_coeffs, p.mean(), o.mean(), *args)
        kv_bound = b < spec.max_num_seqs
        rows.append((name, spec.accelerator, b, kv_bound, p.mean(), cv_in, o.mean(), cv_out, sim, model, at_means))
    wall = time.time() - t0
    lines = [
        "# Throughput model vs the saturated batching step",
        "",
        f"Written by `python {' '.join(['benchmarks/steady_state.py', *sys.argv[1:]])}` "
        f"({wall:.0f} s wall, shared machine). "
        "sim = the simulator's saturated instance (the engines' batching loop: chunked prefill, one price per "
        "mixed step); model = `steady_state` at the mix's mean lengths and their coefficients of variation "
        "(what C is); 'at means only' = the same model with the spread set to 0. Instances: the capacity "
        "benchmark's fake types, and every distinct configuration of the paper-mixed plan; "
        f"{SAMPLE} requests per trace.",
        "",
        "| mix | instance | B | KV-bound | prompt mean (cv) | output mean (cv) | sim tok/s | model / sim "
        "| at means only / sim |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, acc, b, kv, pm, pc, om, oc, sim, model, means in rows:
        lines.append(
            f"| {name} | {acc} | {b} | {'yes' if kv else 'no'} | {pm:.0f} ({pc:.2f}) | {om:.0f} ({oc:.2f}) | "
            f"{sim:.1f} | {model / sim:.3f} | {means / sim:.3f} |"
        )
    ratios = np.array([r[9] / r[8] for r in rows])
    slot = np.array([r[9] / r[8] for r in rows if not r[3]])
    kvb = np.array([r[9] / r[8] for r in rows if r[3]])
    lines += [
        "",
        f"model / sim: all rows {ratios.min():.3f}-{ratios.max():.3f}; batches bound by max_num_seqs "
        f"{slot.min():.3f}-{slot.max():.3f}"
        + (f"; KV-bound batches {kvb.min():.3f}-{kvb.max():.3f}." if len(kvb) else "."),
        "",
        "Where the model is still high: KV-bound batches. The engine admits while the prompt's KV fits and "
        "preempts (recomputes) the newest sequence when the growing outputs fill the cache; the model sizes "
        "the batch at the full prompt + output of a mean request and prices no recomputation.",
    ]
    (HERE / "steady_state.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
