"""Discrete-event simulation of a heterogeneous cluster behind one scheduling policy, in virtual time.

The router part is the live one: the same `LoadTracker` and policy objects, fed the same calls
(dispatch, streamed tokens, completion, periodic engine stats). Each instance is the shared pure
batching step (`engines/batching.py`) priced by its latency coefficients. Plain Python, no ray,
no clock: the simulator owns virtual time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hetserve.engines.batching import ContinuousBatcher, StepPlan
from hetserve.engines.batching import Sequence as Seq
from hetserve.model.online_fit import StepAccumulator
from hetserve.records import DEFAULT_OUTPUT_TOKENS, InstanceStats, PlannedInstance, RequestInfo
from hetserve.scheduling.admission import AdmissionQueue, Bound, Full
from hetserve.scheduling.base import NoInstanceError, SchedulingPolicy
from hetserve.scheduling.load import LoadTracker
from hetserve.sim.events import ARRIVAL_PRIORITY, Marker, StepEnd, Tick
from hetserve.sim.workload import SimRequests

__all__ = ["SimConfig", "SimResult", "Simulator", "simulate"]

INF = float("inf")


@dataclass(frozen=True)
class SimConfig:
    """How to run (not what): stats period, measurement window, fast-forwarding, recording."""

    reconcile_interval_s: float = 1.0
    """Period of the engine-stats reports that reconcile the load tracker (the live router polls)."""
    window_s: tuple[float, float] | None = None
    """Measurement window; default [first arrival + warmup_fraction * span, last arrival], so the
    ramp-up and the drain after the last arrival are excluded."""
    warmup_fraction: float = 0.25
    drain: bool = True
    """Run until every request finished. False stops at the end of the window: throughput is
    unchanged, latencies then cover only the requests that finished by then."""
    fast_forward: bool = True
    """Apply runs of identical decode steps at once (identical results to stepping; see batching.py)."""
    record_timeline: bool = True
    """Per instance, at every stats tick: (t, output tokens so far, busy s so far, running, waiting, KV used)."""
    record_steps: bool = False
    """Per instance, at every step end: (t, output tokens so far). For the fluid bound."""
    ewma_alpha: float = 0.2
    prefill_weight: float | None = None
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    learn_capacity: bool = True
    """The tracker's online capacity fit (False: C stays at the plan's prediction)."""
    report_delay_s: float = 0.0
    """Reports reach the tracker this long after the engine took them (live: up to a period)."""
    report_request_ids: bool = True
    """Reports carry the ids of the requests on the engine (False: counts only)."""

    def window_for(self, requests: SimRequests) -> tuple[float, float]:
        if self.window_s is not None:
            return self.window_s
        if len(requests) == 0:
            return (0.0, 0.0)
        t0, t1 = float(requests.arrival_s[0]), float(requests.arrival_s[-1])
        return (t0 + self.warmup_fraction * (t1 - t0), t1)


@dataclass
class SimResult:
    """What happened, per request and per instance; `sim.report.summarize` turns it into metrics."""

    policy: str
    requests: SimRequests
    instances: list[PlannedInstance]
    window_s: tuple[float, float]
    instance_of: np.ndarray  # per request: index into `instances`, -1 if no instance could take it
    first_token_s: np.ndarray  # NaN where none
    finish_s: np.ndarray
    num_preemptions: np.ndarray
    window_output_tokens: np.ndarray  # per instance, emitted inside the window
    window_busy_s: np.ndarray  # per instance, time stepping inside the window
    total_output_tokens: np.ndarray  # per instance, whole run
    total_busy_s: np.ndarray
    end_s: float
    num_events: int
    num_steps: int
    timeline: list[list[tuple]] = field(default_factory=list)
    step_log: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


class _SimInstance:
    """Mutable simulation state of one instance."""

    __slots__ = (
        "spec",
        "batcher",
        "busy",
        "plan",
        "run_steps",
        "run_start_s",
        "last_end_s",
        "output_tokens",
        "busy_s",
        "tick_tokens",
        "tick_s",
        "timeline",
        "step_t",
        "step_tokens",
        "snap",
        "steps",
        "run_ctx0",
        "speed_changes",
    )

    def __init__(self, spec: PlannedInstance):
        self.spec = spec
        self.batcher = ContinuousBatcher(
            spec.run_coeffs, spec.kv_capacity_tokens, spec.max_num_seqs, spec.max_num_batched_tokens
        )
        self.steps = StepAccumulator(spec.coeffs)  # what the engine's steps did (the plan's shape)
        self.run_ctx0: tuple[int, float, float] = (0, 0.0, 0.0)  # decode run: first context, first/last step s
        self.speed_changes = sorted(spec.speed_changes)
        self.busy = False
        self.plan: StepPlan | None = None  # None while a fast-forwarded decode run is in progress
        self.run_steps = 0
        self.run_start_s = 0.0  # start of the current busy period
        self.last_end_s = 0.0  # end of the latest completed step
        self.output_tokens = 0
        self.busy_s = 0.0
        self.tick_tokens = 0
        self.tick_s = 0.0
        self.timeline: list[tuple] = []
        self.step_t: list[float] = []
        self.step_tokens: list[int] = []
        self.snap: list[tuple[int, float]] = []

    def busy_until(self, now_s: float) -> float:
        """Busy seconds up to `now_s`, counting the step in progress. Summed per busy period
        (not per step), so stepping and fast-forwarding give bit-identical totals."""
        return self.busy_s + (now_s - self.run_start_s if self.busy else 0.0)

    def completed_busy_s(self) -> float:
        """Busy seconds up to the end of the latest completed step."""
        return self.busy_s + (self.last_end_s - self.run_start_s if self.busy else 0.0)

    def go_idle(self) -> None:
        if self.busy:
            self.busy_s += self.last_end_s - self.run_start_s
            self.busy = False


class Simulator:
    """One run: `requests` offered to `instances` through `policy`. Call `run()` once.

    Time advances from event to event. An arrival asks the policy for an instance (with the
    tracker's views at that instant), dispatches, and wakes the instance if idle; a step end
    applies the step (tokens stream to the tracker, finished requests complete) and plans the
    next. With `fast_forward`, a step end that starts a run of pure decode steps schedules only
    the run's last step end, bounded by the next moment anyone observes or changes the instance
    (next arrival, stats tick or window marker), so every observation sees the state stepping
    would have produced.
    """

    def __init__(
        self,
        instances: Sequence[PlannedInstance],
        policy: SchedulingPolicy,
        requests: SimRequests,
        config: SimConfig | None = None,
        tracker: LoadTracker | None = None,
        progress: Callable[[int], None] | None = None,
        admission: AdmissionQueue[int] | None = None,
    ):
        """`admission`: the live router's admission queue (late binding, bounded queue) in front
        of the policy; its policy must be `policy`. None: every request is placed on arrival."""
        if not instances:
            raise ValueError("no instances to simulate")
        self.config = config or SimConfig()
        self.specs = list(instances)
        self.policy = policy
        self.requests = requests
        self.tracker = tracker or LoadTracker(
            ewma_alpha=self.config.ewma_alpha,
            default_output_tokens=self.config.default_output_tokens,
            prefill_weight=self.config.prefill_weight,
            learn_capacity=self.config.learn_capacity,
        )
        self.progress = progress
        self._pending_reports: deque[tuple[float, str, InstanceStats]] = deque()
        self._insts = [_SimInstance(s) for s in self.specs]
        self._index = {s.instance_id: i for i, s in enumerate(self.specs)}
        if len(self._index) != len(self.specs):
            raise ValueError("instance ids must be unique")
        for s in self.specs:
            self.tracker.add_instance(
                s.instance_id,
                s.deployment,
                s.accelerator,
                s.predicted_tokens_per_s,
                s.kv_capacity_tokens,
                max_num_seqs=s.max_num_seqs,
                coeffs=s.coeffs,
            )
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self._deadline_s = INF  # next time anyone observes or changes an instance
        self._next_tick_s = INF
        self._next_marker_s = INF
        self._num_steps = 0
        self._last_step_s = 0.0
        self._stop = False
        self._done = False
        self.admission = admission
        self.num_refused = 0
        if admission is not None:
            if admission.policy is not policy:
                raise ValueError("the admission queue must place requests with the simulated policy")
            for spec in self.specs:
                admission.set_slots(spec.instance_id, spec.max_num_seqs)

    # ---- heap ------------------------------------------------------------------------------
    def _push(self, time_s: float, event) -> None:
        heapq.heappush(self._heap, (time_s, event.priority, next(self._seq), event))

    # ---- instances -------------------------------------------------------------------------
    def _start_next(self, idx: int, now_s: float) -> None:
        """Plan the instance's next step (or decode run) at `now_s`, or mark it idle."""
        inst = self._insts[idx]
        b = inst.batcher
        if b.idle:
            inst.go_idle()
            return
        if not inst.busy:
            inst.busy = True
            inst.run_start_s = now_s
        if self.config.fast_forward:
            limit = b.decode_run_limit()
            if limit >= 1:
                steps, end_s = b.decode_run_span(limit, now_s, self._deadline_s)
                inst.plan = None
                inst.run_steps = steps
                ctx0, num_seqs = b.kv_used_tokens, len(b.running)
                first = b.coeffs.decode_s(num_seqs, ctx0)
                inst.run_ctx0 = (
                    ctx0,
                    first,
                    first if steps == 1 else b.coeffs.decode_s(num_seqs, ctx0 + (steps - 1) * num_seqs),
                )
                self._num_steps += steps
                self._push(end_s, StepEnd(idx))
                return
        plan = b.plan_step()
        if plan is None:  # nothing admissible and nothing running (cannot happen with valid sizes)
            inst.go_idle()
            return
        inst.plan = plan
        inst.run_steps = 1
        self._num_steps += 1
        self._push(now_s + plan.step_s, StepEnd(idx))

    def _on_step_end(self, idx: int, now_s: float) -> None:
        inst = self._insts[idx]
        if inst.plan is None:
            b = inst.batcher
            k, (ctx0, first, last) = inst.run_steps, inst.run_ctx0
            inst.steps.add_decode_run(len(b.running), ctx0, k, first, last)
            res = b.advance_decode(k, now_s)
            per_seq = k
        else:
            p = inst.plan
            inst.steps.add_step(p.num_prefill_tokens, p.num_decode_seqs, p.num_context_tokens, p.step_s)
            res = inst.batcher.complete_step(p, now_s)
            per_seq = 1
        inst.last_end_s = now_s
        self._last_step_s = now_s
        self.tracker.on_tokens_many([seq.request_id for seq in res.emitted], per_seq, now_s)
        inst.output_tokens += per_seq * len(res.emitted)
        if self.config.record_steps:
            inst.step_t.append(now_s)
            inst.step_tokens.append(inst.output_tokens)
        for seq in res.finished:
            self.tracker.on_complete(seq.request_id, now_s)
            self.policy.on_complete(seq.request_id, inst.spec.instance_id, now_s)
        if res.finished and self.admission is not None:
            for seq in res.finished:
                self.admission.on_complete(seq.request_id)
            if len(self.admission):
                self._bind_queued(now_s)
        self._start_next(idx, now_s)

    # ---- admission (late binding) ------------------------------------------------------------
    def _dispatch(self, j: int, request: RequestInfo, iid: str, now_s: float) -> None:
        k = self._index[iid]
        self.tracker.on_dispatch(request, iid, now_s)
        self.policy.on_dispatch(request, iid, now_s)
        seq = Seq(request.request_id, self._prompts[j], self._outputs[j], now_s)
        self._seqs[j] = seq
        self._instance_of[j] = k
        inst = self._insts[k]
        inst.batcher.add(seq)
        if not inst.busy:
            self._start_next(k, now_s)

    def _bind_queued(self, now_s: float) -> None:
        """Bind queued requests to instances that have room (the live router's pump)."""
        assert self.admission is not None
        while True:
            binding = self.admission.next_binding(self.tracker.views(), now_s)
            if binding is None:
                return
            if binding.instance_id is not None:
                self._dispatch(binding.item, binding.request, binding.instance_id, now_s)

    # ---- observers -------------------------------------------------------------------------
    def _on_tick(self, now_s: float) -> None:
        interval = self.config.reconcile_interval_s
        cfg = self.config
        for inst in self._insts:
            b = inst.batcher
            while inst.speed_changes and inst.speed_changes[0][0] <= now_s:
                b.coeffs = b.coeffs.scaled(inst.speed_changes.pop(0)[1])
            dt = now_s - inst.tick_s
            rate = (inst.output_tokens - inst.tick_tokens) / dt if dt > 0 else 0.0
            inst.tick_tokens, inst.tick_s = inst.output_tokens, now_s
            stats = InstanceStats(
                num_running=len(b.running),
                num_waiting=len(b.waiting),
                kv_used_tokens=b.kv_used_tokens,
                kv_capacity_tokens=b.kv_capacity_tokens,
                output_tokens_per_s=rate,
                total_output_tokens=inst.output_tokens,
                steps=inst.steps.totals(),
                request_ids=(
                    tuple(s.request_id for s in b.running) + tuple(s.request_id for s in b.waiting)
                    if cfg.report_request_ids
                    else None
                ),
            )
            self._pending_reports.append((now_s, inst.spec.instance_id, stats))
            if self.config.record_timeline:
                inst.timeline.append(
                    (
                        now_s,
                        inst.output_tokens,
                        inst.busy_until(now_s),
                        len(b.running),
                        len(b.waiting),
                        b.kv_used_tokens,
                    )
                )
        # Deliver the reports that have reached the tracker, dated when the engine took them.
        pending = self._pending_reports
        while pending and pending[0][0] <= now_s - cfg.report_delay_s + 1e-9:
            taken_s, iid, stats = pending.popleft()
            self.tracker.reconcile(iid, stats, taken_s)
        if self._arrivals_left or any(i.busy for i in self._insts):
            self._next_tick_s = now_s + interval
            self._push(self._next_tick_s, Tick())
        else:
            self._next_tick_s = INF

    def _on_marker(self, index: int, now_s: float) -> None:
        for inst in self._insts:
            inst.snap.append((inst.output_tokens, inst.busy_until(now_s)))
        self._next_marker_s = self._window[1] if index == 0 else INF
        if index == 1 and not self.config.drain:
            self._stop = True

    # ---- run -------------------------------------------------------------------------------
    def run(self) -> SimResult:
        if self._done:
            raise RuntimeError("a Simulator runs once; build a new one")
        self._done = True
        reqs = self.requests
        n = len(reqs)
        arrival = reqs.arrival_s.tolist()
        prompts = reqs.num_prompt_tokens.tolist()
        outputs = reqs.num_output_tokens.tolist()
        max_tokens = reqs.max_tokens.tolist()
        instance_of = np.full(n, -1, dtype=np.int64)
        seqs: list[Seq | None] = [None] * n
        self._prompts, self._outputs, self._seqs, self._instance_of = prompts, outputs, seqs, instance_of
        self._window = self.config.window_for(reqs)
        self._push(self._window[0], Marker(0))
        self._push(self._window[1], Marker(1))
        self._next_marker_s = self._window[0]
        start_s = arrival[0] if n else 0.0
        for inst in self._insts:
            inst.tick_s = start_s
        self._next_tick_s = start_s + self.config.reconcile_interval_s
        self._push(self._next_tick_s, Tick())

        heap = self._heap
        pop = heapq.heappop
        tracker, policy, index = self.tracker, self.policy, self._index
        insts = self._insts
        num_events = 0
        i = 0
        self._arrivals_left = n > 0
        now_s = start_s
        progress_every = max(1, n // 200)
        while True:
            next_arrival = arrival[i] if i < n else INF
            if heap and (heap[0][0] < next_arrival or (heap[0][0] == next_arrival and heap[0][1] < ARRIVAL_PRIORITY)):
                now_s, _, _, ev = pop(heap)
                num_events += 1
                self._deadline_s = min(next_arrival, self._next_tick_s, self._next_marker_s)
                if type(ev) is StepEnd:
                    self._on_step_end(ev.instance, now_s)
                elif type(ev) is Tick:
                    self._on_tick(now_s)
                else:
                    self._on_marker(ev.index, now_s)
                    if self._stop:
                        break
                continue
            if i >= n:
                break
            now_s = next_arrival
            num_events += 1
            rid = str(i)
            request = RequestInfo(rid, prompts[i], max_tokens[i], now_s)
            j = i
            i += 1
            self._arrivals_left = i < n
            self._deadline_s = min(arrival[i] if i < n else INF, self._next_tick_s, self._next_marker_s)
            if self.admission is not None:
                try:
                    decision = self.admission.offer(request, j, tracker.views(), now_s)
                except NoInstanceError:
                    continue
                if isinstance(decision, Bound):
                    self._dispatch(j, request, decision.instance_id, now_s)
                elif isinstance(decision, Full):
                    self.num_refused += 1
                continue
            try:
                iid = policy.select(request, tracker.views(), now_s)
            except NoInstanceError:
                continue
            k = index[iid]
            tracker.on_dispatch(request, iid, now_s)
            policy.on_dispatch(request, iid, now_s)
            seq = Seq(rid, prompts[j], outputs[j], now_s)
            seqs[j] = seq
            instance_of[j] = k
            inst = insts[k]
            inst.batcher.add(seq)
            if not inst.busy:
                self._start_next(k, now_s)
            if self.progress is not None and i % progress_every == 0:
                self.progress(i)
        if self.progress is not None:
            self.progress(n)

        first = np.array(
            [s.first_token_s if s is not None and s.first_token_s is not None else math.nan for s in seqs], dtype=float
        )
        finish = np.array(
            [s.finish_s if s is not None and s.finish_s is not None else math.nan for s in seqs], dtype=float
        )
        preempt = np.array([s.num_preemptions if s is not None else 0 for s in seqs], dtype=np.int64)
        snaps = [inst.snap + [(inst.output_tokens, inst.completed_busy_s())] * (2 - len(inst.snap)) for inst in insts]
        return SimResult(
            policy=getattr(policy, "name", type(policy).__name__),
            requests=reqs,
            instances=self.specs,
            window_s=self._window,
            instance_of=instance_of,
            first_token_s=first,
            finish_s=finish,
            num_preemptions=preempt,
            window_output_tokens=np.array([s[1][0] - s[0][0] for s in snaps], dtype=np.int64),
            window_busy_s=np.array([s[1][1] - s[0][1] for s in snaps], dtype=float),
            total_output_tokens=np.array([inst.output_tokens for inst in insts], dtype=np.int64),
            total_busy_s=np.array([inst.completed_busy_s() for inst in insts], dtype=float),
            end_s=max(self._last_step_s, float(arrival[-1]) if n else 0.0),
            num_events=num_events,
            num_steps=self._num_steps,
            timeline=[inst.timeline for inst in insts],
            step_log=[(np.asarray(inst.step_t), np.asarray(inst.step_tokens, dtype=np.int64)) for inst in insts],
        )


def simulate(
    instances: Sequence[PlannedInstance],
    policy: SchedulingPolicy,
    requests: SimRequests,
    config: SimConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run one simulation (a fresh tracker; the policy object is used as given)."""
    return Simulator(instances, policy, requests, config, progress=progress).run()
