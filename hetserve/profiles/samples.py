"""Step-time samples per (model, accelerator type, TP): what the readers produce and the fit eats."""

from __future__ import annotations

from dataclasses import dataclass


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
