"""Kernel tables -> step times, layer by layer, and every sample set the shipped profiles are fitted on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hetserve.config import EngineSettings, ModelSpec
from hetserve.profiles.kernels import KERNEL_GPUS, KernelTables, _kv_table, intermediate_size, read_kernel_tables
from hetserve.profiles.measured import read_helix, read_splitwise
from hetserve.profiles.samples import DecodeSample, PrefillSample, StepSamples

# The engine defaults the composed profiles are sized with (the same as a cluster file's).
_ENGINE = EngineSettings()

if TYPE_CHECKING:
    from hetserve.catalog import Catalog


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


def compose_decode_s(model: ModelSpec, tables: KernelTables, tp: int, num_seqs: float, context_per_seq: float) -> float:
    """One decode step: every layer's GEMMs at m = batch, paged decode attention, two all-reduces;
    then the LM head (kept in bf16 by FP8 checkpoints) for every sequence."""
    heads, kv = _heads_per_device(model, tp)
    kv_dtype = model.kv_dtype or model.dtype
    attn = _kv_table(tables.generation_attention, kv_dtype)(heads, kv, num_seqs, max(1.0, context_per_seq))
    layer = (
        _layer_gemms_s(model, tables, tp, num_seqs) + attn + 2 * tables.allreduce_s(tp, num_seqs * model.hidden_size)
    )
    head = tables.gemm_s(num_seqs, model.vocab_size / tp, model.hidden_size, "bfloat16")
    return model.num_layers * layer + head + _small_kernels_s(model, tables, num_seqs)


def compose_prefill_s(model: ModelSpec, tables: KernelTables, tp: int, num_seqs: float, prompt_tokens: float) -> float:
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


def compose_samples(
    model: ModelSpec, tables: KernelTables, tp: int, max_context_tokens: float | None = None
) -> StepSamples:
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
        model.name,
        tables.accelerator,
        tp,
        "aiconfigurator vllm-0.14.0 kernels (composed)",
        "vllm-0.14",
        prefill,
        tuple(decode),
    )


def collect_samples(data_dir: Path, catalog: Catalog, tp_degrees: Sequence[int] = (1, 2, 4, 8)) -> list[StepSamples]:
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
                fit = memory_fit(
                    model, accel, tp, _ENGINE.gpu_memory_utilization, _ENGINE.reserve_gib, model.max_model_len
                )
                if fit.feasible:
                    out.append(compose_samples(model, tables, tp, fit.kv_capacity_tokens))
    return out
