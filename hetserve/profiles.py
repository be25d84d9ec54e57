"""Measured data sets -> step-time samples per (model, accelerator type, TP), ready for fitting.

Readers for the published data under `../shared/data` (see each folder's README):
  * helix-profiles   vLLM 0.4 per-layer prefill/decode times, A100-40GB, L4, T4, V100 (TP 1/2/4);
  * splitwise-perf   whole-model prompt and decode-iteration times, A100-80GB, H100 (TP 2/4/8);
  * aiconfigurator   vLLM 0.14 operator latencies (GEMM, attention, all-reduce) on A100-SXM,
                     H100-SXM, H200-SXM, L40S, composed layer by layer into step times;
  * argonne          relative speed of types no other set covers (MI300X), vLLM vs vLLM.
vidur-profiling is not used: its attention timings are missing and its MLP timings (sarathi
kernels) add nothing the vLLM kernel tables do not cover on A100/H100.
`aiconfigurator/silicon_sample.csv` is validation data and is never read here.
Plain Python and numpy; no ray import.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from hetserve.config import ModelSpec

if TYPE_CHECKING:
    from hetserve.catalog import Catalog

__all__ = [
    "DecodeSample",
    "KernelTables",
    "PrefillSample",
    "RelativeSpeed",
    "StepSamples",
    "collect_samples",
    "compose_samples",
    "intermediate_size",
    "read_helix",
    "read_argonne_relative_speed",
    "read_kernel_tables",
    "read_splitwise",
]

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

KERNEL_GPUS: dict[str, str] = {
    "a100_sxm": "A100-SXM4-80GB",
    "h100_sxm": "H100-SXM5-80GB",
    "h200_sxm": "H200-SXM-141GB",
    "l40s": "L40S",
}


@dataclass(frozen=True, slots=True)
class PrefillSample:
    """One prefill step: `num_tokens` prompt tokens from `num_seqs` sequences of equal length."""

    num_tokens: float
    num_seqs: float
    time_s: float


@dataclass(frozen=True, slots=True)
class DecodeSample:
    """One decode step of `num_seqs` sequences holding `num_context_tokens` KV tokens in total."""

    num_seqs: float
    num_context_tokens: float
    time_s: float


@dataclass(frozen=True, slots=True)
class StepSamples:
    """Every sample of one (model, accelerator type, TP) from one data set, in data-set order."""

    model: str
    accelerator: str
    tp: int
    source: str
    engine: str
    prefill: tuple[PrefillSample, ...]
    decode: tuple[DecodeSample, ...]


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
        prefill = tuple(
            PrefillSample(n, n / HELIX_MEAN_PROMPT_TOKENS, t) for n, t in sorted(phases["prompt"])
        )
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
                row["model"], hw, int(row["tensor_parallel"]),
                int(row["prompt_size"]), int(row["batch_size"]), int(row["token_size"]),
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
            StepSamples(SPLITWISE_MODELS[model], hw, tp, f"splitwise-perf ({model}/{hw})", "splitwise", prefill,
                        tuple(g["decode"]))
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
        dec = [v / latency[(ARGONNE_REFERENCE,) + k[1:]] for k, v in latency.items()
               if k[0] == hardware and (ARGONNE_REFERENCE,) + k[1:] in latency]
        pre = [v / ttft[(ARGONNE_REFERENCE,) + k[1:]] for k, v in ttft.items()
               if k[0] == hardware and (ARGONNE_REFERENCE,) + k[1:] in ttft]
        if dec and pre:
            out[accel] = RelativeSpeed(accel, float(np.median(dec)), float(np.median(pre)), len(dec), len(pre))
    return out


# --------------------------------------------------------------------------- aiconfigurator kernels


def intermediate_size(model: ModelSpec) -> float:
    """MLP width implied by the parameter count (gated MLP: three hidden x I matrices per layer).

    params = layers x (attention + 3 x hidden x I) + 2 x vocab x hidden (untied embeddings), the
    layout of Llama, Mistral and Qwen; recovers Llama-3.1-70B's 28,672 and Qwen3-32B's 25,600.
    """
    h, hd = model.hidden_size, model.head_dim
    attn = h * (model.num_heads + 2 * model.num_kv_heads) * hd + model.num_heads * hd * h
    per_layer = (model.num_params_b * 1e9 - 2 * model.vocab_size * h) / model.num_layers
    return max(h, (per_layer - attn) / (3 * h))


def _bracket(grid: np.ndarray, x: float) -> tuple[int, int, float]:
    """Indices i0 <= i1 around x in an increasing grid and the weight of i1 (0 when clamped)."""
    if x <= grid[0]:
        return 0, 0, 0.0
    if x >= grid[-1]:
        return len(grid) - 1, len(grid) - 1, 0.0
    i1 = int(np.searchsorted(grid, x))
    i0 = i1 - 1
    return i0, i1, (x - grid[i0]) / (grid[i1] - grid[i0])


def _monotone(log_lat: np.ndarray, log_size: np.ndarray, axis: int) -> np.ndarray:
    """Along `axis`: log latency rises no faster than log size (split), and never falls (pad)."""
    out = np.moveaxis(np.where(np.isnan(log_lat), np.inf, log_lat), axis, 0).copy()
    for i in range(1, out.shape[0]):
        out[i] = np.minimum(out[i], out[i - 1] + (log_size[i] - log_size[i - 1]))
    for i in range(out.shape[0] - 2, -1, -1):
        out[i] = np.minimum(out[i], out[i + 1])
    out = np.moveaxis(out, 0, axis)
    return np.where(np.isnan(log_lat) | np.isinf(out), np.nan, out)


class _Gemm:
    """Latency of C[m,n] = A[m,k] B[k,n] on a measured (m, n, k) grid, interpolated.

    Trilinear in (log m, log n, log k) on log latency inside the grid; beyond the largest m, n or
    k the latency grows in proportion (the kernel is throughput-bound there), below the smallest it
    is clamped (launch-bound).
    """

    def __init__(self, rows: Sequence[tuple[int, int, int, float]]):
        self.m = np.array(sorted({r[0] for r in rows}), dtype=float)
        self.n = np.array(sorted({r[1] for r in rows}), dtype=float)
        self.k = np.array(sorted({r[2] for r in rows}), dtype=float)
        mi = {v: i for i, v in enumerate(self.m)}
        ni = {v: i for i, v in enumerate(self.n)}
        ki = {v: i for i, v in enumerate(self.k)}
        self.log_lat = np.full((len(self.m), len(self.n), len(self.k)), np.nan)
        for m, n, k, lat in rows:
            self.log_lat[mi[m], ni[n], ki[k]] = math.log(lat)
        # Two facts any GEMM library can honour remove the tables' outliers (e.g. H100 bf16 m=2048,
        # n=5120, k>=6144 timed 6x slower than m=4096, a poor heuristic for that one shape):
        # a GEMM is never slower than one with more rows (pad it), nor slower per row than one
        # with fewer (split it). Only along m: splitting n or k changes which weights are read,
        # and small weight matrices were timed hot in L2 (L40S: 96 MB), which big ones never are.
        self.log_lat = _monotone(self.log_lat, np.log(self.m), axis=0)

    def __call__(self, m: float, n: float, k: float) -> float:
        scale = 1.0
        if m > self.m[-1]:
            scale *= m / self.m[-1]
            m = self.m[-1]
        if n > self.n[-1]:
            scale *= n / self.n[-1]
            n = self.n[-1]
        if k > self.k[-1]:
            scale *= k / self.k[-1]
            k = self.k[-1]
        lm, ln, lk = np.log(self.m), np.log(self.n), np.log(self.k)
        i0, i1, wi = _bracket(lm, math.log(max(m, 1.0)))
        j0, j1, wj = _bracket(ln, math.log(max(n, 1.0)))
        l0, l1, wl = _bracket(lk, math.log(max(k, 1.0)))
        acc = 0.0
        wsum = 0.0
        for i, a in ((i0, 1 - wi), (i1, wi)):
            for j, b in ((j0, 1 - wj), (j1, wj)):
                for q, c in ((l0, 1 - wl), (l1, wl)):
                    w = a * b * c
                    v = self.log_lat[i, j, q]
                    if w > 0 and not np.isnan(v):
                        acc += w * v
                        wsum += w
        if wsum == 0.0:
            # A hole in the grid: fall back on the nearest measured shape along m.
            col = self.log_lat[:, j0 if wj < 0.5 else j1, l0 if wl < 0.5 else l1]
            ok = np.where(~np.isnan(col))[0]
            idx = ok[np.argmin(np.abs(ok - (i0 if wi < 0.5 else i1)))]
            return float(np.exp(col[idx])) * scale / 1e3
        return float(np.exp(acc / wsum)) * scale / 1e3


class _Attention:
    """Attention latency per (query heads, KV heads) slice, interpolated in (batch, length).

    Linear (not log) interpolation: attention time is close to affine in batch and length (decode
    reads batch x context KV bytes). Beyond the measured lengths, time grows in proportion to
    length^power (1 for decode, 2 for prefill attention). Head counts missing from the table take
    the nearest slice, scaled by KV heads (decode, KV-read-bound) or query heads (prefill).
    """

    def __init__(self, rows: Sequence[tuple[int, int, int, int, float]], length_power: float, by_kv: bool):
        table: dict[tuple[int, int], dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for heads, kv, batch, length, lat in rows:
            table[(heads, kv)][batch][length] = lat
        self._table = {
            hk: {b: (np.array(sorted(d)), np.array([d[x] for x in sorted(d)])) for b, d in per_b.items()}
            for hk, per_b in table.items()
        }
        self._power = length_power
        self._by_kv = by_kv

    def _slice(self, heads: int, kv: int) -> tuple[dict, float]:
        if (heads, kv) in self._table:
            return self._table[(heads, kv)], 1.0

        def distance(hk: tuple[int, int]) -> float:
            return abs(math.log(hk[1] / kv)) * 4 + abs(math.log(hk[0] / heads))

        hk = min(self._table, key=distance)
        scale = kv / hk[1] if self._by_kv else heads / hk[0]
        return self._table[hk], scale

    def _at_batch(self, curve: tuple[np.ndarray, np.ndarray], length: float) -> float:
        xs, ys = curve
        if length <= xs[-1]:
            return float(np.interp(length, xs, ys))
        return float(ys[-1] * (length / xs[-1]) ** self._power)

    def __call__(self, heads: int, kv: int, batch: float, length: float) -> float:
        per_b, scale = self._slice(heads, kv)
        batches = np.array(sorted(per_b), dtype=float)
        if batch >= batches[-1]:
            top = batches[-1]
            return self._at_batch(per_b[int(top)], length) * batch / top * scale / 1e3
        i0, i1, w = _bracket(batches, batch)
        lo = self._at_batch(per_b[int(batches[i0])], length)
        hi = self._at_batch(per_b[int(batches[i1])], length)
        return ((1 - w) * lo + w * hi) * scale / 1e3


@dataclass(frozen=True)
class KernelTables:
    """vLLM 0.14 operator latencies of one GPU type (aiconfigurator), all answers in seconds."""

    accelerator: str
    gemm: Mapping[str, _Gemm]  # by weight dtype: "bfloat16", "fp8", ...
    context_attention: Mapping[str, _Attention]  # by KV-cache dtype
    generation_attention: Mapping[str, _Attention]
    allreduce: Mapping[int, tuple[np.ndarray, np.ndarray]]  # num_gpus -> (elements, latency ms)
    small_kernel_s: float  # the shortest kernels' time: tiny bf16 GEMMs (m <= 16, n, k <= 1024)
    fp8_quant_s: float  # what an FP8 GEMM adds over bf16 at those shapes: activation quantisation
    peak_stream_bytes_per_s: float  # best weight-streaming rate of a bf16 GEMM at m = 1
    count_untimed_kernels: bool = True  # add the element-wise kernels the tables do not time

    def gemm_s(self, m: float, n: float, k: float, dtype: str) -> float:
        """Linear-layer time. FP8 GEMMs were timed with their own activation-quantisation kernel,
        which vLLM's compiled graph fuses into the preceding norm or activation: it is removed."""
        key = _gemm_dtype(dtype)
        if key in self.gemm and key != "bfloat16":
            return max(self.gemm[key](m, n, k) - self.fp8_quant_s, self.small_kernel_s)
        return self.gemm["bfloat16"](m, n, k)

    def allreduce_s(self, num_gpus: int, num_elements: float) -> float:
        if num_gpus <= 1:
            return 0.0
        sizes, lat = self.allreduce[min(self.allreduce, key=lambda g: abs(g - num_gpus))]
        x = math.log(max(num_elements, sizes[0]))
        if x > math.log(sizes[-1]):
            return float(lat[-1] * num_elements / sizes[-1]) / 1e3
        return float(np.exp(np.interp(x, np.log(sizes), np.log(lat)))) / 1e3


