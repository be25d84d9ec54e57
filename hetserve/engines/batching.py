"""One continuous-batching step, pure: the simulator runs it in virtual time, the emulated engine
in real time, so the two cannot disagree. No clock, no asyncio, no ray here.

A step is two calls, like vLLM's `schedule()` / `update_from_output()`:
  plan = batcher.plan_step()        # admit waiting requests, price the step from the latency model
  ... time passes: plan.step_s (virtual or slept) ...
  out = batcher.complete_step(plan) # every scheduled sequence gains one token; finished ones leave

KV accounting follows vLLM's: a sequence holds (prompt + generated) tokens of KV; admission needs
room for its prompt plus one token, and when decoding would overflow the cache the most recently
admitted sequence is preempted (recompute: its KV is freed and it waits again at the front of the
queue, to be re-prefilled with prompt + generated tokens).

Fast path for simulators: between admissions, finishes and preemptions every step is a decode
step of the same batch, whose context grows by B tokens per step. `decode_run_limit()` says how
many such steps lie ahead, `decode_run_span()` prices them step by step exactly as `plan_step`
would, and `advance_decode()` applies them at once: the same sequence of states and step times as
stepping one by one, at O(B) per run instead of per step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hetserve.records import LatencyCoeffs

__all__ = ["ContinuousBatcher", "Sequence", "StepPlan", "StepResult"]


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside an engine. `num_target_tokens` is when it stops (EOS or max_tokens)."""

    request_id: str
    num_prompt_tokens: int
    num_target_tokens: int
    arrival_s: float = 0.0
    num_output_tokens: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    num_preemptions: int = 0
    _needs_prefill: bool = True

    @property
    def num_kv_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def done(self) -> bool:
        return self.num_output_tokens >= self.num_target_tokens


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step will run and how long it takes (seconds of accelerator time)."""

    scheduled: tuple[Sequence, ...]
    num_prefill_tokens: int
    num_decode_seqs: int
    num_context_tokens: int
    step_s: float
    preempted: tuple[Sequence, ...] = ()
    epoch: int = -1  # the batcher's abort count when planned; unchanged at completion = no aborts


@dataclass(frozen=True, slots=True)
class StepResult:
    emitted: tuple[Sequence, ...]  # gained one token this step
    finished: tuple[Sequence, ...]


@dataclass
class ContinuousBatcher:
    """Waiting queue, running set and KV budget of one instance."""

    coeffs: LatencyCoeffs
    kv_capacity_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int = 8192
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    kv_used_tokens: int = 0  # invariant: sum of num_kv_tokens over `running`
    num_preemptions: int = 0
    _prefill_pending: list[Sequence] = field(default_factory=list)  # admitted, first step not done
    _num_aborts: int = 0

    def add(self, seq: Sequence) -> None:
        if seq.num_prompt_tokens + 1 > self.kv_capacity_tokens:
            raise ValueError(
                f"request {seq.request_id}: prompt of {seq.num_prompt_tokens} tokens exceeds the "
                f"KV cache of {self.kv_capacity_tokens} tokens"
            )
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        for seq in self.running:
            if seq.request_id == request_id:
                self.running.remove(seq)
                self.kv_used_tokens -= seq.num_kv_tokens
                self._num_aborts += 1
                if seq in self._prefill_pending:
                    self._prefill_pending.remove(seq)
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                return seq
        return None

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def _admit(self) -> int:
        """Move waiting sequences into the batch in FIFO order; returns prompt tokens to prefill."""
        budget = self.max_num_batched_tokens
        num_prefill = 0
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            need = seq.num_kv_tokens  # a preempted sequence re-prefills what it had generated
            # A prompt longer than the step budget still runs, alone, so it cannot starve.
            if num_prefill and num_prefill + need > budget:
                break
            if self.kv_used_tokens + need + 1 > self.kv_capacity_tokens:
                break
            self.waiting.popleft()
            seq._needs_prefill = True
            self._prefill_pending.append(seq)
            self.running.append(seq)
            self.kv_used_tokens += need
            num_prefill += need
        return num_prefill

    def _make_room(self) -> list[Sequence]:
        """Every running sequence grows by one token this step; preempt newest-first until it fits."""
        preempted = []
        while self.running and self.kv_used_tokens + len(self.running) > self.kv_capacity_tokens:
            victim = self.running.pop()
            self.kv_used_tokens -= victim.num_kv_tokens
            victim.num_preemptions += 1
            self.num_preemptions += 1
            if victim._needs_prefill:
                self._prefill_pending.remove(victim)
            self.waiting.appendleft(victim)
            preempted.append(victim)
        return preempted

    def plan_step(self) -> StepPlan | None:
        """Admit, then price the step: prefill of the newly admitted tokens, then one decode step
        over the whole batch. None when there is nothing to run."""
        self._admit()
        preempted = self._make_room()
        if not self.running:
            return None
        # Only the sequences admitted since their last step need prefill (O(admitted), not O(B)),
        # and the batch's context is the KV in use (the invariant on kv_used_tokens).
        num_prefill = sum(s.num_kv_tokens for s in self._prefill_pending)
        sum_sq = sum(s.num_kv_tokens * s.num_kv_tokens for s in self._prefill_pending)
        num_decode = len(self.running)
        num_ctx = self.kv_used_tokens
        step_s = self.coeffs.prefill_batch_s(num_prefill, sum_sq) + self.coeffs.decode_s(num_decode, num_ctx)
        return StepPlan(
            tuple(self.running), num_prefill, num_decode, num_ctx, step_s, tuple(preempted), self._num_aborts
        )

    def decode_run_limit(self) -> int:
        """Steps from now that are pure decode steps of the current batch: the next `plan_step`
        would admit nothing, prefill nothing and preempt nothing, and no sequence finishes before
        the last of them. 0 when the next step is not such a step (call `plan_step`)."""
        running = self.running
        if not running or self._prefill_pending:
            return 0
        num_seqs = len(running)
        # Admission of the waiting head is re-tried before every step; it stays blocked for the
        # whole run only if the batch is full or its KV does not fit (KV use only grows).
        if (
            self.waiting
            and num_seqs < self.max_num_seqs
            and (self.kv_used_tokens + self.waiting[0].num_kv_tokens + 1 <= self.kv_capacity_tokens)
        ):
            return 0
        # Step i (from 0) needs kv_used + (i+1)*B <= capacity, or `_make_room` would preempt.
        limit = (self.kv_capacity_tokens - self.kv_used_tokens) // num_seqs
        if limit <= 0:
            return 0
        for seq in running:
            left = seq.num_target_tokens - seq.num_output_tokens
            if left < limit:
                limit = left
        return limit

    def decode_run_span(self, max_steps: int, start_s: float, deadline_s: float) -> tuple[int, float]:
        """How many of the next `max_steps` decode steps end at or before `deadline_s` (at least
        one), and when the last of them ends. Step times are summed one by one, as `plan_step`
        prices them, so the end time is bit-identical to stepping."""
        decode_s = self.coeffs.decode_s
        num_seqs = len(self.running)
        ctx = self.kv_used_tokens  # = sum of the running sequences' KV tokens
        t = start_s + decode_s(num_seqs, ctx)
        steps = 1
        while steps < max_steps:
            ctx += num_seqs
            nxt = t + decode_s(num_seqs, ctx)
            if nxt > deadline_s:
                break
            t = nxt
            steps += 1
        return steps, t

    def advance_decode(self, num_steps: int, now_s: float) -> StepResult:
        """Apply `num_steps` decode steps at once (at most `decode_run_limit()`); `now_s` is when
        the last ends. `emitted` holds every sequence of the batch, each `num_steps` tokens longer."""
        emitted = tuple(self.running)
        finished = []
        for seq in emitted:
            seq.num_output_tokens += num_steps
            if seq.num_output_tokens >= seq.num_target_tokens:
                seq.finish_s = now_s
                finished.append(seq)
        self.kv_used_tokens += num_steps * len(emitted)
        if finished:
            gone = set(map(id, finished))
            self.running = [s for s in self.running if id(s) not in gone]
            self.kv_used_tokens -= sum(s.num_kv_tokens for s in finished)
        return StepResult(emitted, tuple(finished))

    def complete_step(self, plan: StepPlan, now_s: float = 0.0) -> StepResult:
        """Advance every sequence the plan scheduled (and that was not aborted meanwhile)."""
        finished = []
        if plan.epoch == self._num_aborts:
            scheduled = plan.scheduled  # nothing aborted since the plan: all still running
        else:
            live = set(map(id, self.running))
            scheduled = [s for s in plan.scheduled if id(s) in live]
        for seq in scheduled:
            seq.num_output_tokens += 1
            if seq.first_token_s is None:
                seq.first_token_s = now_s
            if seq.num_output_tokens >= seq.num_target_tokens:
                seq.finish_s = now_s
                finished.append(seq)
        for seq in self._prefill_pending:
            seq._needs_prefill = False
        self._prefill_pending.clear()
        self.kv_used_tokens += len(scheduled)
        emitted = scheduled if isinstance(scheduled, tuple) else tuple(scheduled)
        if finished:
            gone = set(map(id, finished))
            self.running = [s for s in self.running if id(s) not in gone]
            self.kv_used_tokens -= sum(s.num_kv_tokens for s in finished)
        return StepResult(emitted, tuple(finished))
