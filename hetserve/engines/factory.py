"""EngineSpec (what one instance's engine is built from) and `create_engine`, the one place that
picks an engine by name, so a Serve replica holds an `Engine` and never branches on which.
vllm is imported only inside engines/vllm_engine.py, lazily, when kind == "vllm"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hetserve.config import ModelSpec
from hetserve.engines.base import Engine, EngineError
from hetserve.records import DEFAULT_STATS_WINDOW_S, DeploymentPlan

__all__ = ["ENGINE_KINDS", "EngineSpec", "create_engine"]

ENGINE_KINDS: tuple[str, ...] = ("emulated", "vllm")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Everything one instance needs to build its engine; pickled into the Serve replica.

    `deployment` is the plan's record of the instance's configuration, with the latency
    coefficients and KV capacity the planner priced it with: the emulated engine paces itself by
    exactly those, so it runs what was planned. `max_model_len` is the longest request served
    (prompt + output), which the plan sized the KV cache for. `time_scale` and `stats_window_s`
    (seconds of emulated time) and `output_token_ids` only affect the emulated engine; `model_path` and `engine_kwargs`
    only the vLLM one.
    """

    model: ModelSpec
    deployment: DeploymentPlan
    max_model_len: int
    time_scale: float = 1.0
    stats_window_s: float = DEFAULT_STATS_WINDOW_S
    model_path: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    output_token_ids: tuple[int, ...] = ()  # emulated: ids to emit (a real tokenizer's), else placeholders
    speed_factor: float = 1.0  # emulated only: steps take this many times the plan's coefficients
    # emulated only: (seconds of emulated time after the first step, factor): then steps take `factor`
    # times longer than before (a card throttling mid-run; the simulator's PlannedInstance.speed_changes)
    speed_changes: tuple[tuple[float, float], ...] = ()

    @property
    def accelerator(self) -> str:
        return self.deployment.config.accelerator


def create_engine(kind: str, spec: EngineSpec) -> Engine:
    """Build (not start) the engine called `kind` for `spec`."""
    dp = spec.deployment
    if kind == "emulated":
        from hetserve.engines.emulated import EmulatedEngine

        return EmulatedEngine(
            coeffs=dp.coeffs,
            kv_capacity_tokens=dp.kv_capacity_tokens,
            max_num_seqs=dp.config.max_num_seqs,
            max_model_len=spec.max_model_len,
            max_num_batched_tokens=dp.max_num_batched_tokens,
            time_scale=spec.time_scale,
            stats_window_s=spec.stats_window_s,
            vocab_size=spec.model.vocab_size,
            output_token_ids=spec.output_token_ids,
            speed_factor=spec.speed_factor,
            speed_changes=spec.speed_changes,
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
            tp=dp.config.tp,
            max_num_seqs=dp.config.max_num_seqs,
            gpu_memory_utilization=dp.config.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
            engine_kwargs=dict(spec.engine_kwargs) or None,
        )
    raise ValueError(f"unknown engine {kind!r}; known: {', '.join(ENGINE_KINDS)}")
