"""aiconfigurator's vLLM 0.14 operator latencies (GEMM, attention, all-reduce) as interpolating lookups.

Covers A100-SXM, H100-SXM, H200-SXM and L40S; `compose` builds step times from them.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetserve.config import ModelSpec

KERNEL_GPUS: dict[str, str] = {
    "a100_sxm": "A100-SXM4-80GB",
    "h100_sxm": "H100-SXM5-80GB",
    "h200_sxm": "H200-SXM-141GB",
    "l40s": "L40S",
}


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
                    (
                        int(r["num_heads"]),
                        int(r["num_key_value_heads"]),
                        int(r["batch_size"]),
                        int(r[length_col]),
                        float(r["latency"]),
                    )
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
    tiny = [
        (m, n, k)
        for m in (1, 2, 4, 8, 16)
        for n in (32, 64, 128, 256, 512, 1024)
        for k in (32, 64, 128, 256, 512, 1024)
    ]
    bf16 = np.array([gemm["bfloat16"](*shape) for shape in tiny])
    fp8 = np.array([gemm["fp8"](*shape) for shape in tiny]) if "fp8" in gemm else bf16
    return KernelTables(
        KERNEL_GPUS.get(gpu, gpu),
        gemm,
        attention("context_attention_perf.csv", "isl", 2.0, by_kv=False),
        attention("generation_attention_perf.csv", "step", 1.0, by_kv=True),
        allreduce,
        small_kernel_s=float(np.median(bf16)),
        peak_stream_bytes_per_s=max(
            2.0 * n * k / gemm["bfloat16"](1, n, k) for n in (4096, 8192, 16384) for k in (4096, 8192)
        ),
        fp8_quant_s=float(max(0.0, np.median(fp8 - bf16))),
    )
