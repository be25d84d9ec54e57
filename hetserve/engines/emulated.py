"""An engine without a GPU: the shared continuous-batching step driven in real time by asyncio.

Throughput emerges from one loop over the whole batch, paced by the accelerator type's latency
model, exactly as on a real engine; no request ever sleeps on its own. No ray or vllm import here.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from hetserve.engines.base import (
    Engine,
    EngineDeadError,
    EngineError,
    GenerateRequest,
    RequestTooLongError,
    TokenChunk,
    UnsupportedParameterError,
)
from hetserve.engines.batching import ContinuousBatcher, Sequence
from hetserve.model.online_fit import StepAccumulator
from hetserve.records import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_STATS_WINDOW_S, InstanceStats, LatencyCoeffs

__all__ = ["EmulatedEngine", "check_supported", "placeholder_token", "vocabulary_token"]

# Placeholder vocabulary: output text is deterministic and readable, and never an EOS.
_WORDS = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
    "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "magna",
)  # fmt: skip


def placeholder_token(seed: int, index: int, vocab_size: int) -> tuple[int, str]:
    """Token `index` of the output for a prompt hashed to `seed`: (token id, text)."""
    token_id = (seed + 7919 * (index + 1)) % vocab_size
    return token_id, " " + _WORDS[token_id % len(_WORDS)]


def vocabulary_token(seed: int, index: int, output_token_ids: tuple[int, ...]) -> int:
    """Token `index` of the output, drawn from a real tokenizer's ids (the router detokenizes)."""
    return output_token_ids[(seed + 7919 * (index + 1)) % len(output_token_ids)]


def check_supported(request: GenerateRequest) -> None:
    """Refuse what an engine without a model cannot honour, naming the field: it has no
    probabilities to report or penalise and never samples a stop token."""
    if request.logprobs is not None:
        raise UnsupportedParameterError("logprobs", "logprobs: the emulated engine has no token probabilities")
    if request.stop_token_ids:
        raise UnsupportedParameterError("stop_token_ids", "stop_token_ids: the emulated engine never samples them")
    if request.allowed_token_ids:
        raise UnsupportedParameterError("allowed_token_ids", "allowed_token_ids: the emulated engine does not sample")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise UnsupportedParameterError(name, f"{name}: the emulated engine does not sample from a distribution")


@dataclass(slots=True, eq=False)
class _Stream:
    """Per-request hand-off between the batching loop and the request's generator."""

    seq: Sequence
    seed: int
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)  # cumulative output count, or None = aborted
    finish_reason: str | None = None


