"""Check the price of a mixed step (prompt chunks + decodes in one forward pass) on measured data.

engines/batching.py prices a step that mixes P prompt-chunk tokens and D decodes as one pass:
    T_mix = max(T_d(D, S), T_p(P + D) + c_d * S)
(memory-bound pass vs compute-bound pass over all P + D tokens, plus the decodes' attention),
where a vLLM-v0-style engine, and hetserve before chunked prefill, paid two passes,
T_p(P) + T_d(D, S).

The data that allows a check: vidur's operator profiles (../shared/data/vidur-profiling, sarathi-
serve kernels), which time every non-attention operator of one layer as a function of the number
of tokens in the batch, whatever mix of prefill and decode they come from: that is exactly what a
mixed batch's linear layers see. (Its attention tables are not in the copy, so the attention terms
q_p and c_d stay additive, as in the step model.) Per GPU and model (TP 1):
  1. T(N) = layers x sum of the operators' median times, for each measured N;
  2. fit the decode line T_d(D) = a_d*D + b_d on N <= 256 and the prefill line T_p(N) = a_p*N + b_p
     on N >= 1024 with hetserve.model.latency's non-negative least squares (relative weights);
  3. on a grid of mixed steps (P in 64..3840 chunk tokens, D in 1..256 decodes, N = P + D measured),
     compare the measured one-pass time T(P + D) with the one-pass price max(T_d(D), T_p(P + D))
     and with the two-pass price T_p(P) + T_d(D).
Writes benchmarks/mixed_step.md.

Usage: python scripts/fit_mixed_step.py [--data ../shared/data] [--out benchmarks/mixed_step.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from hetserve.model.latency import _lstsq_nonneg, _weights

ROOT = Path(__file__).resolve().parents[1]
OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
CASES = (  # (gpu folder, model folder, layers)
    ("a100", "meta-llama/Llama-2-7b-hf", 32),
    ("h100", "meta-llama/Llama-2-7b-hf", 32),
    ("a100", "meta-llama/Meta-Llama-3-8B", 32),
    ("h100", "codellama/CodeLlama-34b-Instruct-hf", 48),
)


def layer_times(path: Path, layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, seconds of the model's non-attention operators for N batched tokens), TP 1."""
    by_n: dict[int, float] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["num_tensor_parallel_workers"] != "1":
                continue
            ms = sum(float(row[f"time_stats.{op}.median"]) for op in OPS)
            by_n[int(row["num_tokens"])] = ms * layers / 1e3
    n = np.array(sorted(by_n), dtype=float)
    return n, np.array([by_n[int(k)] for k in n])


def fit_line(n: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    slope, intercept = _lstsq_nonneg(np.column_stack([n, np.ones_like(n)]), t, _weights(t, True))
    return float(slope), float(intercept)


def mape(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - actual) / actual) * 100)


def evaluate(n: np.ndarray, t: np.ndarray) -> dict:
    dec = n <= 256
    pre = n >= 1024
    a_d, b_d = fit_line(n[dec], t[dec])
    a_p, b_p = fit_line(n[pre], t[pre])
    measured = dict(zip(n.astype(int).tolist(), t.tolist(), strict=True))
    rows = []
    for p in (64, 128, 256, 512, 1024, 2048, 3072, 3840):
        for d in (1, 8, 32, 64, 128, 256):
            if p + d in measured:
                one_pass = max(a_d * d + b_d, a_p * (p + d) + b_p)
                two_pass = (a_p * p + b_p) + (a_d * d + b_d)
                rows.append((p, d, measured[p + d], one_pass, two_pass))
    arr = np.array([r[2:] for r in rows])
    return {
        "a_d": a_d,
        "b_d": b_d,
        "a_p": a_p,
        "b_p": b_p,
        "num_mixed": len(rows),
        "one_pass_mape": mape(arr[:, 1], arr[:, 0]),
        "two_pass_mape": mape(arr[:, 2], arr[:, 0]),
        "two_pass_over": float(np.mean(arr[:, 2] / arr[:, 0])),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HETSERVE_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "mixed_step.md"))
    args = ap.parse_args(argv)
    base = Path(args.data) / "vidur-profiling" / "compute"
    lines = [
        "# Mixed-step price checked on vidur's operator profiles",
        "",
        "Written by `python scripts/fit_mixed_step.py` (method in its docstring). Non-attention operators of",
        "the whole model (layers x per-layer medians), TP 1. Lines fitted with hetserve.model.latency's",
        "non-negative least squares: decode line on N <= 256 tokens, prefill line on N >= 1024. Mixed steps:",
        "P chunk tokens (64..3840) + D decodes (1..256) where vidur measured N = P + D.",
        "",
        "| GPU | model | b_d ms | a_d us/tok | b_p ms | a_p us/tok | mixed steps | one-pass MAPE | two-pass MAPE "
        "| two-pass / measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    details = []
    for gpu, model, layers in CASES:
        path = base / gpu / model / "mlp.csv"
        if not path.exists():
            print(f"skip {path}: missing", file=sys.stderr)
            continue
        r = evaluate(*layer_times(path, layers))
        lines.append(
            f"| {gpu} | {model.split('/')[-1]} | {r['b_d'] * 1e3:.2f} | {r['a_d'] * 1e6:.2f} | {r['b_p'] * 1e3:.2f} | "
            f"{r['a_p'] * 1e6:.2f} | {r['num_mixed']} | {r['one_pass_mape']:.1f}% | {r['two_pass_mape']:.1f}% | "
            f"{r['two_pass_over']:.2f}x |"
        )
        details.append((gpu, model, r))
    lines += [
        "",
        "One-pass = max(T_d(D), T_p(P + D)), the form `engines/batching.py: step_time_s` uses (with the",
        "attention terms added); two-pass = T_p(P) + T_d(D), the pre-chunked-prefill price. The step model",
        "adds no new coefficient: a_p, b_p, a_d, b_d are each deployment's fitted profile; this table checks",
        "the form on data where mixed batches are measured.",
        "",
    ]
    for gpu, model, r in details[:1]:
        lines += [
            f"Sample rows ({gpu}, {model.split('/')[-1]}; ms):",
            "",
            "| P | D | measured T(P+D) | one-pass | two-pass |",
            "|---|---|---|---|---|",
        ]
        for p, d, m, one, two in r["rows"][::5]:
            lines.append(f"| {p} | {d} | {m * 1e3:.2f} | {one * 1e3:.2f} | {two * 1e3:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
