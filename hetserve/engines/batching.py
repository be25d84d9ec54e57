"""One continuous-batching step, pure: the simulator runs it in virtual time, the emulated engine
in real time, so the two cannot disagree. No clock, no asyncio, no ray here.

A step is two calls, like vLLM's `schedule()` / `update_from_output()`:
  plan = batcher.plan_step()        # schedule tokens under the step's budget, price the step
  ... time passes: plan.step_s (virtual or slept) ...
  out = batcher.complete_step(plan) # scheduled tokens are computed; sequences whose prompt is
                                    # done sample one token; finished ones leave

The policy is vLLM v1's FCFS scheduler (vllm/v1/core/sched/scheduler.py, `schedule()`), with KV
counted in tokens instead of blocks and without prefix caching or speculative decoding. There is
no prefill or decode phase: each sequence has `num_computed_tokens` (KV written) and `num_tokens`
(prompt + generated), and each step assigns it tokens to catch up, from one token budget of
`max_num_batched_tokens` shared by decodes and prompt chunks:
  1. Running sequences, oldest first: min(num_tokens - num_computed_tokens, budget left) tokens
     each (1 for a decode, a chunk of the prompt otherwise: chunked prefill). When the KV cache
     cannot hold them, the newest running sequence is preempted (recompute: its KV is freed and
     it waits again at the front of the queue) until they fit, or the sequence itself was the
     newest.
  2. Only if nothing was preempted: waiting sequences in FIFO order while budget is left and the
     batch has fewer than `max_num_seqs`, each with a first chunk of min(num_tokens, budget left)
     tokens if its KV fits; the first that does not fit stops admission.
A sequence samples a token in the step that computes its last prompt (or recompute) token, and
in every decode step after.

One price per step (`step_time_s`): a mixed step is one forward pass over all its tokens, not a
prefill pass plus a decode pass.

Fast path for simulators: between admissions, finishes and preemptions every step is a decode
step of the same batch, whose context grows by B tokens per step. `decode_run_limit()` says how
many such steps lie ahead, `decode_run_span()` prices them step by step exactly as `plan_step`
would, and `advance_decode()` applies them at once: the same sequence of states and step times as
stepping one by one, at O(B) per run instead of per step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hetserve.records import DEFAULT_MAX_NUM_BATCHED_TOKENS, LatencyCoeffs

__all__ = ["ContinuousBatcher", "Sequence", "StepPlan", "StepResult", "step_time_s"]


def step_time_s(
    coeffs: LatencyCoeffs,
    num_prefill_tokens: float,
    prefill_attention: float,
    num_decode_seqs: float,
    num_decode_context_tokens: float,
) -> float:
    """Seconds of one forward pass over prompt chunks and decodes together.

    `prefill_attention` is the sum over chunks of (k + c)**2 - k**2 for a chunk of c tokens after
    k computed ones, so a prompt's attention costs q_p * l**2 however it is chunked.

    A pure step keeps its calibrated price (decode_s, prefill_batch_s). A mixed step is one pass:
    its linear layers see all P + D tokens at once, so it costs the larger of the memory-bound
    pass (a decode step of D sequences) and the compute-bound pass (a prefill of P + D tokens),
    plus the decodes' attention over their KV. Checked against vidur's operator profiles, where a
    mixed batch's linear layers take the one-pass time of its token count (benchmarks/mixed_step.md,
    written by scripts/fit_mixed_step.py).
    """
    if num_prefill_tokens <= 0:
        return coeffs.decode_s(num_decode_seqs, num_decode_context_tokens)
    prefill = coeffs.prefill_batch_s(num_prefill_tokens + num_decode_seqs, prefill_attention)
    if num_decode_seqs <= 0:
        return prefill
    decode = coeffs.decode_s(num_decode_seqs, num_decode_context_tokens)
    return max(decode, prefill + coeffs.c_d * num_decode_context_tokens)


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside an engine. `num_target_tokens` is when it stops (EOS or max_tokens).

    `num_computed_tokens` have their KV written; `num_kv_tokens` are allocated (computed, plus
    those scheduled in the step under way), as vLLM's allocate_slots does before a step.
    """

    request_id: str
    num_prompt_tokens: int
    num_target_tokens: int
    arrival_s: float = 0.0
    num_output_tokens: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    num_preemptions: int = 0
    num_computed_tokens: int = 0
    num_kv_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def prefilling(self) -> bool:
        """Still computing its prompt (or re-computing prompt + output after a preemption)."""
        return self.num_output_tokens == 0 or self.num_computed_tokens < self.num_tokens - 1

    @property
    def done(self) -> bool:
        return self.num_output_tokens >= self.num_target_tokens


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step will run and how long it takes (seconds of accelerator time).

    `scheduled[i]` gets `num_new_tokens[i]` tokens. `num_context_tokens` is the decodes' KV
    context (what decode attention reads).
    """

    scheduled: tuple[Sequence, ...]
    num_prefill_tokens: int
    num_decode_seqs: int
    num_context_tokens: int
    step_s: float
    preempted: tuple[Sequence, ...] = ()
    epoch: int = -1  # the batcher's abort count when planned; unchanged at completion = no aborts
    num_new_tokens: tuple[int, ...] = ()
    num_prefill_seqs: int = 0

    @property
    def num_batched_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs


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
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    kv_used_tokens: int = 0  # invariant: sum of num_kv_tokens over `running`
    num_preemptions: int = 0
    _num_aborts: int = 0

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1 (got {self.max_num_batched_tokens})")

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
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                return seq
        return None

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def _preempt_newest(self) -> Sequence:
        victim = self.running.pop()
        self.kv_used_tokens -= victim.num_kv_tokens
        victim.num_kv_tokens = 0
        victim.num_computed_tokens = 0  # recompute: prompt + output are prefilled again
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)
        return victim

    def plan_step(self) -> StepPlan | None:
        """Schedule this step's tokens (running first, then admissions) and price it.
        None when there is nothing to run."""
        budget = self.max_num_batched_tokens
        capacity = self.kv_capacity_tokens
        scheduled: list[Sequence] = []
        num_new: list[int] = []
        preempted: list[Sequence] = []
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while self.kv_used_tokens + n > capacity:
                victim = self._preempt_newest()
                preempted.append(victim)
                if victim is seq:
                    break
            if preempted and preempted[-1] is seq:
                break
            seq.num_kv_tokens += n
            self.kv_used_tokens += n
            scheduled.append(seq)
            num_new.append(n)
            budget -= n
            i += 1
        if not preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < self.max_num_seqs:
                seq = waiting[0]
                n = min(seq.num_tokens, budget)
                if self.kv_used_tokens + n > capacity:
                    break
                waiting.popleft()
                running.append(seq)
                seq.num_kv_tokens = n
                self.kv_used_tokens += n
                scheduled.append(seq)
                num_new.append(n)
                budget -= n
        if not scheduled:
            return None
        num_prefill = num_prefill_seqs = num_decode = num_ctx = 0
        attention = 0
        for seq, n in zip(scheduled, num_new, strict=True):
            if seq.prefilling:
                k = seq.num_computed_tokens
                num_prefill += n
                num_prefill_seqs += 1
                attention += (k + n) * (k + n) - k * k
            else:
                num_decode += 1
                num_ctx += seq.num_kv_tokens
        step_s = step_time_s(self.coeffs, num_prefill, attention, num_decode, num_ctx)
        return StepPlan(
            tuple(scheduled),
            num_prefill,
            num_decode,
            num_ctx,
            step_s,
            tuple(preempted),
            self._num_aborts,
            tuple(num_new),
            num_prefill_seqs,
        )

    def decode_run_limit(self) -> int:
        """Steps from now that are pure decode steps of the current batch: the next `plan_step`
        would schedule exactly one token for every running sequence, admit nothing and preempt
        nothing, and no sequence finishes before the last of them. 0 when the next step is not
        such a step (call `plan_step`)."""
        running = self.running
        num_seqs = len(running)
        if not running or num_seqs > self.max_num_batched_tokens:
            return 0
        # Admission of the waiting head is re-tried before every step; it stays blocked for the
        # whole run only if the batch is full, no budget is left after the decodes, or its first
        # chunk's KV does not fit (KV use only grows during the run).
        spare = self.max_num_batched_tokens - num_seqs
        if self.waiting and num_seqs < self.max_num_seqs and spare > 0:
            chunk = min(self.waiting[0].num_tokens, spare)
            if self.kv_used_tokens + num_seqs + chunk <= self.kv_capacity_tokens:
                return 0
        # Step i (from 0) needs kv_used + (i+1)*B <= capacity, or the newest would be preempted.
        limit = (self.kv_capacity_tokens - self.kv_used_tokens) // num_seqs
        if limit <= 0:
            return 0
        for seq in running:
            if seq.prefilling:
                return 0
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
        ctx = self.kv_used_tokens + num_seqs  # each decode reads its KV plus the slot it writes
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
            seq.num_computed_tokens += num_steps
            seq.num_kv_tokens += num_steps
            if seq.num_output_tokens >= seq.num_target_tokens:
                seq.finish_s = now_s
                finished.append(seq)
        self.kv_used_tokens += num_steps * len(emitted)
        if finished:
            self._drop(finished)
        return StepResult(emitted, tuple(finished))

    def complete_step(self, plan: StepPlan, now_s: float = 0.0) -> StepResult:
        """Mark the plan's tokens computed (for sequences not aborted meanwhile); a sequence
        whose tokens are all computed samples one."""
        live = None if plan.epoch == self._num_aborts else set(map(id, self.running))
        emitted = []
        finished = []
        for seq, n in zip(plan.scheduled, plan.num_new_tokens, strict=True):
            if live is not None and id(seq) not in live:
                continue
            seq.num_computed_tokens += n
            if seq.num_computed_tokens < seq.num_tokens:
                continue  # a prompt chunk: no token sampled yet
            seq.num_output_tokens += 1
            emitted.append(seq)
            if seq.first_token_s is None:
                seq.first_token_s = now_s
            if seq.num_output_tokens >= seq.num_target_tokens:
                seq.finish_s = now_s
                finished.append(seq)
        if finished:
            self._drop(finished)
        return StepResult(tuple(emitted), tuple(finished))

    def _drop(self, finished: list[Sequence]) -> None:
        gone = set(map(id, finished))
        self.running = [s for s in self.running if id(s) not in gone]
        self.kv_used_tokens -= sum(s.num_kv_tokens for s in finished)