class EmulatedEngine(Engine):
    """Continuous batching in real time: one loop task owns the batch.

    Each iteration: `plan_step()` admits waiting requests under the KV and batched-token budget
    and prices the step from the latency model (prefill of the admitted prompts + one decode step
    over the batch); the loop sleeps `step_s * time_scale`; `complete_step()` gives every running
    sequence one token, which is pushed to that request's queue. Output length is max_tokens
    (emulation has no EOS).

    Sleeps are taken against a running deadline (the previous step's end), so the loop's own
    Python overhead does not slow the emulated accelerator as long as it is shorter than a step.
    When the process falls behind by more than `max_lag_s` (CPU starvation) the deadline is reset
    instead of catching up in a burst.

    `time_scale` < 1 runs the accelerator faster than life (tests). Reported tokens/s are in the
    emulated accelerator's time (wall rate x time_scale), so they compare with the plan's
    prediction whatever the scale.

    `speed_factor` makes the emulated accelerator's steps take that many times what `coeffs`
    say (a card slower or faster than the plan believes; `set_speed_factor` changes it mid-run).
    Every step is recorded (`StepAccumulator`: its duration in accelerator time, prefill tokens,
    decode sequences, context tokens) and reported with the stats, as are the ids of the
    requests the engine holds.
    """

    def __init__(
        self,
        *,
        coeffs: LatencyCoeffs,
        kv_capacity_tokens: int,
        max_num_seqs: int,
        max_model_len: int,
        max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
        time_scale: float = 1.0,
        vocab_size: int = 32000,
        stats_window_s: float = DEFAULT_STATS_WINDOW_S,
        max_lag_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        output_token_ids: tuple[int, ...] = (),
        speed_factor: float = 1.0,
        speed_changes: tuple[tuple[float, float], ...] = (),
    ):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0 (got {time_scale})")
        if kv_capacity_tokens < 2:
            raise ValueError(f"kv_capacity_tokens must be >= 2 (got {kv_capacity_tokens})")
        self.coeffs = coeffs
        self.set_speed_factor(speed_factor)
        # (emulated seconds after the first step, factor): each multiplies the speed factor once
        # reached (from the first step, not the start: a replica idles until the router sends work).
        self._speed_changes = sorted((float(t), float(f)) for t, f in speed_changes)
        self._first_step_s: float | None = None
        self._steps = StepAccumulator(coeffs)  # the configured (plan's) shape classifies mixed steps
        self.max_model_len = max_model_len
        self.time_scale = time_scale
        self.vocab_size = vocab_size
        # With a tokenizer configured: real token ids, and text left to the router's detokenizer.
        self.output_token_ids = tuple(output_token_ids)
        self._stats_window_wall_s = stats_window_s * time_scale
        self._max_lag_s = max_lag_s
        self._clock = clock
        self._batcher = ContinuousBatcher(
            coeffs=coeffs,
            kv_capacity_tokens=kv_capacity_tokens,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
        )
        self._streams: dict[str, _Stream] = {}
        self._recent: deque[tuple[float, int]] = deque()  # (wall time of step end, tokens emitted)
        self._recent_tokens = 0
        self._total_output_tokens = 0
        self._started_at_s: float | None = None
        self._task: asyncio.Task | None = None
        # Set when a request arrives; the loop sleeps on it when idle (an Event binds to the
        # running loop only when first awaited, so it can be made here).
        self._wake = asyncio.Event()
        self._dead: BaseException | None = None

    def set_speed_factor(self, factor: float) -> None:
        """From the next step on, steps take `factor` times what the coefficients say."""
        if factor <= 0:
            raise ValueError(f"speed_factor must be > 0 (got {factor})")
        self.speed_factor = float(factor)

    @property
    def kv_capacity_tokens(self) -> int:
        return self._batcher.kv_capacity_tokens

    async def start(self) -> None:
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._started_at_s = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="emulated-engine-loop")
        self._task.add_done_callback(self._on_loop_done)

    def _on_loop_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self._dead = self._dead or EngineDeadError("engine was shut down")
        elif task.exception() is not None:
            self._dead = EngineDeadError(f"batching loop failed: {task.exception()!r}")
        for stream in list(self._streams.values()):
            stream.finish_reason = "abort"
            stream.updates.put_nowait(None)

    async def _run(self) -> None:
        deadline_s: float | None = None
        while True:
            plan = self._batcher.plan_step()
            if plan is None:
                self._wake.clear()
                await self._wake.wait()
                deadline_s = None
                continue
            now_s = self._clock()
            if deadline_s is None or now_s - deadline_s > self._max_lag_s:
                deadline_s = now_s
            if self._speed_changes:
                if self._first_step_s is None:
                    self._first_step_s = now_s
                engine_s = (now_s - self._first_step_s) / self.time_scale
                while self._speed_changes and engine_s >= self._speed_changes[0][0]:
                    self.set_speed_factor(self.speed_factor * self._speed_changes.pop(0)[1])
            step_s = plan.step_s * self.speed_factor  # accelerator time of this step
            deadline_s += step_s * self.time_scale
            await asyncio.sleep(max(0.0, deadline_s - self._clock()))
            end_s = self._clock()
            self._steps.add_step(plan.num_prefill_tokens, plan.num_decode_seqs, plan.num_context_tokens, step_s)
            result = self._batcher.complete_step(plan, now_s=end_s)
            self._record(end_s, len(result.emitted))
            for seq in result.emitted:
                stream = self._streams.get(seq.request_id)
                if stream is not None:
                    if seq.done:
                        stream.finish_reason = "length"
                    stream.updates.put_nowait(seq.num_output_tokens)

    def _record(self, end_s: float, num_tokens: int) -> None:
        self._total_output_tokens += num_tokens
        self._recent.append((end_s, num_tokens))
        self._recent_tokens += num_tokens
        self._trim(end_s)

    def _trim(self, now_s: float) -> None:
        horizon_s = now_s - self._stats_window_wall_s
        while self._recent and self._recent[0][0] <= horizon_s:
            self._recent_tokens -= self._recent.popleft()[1]

    def _check_fits(self, request: GenerateRequest, num_prompt_tokens: int) -> None:
        need = num_prompt_tokens + request.max_tokens
        if need > self.max_model_len:
            raise RequestTooLongError(
                f"request {request.request_id}: {num_prompt_tokens} prompt tokens + max_tokens "
                f"{request.max_tokens} = {need} exceeds the context of {self.max_model_len} tokens"
            )
        if num_prompt_tokens + 1 > self.kv_capacity_tokens:
            raise RequestTooLongError(
                f"request {request.request_id}: {num_prompt_tokens} prompt tokens exceed the KV "
                f"cache of {self.kv_capacity_tokens} tokens"
            )

    def _prompt_tokens(self, request: GenerateRequest) -> tuple[int, int]:
        """(prompt tokens, seed of the placeholder output) for a text or token-id prompt."""
        if request.prompt_token_ids is not None:
            n = request.num_prompt_tokens or len(request.prompt_token_ids)
            data = ",".join(map(str, request.prompt_token_ids)).encode()
        else:
            prompt = request.prompt or ""
            n = request.num_prompt_tokens or self.count_prompt_tokens(prompt)
            data = prompt.encode()
        return max(1, n), zlib.crc32(data) ^ (request.seed or 0)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenChunk]:
        if self._dead is not None:
            raise self._dead
        if self._task is None:
            raise EngineDeadError("engine not started")
        if request.max_tokens < 1:
            raise EngineError(f"request {request.request_id}: max_tokens must be >= 1 (got {request.max_tokens})")
        if request.request_id in self._streams:
            raise EngineError(f"request id {request.request_id!r} is already running")
        check_supported(request)
        num_prompt, seed = self._prompt_tokens(request)
        self._check_fits(request, num_prompt)
        seq = Sequence(request.request_id, num_prompt, request.max_tokens, arrival_s=self._clock())
        stream = _Stream(seq, seed)
        self._streams[request.request_id] = stream
        self._batcher.add(seq)
        self._wake.set()
        sent = 0
        try:
            while True:
                total = await stream.updates.get()
                while total is not None and not stream.updates.empty():
                    total = stream.updates.get_nowait()  # coalesce when the consumer lags
                if total is None:
                    if self._dead is not None and stream.finish_reason == "abort" and sent == 0:
                        raise self._dead
                    yield TokenChunk(request.request_id, "", (), num_prompt, sent, "abort")
                    return
                if self.output_token_ids:
                    tokens = [(vocabulary_token(seed, i, self.output_token_ids), "") for i in range(sent, total)]
                else:
                    tokens = [placeholder_token(seed, i, self.vocab_size) for i in range(sent, total)]
                sent = total
                finish = stream.finish_reason if total >= seq.num_target_tokens else None
                yield TokenChunk(
                    request.request_id,
                    "".join(text for _, text in tokens),
                    tuple(tid for tid, _ in tokens),
                    num_prompt,
                    sent,
                    finish,
                )
                if finish is not None:
                    return
        finally:
            self._streams.pop(request.request_id, None)
            if not seq.done:
                self._batcher.abort(request.request_id)  # consumer went away: free its KV

    async def abort(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        if self._batcher.abort(request_id) is not None and stream is not None:
            stream.finish_reason = "abort"
            stream.updates.put_nowait(None)

    def stats(self) -> InstanceStats:
        now_s = self._clock()
        self._trim(now_s)
        span_wall_s = self._stats_window_wall_s
        if self._started_at_s is not None:
            span_wall_s = min(span_wall_s, now_s - self._started_at_s)
        rate = self._recent_tokens / (span_wall_s / self.time_scale) if span_wall_s > 0 else 0.0
        return InstanceStats(
            num_running=len(self._batcher.running),
            num_waiting=len(self._batcher.waiting),
            kv_used_tokens=self._batcher.kv_used_tokens,
            kv_capacity_tokens=self._batcher.kv_capacity_tokens,
            output_tokens_per_s=rate,
            total_output_tokens=self._total_output_tokens,
            healthy=self._dead is None and self._task is not None,
            steps=self._steps.totals(),
            request_ids=tuple(self._streams),
        )

    async def check_health(self) -> None:
        if self._dead is not None:
            raise self._dead
        if self._task is None:
            raise EngineDeadError("engine not started")

    async def shutdown(self) -> None:
        if self._task is not None and not self._task.done():
            self._dead = EngineDeadError("engine was shut down")
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
