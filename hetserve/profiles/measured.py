"""Readers of the measured data sets under `../shared/data` (see each folder's README).

* helix-profiles   vLLM 0.4 per-layer prefill/decode times, A100-40GB, L4, T4, V100 (TP 1/2/4);
* splitwise-perf   whole-model prompt and decode-iteration times, A100-80GB, H100 (TP 2/4/8);
* argonne          relative speed of types no other set covers (MI300X), vLLM vs vLLM.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetserve.profiles.samples import DecodeSample, PrefillSample, StepSamples

# Data-set names -> catalog names (hetserve/data/accelerators.yaml, models.yaml).
# Helix ran on Google Cloud: "a100" is the 40 GB A100 (a2-highgpu), "v100" the 16 GB V100;
# "l4x2" / "t4x4" are 2 / 4 GPUs of one VM used with tensor parallelism.
HELIX_GPUS: dict[str, tuple[str, int]] = {
    "a100": ("A100-SXM4-40GB", 1),
    "v100": ("V100-PCIe-16GB", 1),
    "l4": ("L4", 1),
    "l4x2": ("L4", 2),
    "t4": ("T4", 1),
    "t4x2": ("T4", 2),
    "t4x4": ("T4", 4),
}
HELIX_MODELS: dict[str, str] = {"llama1_30b": "llama-1-30b", "llama2_70b": "llama-2-70b"}
HELIX_LAYERS: dict[str, int] = {"llama1_30b": 60, "llama2_70b": 80}
# The workload Helix profiled and simulated for (its simulator/event_simulator/utils.py:
# AVG_INPUT_LEN = 750, AVG_OUTPUT_LEN = 240). Its decode tables are keyed by batch size only, so we
# assume each decoding sequence holds the mean prompt plus half the mean output: 870 tokens.
HELIX_MEAN_PROMPT_TOKENS = 750
HELIX_MEAN_OUTPUT_TOKENS = 240

# Splitwise's power-capped H100 ("h100-80gb-pcap") is no catalog type and is left out.
SPLITWISE_HARDWARE: dict[str, str] = {"a100-80gb": "A100-SXM4-80GB", "h100-80gb": "H100-SXM5-80GB"}
SPLITWISE_MODELS: dict[str, str] = {"llama2-70b": "llama-2-70b", "bloom-176b": "bloom-176b"}


# --------------------------------------------------------------------------- helix


def read_helix(data_dir: Path) -> list[StepSamples]:
    """helix-profiles/helix_layer_profiles.csv -> whole-model samples.

    A row gives milliseconds for ONE layer; the whole model's step is ms_per_layer x layers (the
    Helix simulator does the same when a node holds every layer). Prompt rows: num_tokens prompt
    tokens, taken as num_tokens / 750 sequences of Helix's mean prompt, which only matters for
    the quadratic term: with a fixed length per sequence it is not identifiable, and the fit
    keeps prefill linear. Decode rows: num_tokens is the batch size;
    the context is not recorded, so each sequence is assumed to hold 750 + 240/2 = 870 tokens.
    The zero rows (num_tokens = 0) are table anchors, not measurements, and are dropped.
    """
    path = Path(data_dir) / "helix-profiles" / "helix_layer_profiles.csv"
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: {"prompt": [], "decode": []})
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            n = int(row["num_tokens"])
            if n <= 0:
                continue
            layers = HELIX_LAYERS[row["model"]]
            time_s = float(row["ms_per_layer"]) * layers / 1e3
            groups[(row["model"], row["gpu_config"])][row["phase"]].append((n, time_s))
    ctx_per_seq = HELIX_MEAN_PROMPT_TOKENS + HELIX_MEAN_OUTPUT_TOKENS / 2
    out = []
    for (model, gpu), phases in sorted(groups.items()):
        accel, tp = HELIX_GPUS[gpu]
        prefill = tuple(PrefillSample(n, n / HELIX_MEAN_PROMPT_TOKENS, t) for n, t in sorted(phases["prompt"]))
        decode = tuple(DecodeSample(b, b * ctx_per_seq, t) for b, t in sorted(phases["decode"]))
        out.append(
            StepSamples(HELIX_MODELS[model], accel, tp, f"helix-profiles ({model}/{gpu})", "vllm-0.4", prefill, decode)
        )
    return out


# --------------------------------------------------------------------------- splitwise


def read_splitwise(data_dir: Path) -> list[StepSamples]:
    """splitwise-perf/perf_model.csv -> whole-model samples, one per distinct configuration.

    prompt_time is the prefill of batch_size prompts of prompt_size tokens; token_time is the mean
    decode iteration of batch_size sequences. Generation often stopped before token_size (EOS):
    e2e ~ prompt_time + n x token_time gives the n tokens actually generated, so the mean context
    is batch x (prompt + n/2). Rows with e2e > 1.1 x (prompt_time + token_size x token_time) are
    dropped: the run took longer than any iteration count explains (preemption or recomputation,
    e.g. batch 64 at TP 2, whose prompt_time is then implausibly small). Repeated measurements
    are averaged so that one configuration never lands in both the fitted and the held-out rows.
    """
    path = Path(data_dir) / "splitwise-perf" / "perf_model.csv"
    raw: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            hw = SPLITWISE_HARDWARE.get(row["hardware"])
            if hw is None:
                continue
            key = (
                row["model"],
                hw,
                int(row["tensor_parallel"]),
                int(row["prompt_size"]),
                int(row["batch_size"]),
                int(row["token_size"]),
            )
            raw[key].append((float(row["prompt_time"]), float(row["token_time"]), float(row["e2e_time"])))
    by_config: dict[tuple[str, str, int], dict[str, list]] = defaultdict(lambda: {"prefill": [], "decode": []})
    for (model, hw, tp, prompt, batch, tokens), reps in sorted(raw.items()):
        pt = float(np.mean([r[0] for r in reps]))
        tt = float(np.mean([r[1] for r in reps]))
        e2e = float(np.mean([r[2] for r in reps]))
        if e2e > 1.1 * (pt + tokens * tt):
            continue
        generated = min(float(tokens), max(1.0, (e2e - pt) / tt))
        group = by_config[(model, hw, tp)]
        group["prefill"].append(PrefillSample(prompt * batch, batch, pt / 1e3))
        group["decode"].append(DecodeSample(batch, batch * (prompt + generated / 2), tt / 1e3))
    out = []
    for (model, hw, tp), g in sorted(by_config.items()):
        # One configuration can repeat as a prefill sample (same prompt x batch, other token_size).
        prefill = _merge_prefill(g["prefill"])
        out.append(
            StepSamples(
                SPLITWISE_MODELS[model],
                hw,
                tp,
                f"splitwise-perf ({model}/{hw})",
                "splitwise",
                prefill,
                tuple(g["decode"]),
            )
        )
    return out


def _merge_prefill(samples: Iterable[PrefillSample]) -> tuple[PrefillSample, ...]:
    groups: dict[tuple[float, float], list[float]] = defaultdict(list)
    for s in samples:
        groups[(s.num_tokens, s.num_seqs)].append(s.time_s)
    return tuple(PrefillSample(n, b, float(np.mean(ts))) for (n, b), ts in sorted(groups.items()))


# --------------------------------------------------------------------------- argonne


# Argonne hardware names -> catalog names, for the vendors no other data set covers. (Its MI250 is
# one GCD as vLLM sees it, not the catalog's two-GCD MI250-OAM package, so it is left out.)
ARGONNE_HARDWARE: dict[str, str] = {"AMD MI300X GPU": "MI300X", "Nvidia A100 GPU": "A100-SXM4-80GB"}
ARGONNE_REFERENCE = "Nvidia H100 GPU"


@dataclass(frozen=True, slots=True)
class RelativeSpeed:
    """Step times of one type relative to the reference type (H100) under the same vLLM build."""

    accelerator: str
    decode_ratio: float  # median latency ratio of batch-1 static runs (decode-bound)
    prefill_ratio: float  # median TTFT ratio, 16 prompts x 1024 tokens (prefill-bound)
    num_decode_pairs: int
    num_prefill_pairs: int


def read_argonne_relative_speed(data_dir: Path) -> dict[str, RelativeSpeed]:
    """argonne-llm-inference-bench -> how much slower each type ran than the H100, vLLM rows only.

    Pairs rows with the same model, device count, lengths and batch. Batch-1 runs of in = out
    tokens spend nearly all their time in decode steps; the TTFT table times 16 x 1024-token
    prefills. Both are 2024 vLLM builds (ROCm for AMD), so the ratios say how the types compare
    under one engine generation, not how fast today's engine is on either.
    """
    root = Path(data_dir) / "argonne-llm-inference-bench"
    latency: dict[tuple, float] = {}
    with (root / "All_results.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("Framework") != "vLLM" or r.get("Batch Size") != "1":
                continue
            latency[(r["Hardware"], r["Model"], r["Num of Hardware"], r["Input Output Length"])] = float(r["Latency"])
    ttft: dict[tuple, float] = {}
    with (root / "all_results_TTFT_ITL.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("Framework") != "vLLM":
                continue
            ttft[(r["Hardware"], r["Model"], r["Num of Hardware"], r["Input Length"], r["Batch Size"])] = float(
                r["TTFT Latency"]
            )
    out = {}
    for hardware, accel in ARGONNE_HARDWARE.items():
        dec = [
            v / latency[(ARGONNE_REFERENCE,) + k[1:]]
            for k, v in latency.items()
            if k[0] == hardware and (ARGONNE_REFERENCE,) + k[1:] in latency
        ]
        pre = [
            v / ttft[(ARGONNE_REFERENCE,) + k[1:]]
            for k, v in ttft.items()
            if k[0] == hardware and (ARGONNE_REFERENCE,) + k[1:] in ttft
        ]
        if dec and pre:
            out[accel] = RelativeSpeed(accel, float(np.median(dec)), float(np.median(pre)), len(dec), len(pre))
    return out