def _gemm_dtype(dtype: str) -> str:
    return "fp8" if dtype in ("fp8", "int8", "int4") else "bfloat16"


def _kv_table(tables: Mapping[str, _Attention], kv_dtype: str) -> _Attention:
    key = "fp8" if kv_dtype in ("fp8", "int8", "int4") else "bfloat16"
    return tables.get(key) or tables["bfloat16"]


def read_kernel_tables(data_dir: Path, gpu: str) -> KernelTables:
    """aiconfigurator/vllm-0.14.0-kernels/<gpu>/*.csv -> interpolating lookups.

    Uses vLLM's default kernels: `vllm_default` GEMMs, FlashAttention where measured (else the
    one other backend), and the CUDA-graph custom all-reduce (vLLM captures decode in graphs).
    """
    root = Path(data_dir) / "aiconfigurator" / "vllm-0.14.0-kernels" / gpu
    gemm_rows: dict[str, list] = defaultdict(list)
    with (root / "gemm_perf.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["kernel_source"] == "vllm_default":
                gemm_rows[r["gemm_dtype"]].append((int(r["m"]), int(r["n"]), int(r["k"]), float(r["latency"])))

    def attention(name: str, length_col: str, power: float, by_kv: bool) -> dict[str, _Attention]:
        rows: dict[tuple[str, str], list] = defaultdict(list)
        with (root / name).open(newline="") as fh:
            for r in csv.DictReader(fh):
                rows[(r["kernel_source"], r["kv_cache_dtype"])].append(
                    (int(r["num_heads"]), int(r["num_key_value_heads"]), int(r["batch_size"]),
                     int(r[length_col]), float(r["latency"]))
                )
        out = {}
        for kv_dtype in ("bfloat16", "fp8"):
            for source in ("vllm_flash_attn", "vllm_flashinfer"):
                if rows.get((source, kv_dtype)):
                    out[kv_dtype] = _Attention(rows[(source, kv_dtype)], power, by_kv)
                    break
        return out

    ar: dict[int, list] = defaultdict(list)
    with (root / "custom_allreduce_perf.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["kernel_source"] == "vLLM_custom_graph" and r["allreduce_dtype"] == "bfloat16":
                ar[int(r["num_gpus"])].append((float(r["message_size"]), float(r["latency"])))
    allreduce = {g: (np.array([s for s, _ in sorted(v)]), np.array([x for _, x in sorted(v)])) for g, v in ar.items()}
    gemm = {dtype: _Gemm(rows) for dtype, rows in gemm_rows.items()}
    tiny = [(m, n, k) for m in (1, 2, 4, 8, 16) for n in (32, 64, 128, 256, 512, 1024) for k in (32, 64, 128, 256, 512, 1024)]
    bf16 = np.array([gemm["bfloat16"](*shape) for shape in tiny])
    fp8 = np.array([gemm["fp8"](*shape) for shape in tiny]) if "fp8" in gemm else bf16
    return KernelTables(
        KERNEL_GPUS.get(gpu, gpu),
        gemm,
        attention("context_attention_perf.csv", "isl", 2.0, by_kv=False),
        attention("generation_attention_perf.csv", "step", 1.0, by_kv=True),
        allreduce,
        small_kernel_s=float(np.median(bf16)),
        peak_stream_bytes_per_s=max(2.0 * n * k / gemm["bfloat16"](1, n, k) for n in (4096, 8192, 16384) for k in (4096, 8192)),
        fp8_quant_s=float(max(0.0, np.median(fp8 - bf16))),
    )


# Kernels of a step that the tables do not time. Per layer in vLLM's compiled Llama/Qwen layer:
# two fused residual-add + RMSNorm, RoPE, the KV-cache write, SiLU-and-mul. Per step: embedding,
# final norm, and the sampler's few passes over the logits.
NON_GEMM_KERNELS_PER_LAYER = 5
NON_GEMM_KERNELS_PER_STEP = 6


def _small_kernels_s(model: ModelSpec, tables: KernelTables, num_tokens: float) -> float:
    """The untimed element-wise kernels: each costs the shortest measured kernel time, or its
    activation traffic (read + write of tokens x hidden bf16 values) at the GEMMs' best
    bandwidth when that is longer (long prefills)."""
    if not tables.count_untimed_kernels:
        return 0.0
    traffic_s = 2 * 2 * num_tokens * model.hidden_size / tables.peak_stream_bytes_per_s
    per_kernel = max(tables.small_kernel_s, traffic_s)
    return (model.num_layers * NON_GEMM_KERNELS_PER_LAYER + NON_GEMM_KERNELS_PER_STEP) * per_kernel


def _layer_gemms_s(model: ModelSpec, tables: KernelTables, tp: int, m: float) -> float:
    """QKV, output, gate+up and down projections of one layer for m tokens, on one of tp devices."""
    h, hd = model.hidden_size, model.head_dim
    _, kv_heads = _heads_per_device(model, tp)
    inter = intermediate_size(model)
    dtype = model.dtype
    return (
        tables.gemm_s(m, (model.num_heads // tp + 2 * kv_heads) * hd, h, dtype)
        + tables.gemm_s(m, h, model.num_heads * hd / tp, dtype)
        + tables.gemm_s(m, 2 * inter / tp, h, dtype)
        + tables.gemm_s(m, h, inter / tp, dtype)
    )


def _heads_per_device(model: ModelSpec, tp: int) -> tuple[int, int]:
    # KV heads are replicated when there are fewer of them than devices (vLLM does the same).
    return max(1, model.num_heads // tp), max(1, model.num_kv_heads // tp)


def compose_decode_s(model: ModelSpec, tables: KernelTables, tp: int, num_seqs: float,
                     context_per_seq: float) -> float:
    """One decode step: every layer's GEMMs at m = batch, paged decode attention, two all-reduces;
    then the LM head (kept in bf16 by FP8 checkpoints) for every sequence."""
    heads, kv = _heads_per_device(model, tp)
    kv_dtype = model.kv_dtype or model.dtype
    attn = _kv_table(tables.generation_attention, kv_dtype)(heads, kv, num_seqs, max(1.0, context_per_seq))
    layer = (
        _layer_gemms_s(model, tables, tp, num_seqs)
        + attn
        + 2 * tables.allreduce_s(tp, num_seqs * model.hidden_size)
    )
    head = tables.gemm_s(num_seqs, model.vocab_size / tp, model.hidden_size, "bfloat16")
    return model.num_layers * layer + head + _small_kernels_s(model, tables, num_seqs)


def compose_prefill_s(model: ModelSpec, tables: KernelTables, tp: int, num_seqs: float,
                      prompt_tokens: float) -> float:
    """One prefill step of num_seqs prompts of prompt_tokens each (no cached prefix)."""
    heads, kv = _heads_per_device(model, tp)
    kv_dtype = model.kv_dtype or model.dtype
    m = num_seqs * prompt_tokens
    attn = _kv_table(tables.context_attention, kv_dtype)(heads, kv, num_seqs, prompt_tokens)
    layer = _layer_gemms_s(model, tables, tp, m) + attn + 2 * tables.allreduce_s(tp, m * model.hidden_size)
    head = tables.gemm_s(num_seqs, model.vocab_size / tp, model.hidden_size, "bfloat16")
    return model.num_layers * layer + head + _small_kernels_s(model, tables, m)


# Grid the composed samples cover: the shapes a serving instance meets (prefill chunks stop at
# vLLM's default max_num_batched_tokens, 8192).
COMPOSE_PROMPT_TOKENS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
COMPOSE_DECODE_SEQS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256)
COMPOSE_CONTEXT_PER_SEQ = (128, 512, 1024, 2048, 4096, 8192)


def compose_samples(model: ModelSpec, tables: KernelTables, tp: int,
                    max_context_tokens: float | None = None) -> StepSamples:
    """Step samples of `model` at TP `tp` composed from the kernel tables on the standard grid.

    Prompts and contexts stop at the model's max_model_len; decode points whose total context
    exceeds `max_context_tokens` (the instance's KV cache) are skipped: an instance never runs them.
    """
    prefill = tuple(
        PrefillSample(n, 1, compose_prefill_s(model, tables, tp, 1, n))
        for n in COMPOSE_PROMPT_TOKENS
        if n <= model.max_model_len
    )
    decode = []
    for b in COMPOSE_DECODE_SEQS:
        for s in COMPOSE_CONTEXT_PER_SEQ:
            if s > model.max_model_len or (max_context_tokens is not None and b * s > max_context_tokens):
                continue
            decode.append(DecodeSample(b, b * s, compose_decode_s(model, tables, tp, b, s)))
    return StepSamples(
        model.name, tables.accelerator, tp, "aiconfigurator vllm-0.14.0 kernels (composed)", "vllm-0.14",
        prefill, tuple(decode),
    )


def collect_samples(data_dir: Path, catalog: "Catalog", tp_degrees: Sequence[int] = (1, 2, 4, 8)) -> list[StepSamples]:
    """Every sample set the shipped profiles are fitted on.

    Measured steps from helix-profiles and splitwise-perf, plus, on each GPU with vLLM kernel
    tables, composed steps for every catalog model and TP degree whose weights and one
    max_model_len request fit (90% memory utilisation, 1.5 GiB reserve: the engine defaults).
    """
    from hetserve.model.memory import memory_fit

    data_dir = Path(data_dir)
    out = read_helix(data_dir) + read_splitwise(data_dir)
    for gpu, accel_name in KERNEL_GPUS.items():
        tables = read_kernel_tables(data_dir, gpu)
        accel = catalog.accelerator(accel_name)
        for model in catalog.models.values():
            if model.num_params_b < 1:
                continue  # test-only toy models
            for tp in tp_degrees:
                fit = memory_fit(model, accel, tp, 0.9, 1.5, model.max_model_len)
                if fit.feasible:
                    out.append(compose_samples(model, tables, tp, fit.kv_capacity_tokens))
    return out
