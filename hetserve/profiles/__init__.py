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
Plain Python and numpy; no ray import. Modules: `samples` (the sample types), `measured` (the
helix, splitwise and argonne readers), `kernels` (the aiconfigurator tables), `compose` (step
times from the tables, and `collect_samples`).
"""

from hetserve.profiles.compose import (
    COMPOSE_CONTEXT_PER_SEQ,
    COMPOSE_DECODE_SEQS,
    COMPOSE_PROMPT_TOKENS,
    NON_GEMM_KERNELS_PER_LAYER,
    NON_GEMM_KERNELS_PER_STEP,
    collect_samples,
    compose_decode_s,
    compose_prefill_s,
    compose_samples,
)
from hetserve.profiles.kernels import KERNEL_GPUS, KernelTables, intermediate_size, read_kernel_tables
from hetserve.profiles.measured import (
    ARGONNE_HARDWARE,
    ARGONNE_REFERENCE,
    HELIX_GPUS,
    HELIX_LAYERS,
    HELIX_MEAN_OUTPUT_TOKENS,
    HELIX_MEAN_PROMPT_TOKENS,
    HELIX_MODELS,
    SPLITWISE_HARDWARE,
    SPLITWISE_MODELS,
    RelativeSpeed,
    read_argonne_relative_speed,
    read_helix,
    read_splitwise,
)
from hetserve.profiles.samples import DecodeSample, PrefillSample, StepSamples

__all__ = [
    "ARGONNE_HARDWARE",
    "ARGONNE_REFERENCE",
    "COMPOSE_CONTEXT_PER_SEQ",
    "COMPOSE_DECODE_SEQS",
    "COMPOSE_PROMPT_TOKENS",
    "HELIX_GPUS",
    "HELIX_LAYERS",
    "HELIX_MEAN_OUTPUT_TOKENS",
    "HELIX_MEAN_PROMPT_TOKENS",
    "HELIX_MODELS",
    "KERNEL_GPUS",
    "NON_GEMM_KERNELS_PER_LAYER",
    "NON_GEMM_KERNELS_PER_STEP",
    "SPLITWISE_HARDWARE",
    "SPLITWISE_MODELS",
    "DecodeSample",
    "KernelTables",
    "PrefillSample",
    "RelativeSpeed",
    "StepSamples",
    "collect_samples",
    "compose_decode_s",
    "compose_prefill_s",
    "compose_samples",
    "intermediate_size",
    "read_argonne_relative_speed",
    "read_helix",
    "read_kernel_tables",
    "read_splitwise",
]
