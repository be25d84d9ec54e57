"""Engines behind one ABC (base.py); batching.py is the pure step shared with the simulator.

`create_engine(kind, spec)` is the one place that picks an engine by name, so a Serve replica holds
an `Engine` and never branches on which. vllm is imported only inside engines/vllm_engine.py,
lazily, when kind == "vllm".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hetserve.config import AcceleratorSpec, ModelSpec
from hetserve.engines.base import (
    Engine,
    EngineDeadError,
    EngineError,
    GenerateRequest,
    RequestTooLongError,
    TokenChunk,
)

__all__ = [
    "ENGINE_KINDS",
    "Engine",
    "EngineDeadError",
    "EngineError",
    "EngineSpec",
    "GenerateRequest",
    "RequestTooLongError",
    "TokenChunk",
    "create_engine",
]

EngineKind = Literal["emulated", "vllm"]
ENGINE_KINDS: tuple[str, ...] = ("emulated", "vllm")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Everything one instance needs to build its engine; pickled into the Serve replica.

    `max_model_len` is the longest request served (prompt + output), which the plan sized the KV
    cache for. `time_scale` and `stats_window_s` (seconds of emulated time) only affect the
    emulated engine; `model_path` and `engine_kwargs` only the vLLM one.
    """

    model: ModelSpec
    accelerator: AcceleratorSpec
    tp: int
    max_num_seqs: int
    gpu_memory_utilization: float
    max_model_len: int
    reserve_gib: float = 1.5
    max_num_batched_tokens: int = 8192
    time_scale: float = 1.0
    stats_window_s: float = 10.0
    model_path: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    speed_factor: float = 1.0  # emulated only: steps take this many times the plan's coefficients


def create_engine(kind: str, spec: EngineSpec) -> Engine:
    """Build (not start) the engine called `kind` for `spec`."""
    if kind == "emulated":
        from hetserve.engines.emulated import EmulatedEngine

        return EmulatedEngine.for_accelerator(
            spec.model,
            spec.accelerator,
            spec.tp,
            max_num_seqs=spec.max_num_seqs,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            reserve_gib=spec.reserve_gib,
            max_model_len=spec.max_model_len,
            max_num_batched_tokens=spec.max_num_batched_tokens,
            time_scale=spec.time_scale,
            stats_window_s=spec.stats_window_s,
            speed_factor=spec.speed_factor,
        )
    if kind == "vllm":
        model_path = spec.model_path or spec.model.hf_path
        if not model_path:
            raise EngineError(
                f"engine 'vllm' needs local weights: set vllm_model_path or the model's hf_path "
                f"(model {spec.model.name!r})"
            )
        from hetserve.engines.vllm_engine import VLLMEngine  # the only path that imports vllm

        return VLLMEngine(
            model_path=model_path,
            tp=spec.tp,
            max_num_seqs=spec.max_num_seqs,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
            engine_kwargs=dict(spec.engine_kwargs) or None,
        )
    raise ValueError(f"unknown engine {kind!r}; known: {', '.join(ENGINE_KINDS)}")
