"""Per-instance load view (Q, C, KV) for the policies; the simulator and the live router both drive it.

Plain Python: no ray import and no clock (every call gets `now_s`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hetserve.records import DEFAULT_OUTPUT_TOKENS, InstanceStats, LatencyCoeffs, RequestInfo
from hetserve.scheduling.base import DEFAULT_PREFILL_WEIGHT, InstanceView, estimate_work

if TYPE_CHECKING:  # imported lazily: hetserve.config imports this package for the policy names
    from hetserve.model.online_fit import CapacityEstimate, OnlineFit

__all__ = ["LoadTracker"]

# Saturated: requests wait and the batch is at its limit (KV this full, or this many of max_num_seqs).
SATURATED_KV_USAGE = 0.9
SATURATED_BATCH_FRACTION = 0.95
# Measured capacity never falls below this fraction of the plan's seed: one odd window (all
# prefill, a stalled engine) must not make an instance look dead for the next minutes.
MIN_CAPACITY_FRACTION = 0.05
# A flight is only judged lost when a report taken this long after its dispatch lacks it: a
# request sent just before the engine took its report may not have reached the engine yet.
DEFAULT_REPORT_GRACE_S = 1.0
# Ids of requests completed here are remembered this long, so a report taken before their
# completion reached us does not count them as another router's work.
_RECENT_DONE_S = 30.0
# EWMA weight of the request mix C is computed for (per dispatched prompt / completed output):
# slower than the output estimate of Q, because C's sensitivity to a heavy-tailed mean output
# would otherwise make it jitter by tens of percent.
MIX_EWMA_ALPHA = 0.003


@dataclass(slots=True)
class _Flight:
    """One dispatched request: its remaining work is prefill (until the first token) plus the
    estimated output not yet streamed."""

    instance_id: str
    dispatch_s: float
    max_tokens: int
    prefill_work: float
    est_output_tokens: float
    num_streamed: int = 0
    remaining: float = 0.0

    def recompute(self) -> float:
        """Remaining work in output-token equivalents.

        Once a request has streamed past its estimate, the estimate doubles (capped at
        max_tokens): output lengths are heavy-tailed, and a request that has run long is likely
        to run about as long again.
        """
        if self.num_streamed > 0:
            self.prefill_work = 0.0
        while self.num_streamed >= self.est_output_tokens and self.est_output_tokens < self.max_tokens:
            self.est_output_tokens = min(float(self.max_tokens), 2.0 * max(self.est_output_tokens, 1.0))
        self.remaining = self.prefill_work + max(0.0, self.est_output_tokens - self.num_streamed)
        return self.remaining


@dataclass(slots=True)
class _TrackedInstance:
    view: InstanceView
    seed_tokens_per_s: float
    max_num_seqs: int | None = None
    ratio: float | None = None  # learned C / seed; None until a saturated stretch was measured
    tracked_tokens: float = 0.0  # sum of the flights' remaining work
    num_tracked: int = 0
    external_tokens: float = 0.0  # work the engine has that this tracker did not dispatch
    num_external: int = 0
    stretch_start_s: float | None = None  # start of the current saturated stretch
    stretch_tokens: float = 0.0  # output tokens delivered since then
    last_total_tokens: int = 0
    last_rate: float = 0.0
    has_counter: bool = False
    prior: LatencyCoeffs | None = None  # the plan's step-time coefficients (None: saturated-stretch rule)
    fit: OnlineFit | None = None
    estimate: CapacityEstimate | None = None
    # This instance's flights, in dispatch order (the tracker's _flights, indexed by instance): a
    # report is reconciled against its own instance's flights, not a scan of every flight.
    flights: dict[str, _Flight] = field(default_factory=dict)


class LoadTracker:
    """Per-instance load view Q, C, KV for the policies; the simulator and the live router both drive it.

    Q (outstanding work, output-token equivalents): dispatch adds w = prefill_weight*prompt +
    min(max_tokens, EWMA of observed output lengths); the first streamed token removes the prefill
    part, every streamed token one unit of output, completion the rest.

    C (capacity, output tokens/s), when `add_instance` is given the plan's step-time coefficients
    (`coeffs`) and learning is on: every engine report carries the sufficient statistics of the
    engine's steps (duration, prefill tokens, decode sequences, context tokens; `StepTotals`), an
    `OnlineFit` per instance refits the coefficients (forgetting, regularised toward the plan's),
    and C is the throughput model's steady-state output tokens/s of that instance at its saturated
    batch for the request mix this tracker currently observes (EWMAs of prompt lengths at dispatch
    and output lengths at completion). C so follows the instance's measured speed at any load,
    and follows the mix. Until an instance has reported steps, its C is the plan's coefficients
    scaled by its deployment's measured speed (else the median over all).
    `learn_capacity=False` freezes C at the plan's prediction (the ablation).

    Without coefficients (legacy callers) C is seeded from the plan's prediction. An idle instance delivers 0
    tokens/s and must not look slow, and a short window is biased by its phase (prefill bursts
    deliver few output tokens, decode-only stretches many), so C moves only on long saturated
    stretches. A report is saturated when requests wait AND the batch is at its limit: KV usage
    >= 90%, or running >= 95% of max_num_seqs (when add_instance was told it); a request that merely
    arrived during the current step waits too, but the next step admits it. Consecutive saturated
    reports form a stretch; once it spans `capacity_window_s`, the output tokens delivered over it
    (the engine's cumulative counter, or its reported rate integrated when it has no counter)
    divided by its length are blended into C (EWMA, `ewma_alpha`), and a new stretch starts. An
    unsaturated report ends the stretch. Instances not measured yet move with the others: their
    seed is scaled by the ratio learned on their deployment, else the median ratio (see
    `_refresh_capacities`).

    Drift: `reconcile(instance, stats, report_s)` is dated when the engine took the report, which
    may be a stats period before it reaches the tracker. With the engine's request ids (both
    engines send them): a flight dispatched at least `report_grace_s` before the report and absent
    from it has finished on the engine and its completion was lost, so it is forgotten (without
    feeding its partial output into the output-length EWMA); a flight dispatched later is kept
    whatever the report says, so no running request is dropped for a late report. Ids on the
    engine that this tracker neither has in flight nor completed recently are another router's
    work, counted at the mean work per request. Without ids (counts only), the flights dispatched
    before report_s - grace are compared with the engine's running+waiting count, and only the
    excess is forgotten, oldest first: requests dispatched later or completed after the report
    can only make the engine's count look larger, never make a running request look lost.
    KV usage in the view is the engine's last report.
    """

    def __init__(
        self,
        ewma_alpha: float = 0.2,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        prefill_weight: float | None = None,
        output_ewma_alpha: float = 0.05,
        capacity_window_s: float = 10.0,
        learn_capacity: bool = True,
        report_grace_s: float = DEFAULT_REPORT_GRACE_S,
        fit_half_life_s: float | None = None,
    ):
        if not 0.0 < ewma_alpha <= 1.0 or not 0.0 < output_ewma_alpha <= 1.0:
            raise ValueError(f"EWMA weights must lie in (0, 1] (got {ewma_alpha}, {output_ewma_alpha})")
        if capacity_window_s <= 0:
            raise ValueError(f"capacity_window_s must be > 0 (got {capacity_window_s})")
        self.ewma_alpha = ewma_alpha
        self.capacity_window_s = capacity_window_s
        self.output_ewma_alpha = output_ewma_alpha
        self.prefill_weight = DEFAULT_PREFILL_WEIGHT if prefill_weight is None else float(prefill_weight)
        self.mean_output_tokens = float(default_output_tokens)
        self._mean_work = self.prefill_weight * 1024 + self.mean_output_tokens  # refined by dispatches
        self._instances: dict[str, _TrackedInstance] = {}
        self._order: list[_TrackedInstance] = []  # sorted by instance_id
        self._flights: dict[str, _Flight] = {}
        self._last_reconcile_s: dict[str, float] = {}
        self.learn_capacity = learn_capacity
        self.report_grace_s = report_grace_s
        self.fit_half_life_s = fit_half_life_s
        self.mean_prompt_tokens: float | None = None  # EWMA of dispatched prompts (the mix)
        self.mix_output_tokens = float(default_output_tokens)  # EWMA of completed outputs (the mix)
        self._mix_counts = [0, 0]  # prompts, outputs seen: a running mean until 1/n < MIX_EWMA_ALPHA
        # EWMAs of squared lengths, same weights: the mix's spread, which the steady state prices.
        self._mix_sq = [0.0, float(default_output_tokens) ** 2]
        self._recent_done: dict[str, float] = {}
        self._recent_done_order: deque[tuple[float, str]] = deque()
        self.num_forgotten = 0  # flights reconcile judged lost
        self.num_dropped_running = 0  # of those, how many later streamed or completed (a wrong call)
        self._forgotten: set[str] = set()
        # An engine report moved a fit: C, B and the first-token time of every instance are
        # recomputed when next read (`_fresh`), not per report. A tick brings one report per
        # instance, and each recompute prices every instance (the mix is shared), so refreshing
        # per report cost N^2 steady states a tick (112 instances: ~40 s of CPU per emulated
        # minute). The mix of the latest report is kept for it: the same values as before.
        self._stale_mix: tuple[float, float, float, float] | None = None

    # ---- instances -------------------------------------------------------------------------
    def add_instance(
        self,
        instance_id: str,
        deployment: str,
        accelerator: str,
        predicted_tokens_per_s: float,
        kv_capacity_tokens: int,
        max_num_seqs: int | None = None,
        coeffs: LatencyCoeffs | None = None,
    ) -> None:
        """Track a new instance. `coeffs`, the plan's step-time coefficients for it, turn on the
        online fit (see the class docstring). Without them, `max_num_seqs` (the engine's batch
        limit) lets C learn from batch-limited saturation too; else only KV-limited saturation
        counts."""
        if predicted_tokens_per_s <= 0:
            raise ValueError(
                f"instance {instance_id}: predicted_tokens_per_s must be > 0 (got {predicted_tokens_per_s})"
            )
        if instance_id in self._instances:
            raise ValueError(f"instance {instance_id} added twice")
        view = InstanceView(
            instance_id,
            deployment,
            accelerator,
            float(predicted_tokens_per_s),
            int(kv_capacity_tokens),
            predicted_tokens_per_s=float(predicted_tokens_per_s),
            prefill_weight=self.prefill_weight,
            mean_output_tokens=self.mean_output_tokens,
        )
        view.batch_slots = int(max_num_seqs or 0)
        view.max_num_seqs, view.plan_coeffs = int(max_num_seqs or 0), coeffs
        inst = _TrackedInstance(view, float(predicted_tokens_per_s), max_num_seqs, prior=coeffs)
        if coeffs is not None and self.learn_capacity:
            from hetserve.model.online_fit import OnlineFit

            inst.fit = OnlineFit(coeffs) if self.fit_half_life_s is None else OnlineFit(coeffs, self.fit_half_life_s)
        self._instances[instance_id] = inst
        self._order = [self._instances[i] for i in sorted(self._instances)]
        self._refresh_capacities()

    def remove_instance(self, instance_id: str) -> None:
        """Forget the instance and the requests in flight there (the router fails or retries them)."""
        self._order = [self._instances[i] for i in sorted(self._instances) if i != instance_id]
        self._last_reconcile_s.pop(instance_id, None)
        inst = self._instances.pop(instance_id, None)
        for rid in inst.flights if inst is not None else ():
            del self._flights[rid]

    def set_healthy(self, instance_id: str, healthy: bool) -> None:
        self._get(instance_id).view.healthy = healthy

    def views(self) -> list[InstanceView]:
        """One view per instance, sorted by instance_id; the objects are live (do not keep them)."""
        self._fresh()
        out = []
        for inst in self._order:
            v = inst.view
            v.outstanding_tokens = inst.tracked_tokens + inst.external_tokens
            v.num_outstanding = inst.num_tracked + inst.num_external
            v.mean_output_tokens = self.mean_output_tokens
            v.mean_work_tokens = self._mean_work
            out.append(v)
        return out

    def view(self, instance_id: str) -> InstanceView:
        return next(v for v in self.views() if v.instance_id == instance_id)

    # ---- requests --------------------------------------------------------------------------
    def work_estimate(self, request: RequestInfo) -> float:
        """Prefill tokens weighted + estimated output = min(max_tokens, EWMA of observed output lengths)."""
        return estimate_work(request, self.prefill_weight, self.mean_output_tokens)

    def on_dispatch(self, request: RequestInfo, instance_id: str, now_s: float) -> None:
        inst = self._get(instance_id)
        if request.request_id in self._flights:
            raise ValueError(f"request {request.request_id} dispatched twice")
        # A whole number of tokens: streamed tokens then move Q by whole numbers, so Q is exact
        # however the tokens are grouped into on_tokens calls.
        est = float(min(request.max_tokens, max(1, round(self.mean_output_tokens))))
        flight = _Flight(instance_id, now_s, request.max_tokens, self.prefill_weight * request.num_prompt_tokens, est)
        w = flight.recompute()
        self._flights[request.request_id] = flight
        inst.flights[request.request_id] = flight
        inst.tracked_tokens += w
        inst.num_tracked += 1
        self._mean_work += 0.05 * (w - self._mean_work)
        n = float(request.num_prompt_tokens)
        mp = self.mean_prompt_tokens
        self._mix_counts[0] += 1
        alpha = max(MIX_EWMA_ALPHA, 1.0 / self._mix_counts[0])
        self.mean_prompt_tokens = n if mp is None else mp + alpha * (n - mp)
        self._mix_sq[0] += alpha * (n * n - self._mix_sq[0])

    def on_tokens(self, request_id: str, num_tokens: int, now_s: float) -> None:
        """`num_tokens` more output tokens streamed for the request (unknown ids are ignored:
        the request may have been forgotten by `reconcile` or its instance removed)."""
        flight = self._flights.get(request_id)
        if flight is None or num_tokens <= 0:
            if flight is None and request_id in self._forgotten:
                self._forgotten.discard(request_id)
                self.num_dropped_running += 1
            return
        before = flight.remaining
        flight.num_streamed += num_tokens
        inst = self._instances[flight.instance_id]
        inst.tracked_tokens += flight.recompute() - before

    def on_tokens_many(self, request_ids: Iterable[str], num_tokens: int, now_s: float) -> None:
        """`on_tokens(rid, num_tokens, now_s)` for each id (a simulator step streams one token to
        every sequence of a batch); the common case, a request past its prefill and below its
        output estimate, is inlined."""
        flights, instances = self._flights, self._instances
        iid, drop = None, 0  # Q decrements gathered per instance (a batch is usually one instance's)
        for rid in request_ids:
            f = flights.get(rid)
            if f is None:
                if rid in self._forgotten:
                    self._forgotten.discard(rid)
                    self.num_dropped_running += 1
                continue
            before = f.num_streamed
            streamed = before + num_tokens
            if before > 0 and streamed < f.est_output_tokens:
                f.num_streamed = streamed
                f.remaining -= num_tokens
                if f.instance_id != iid:
                    if iid is not None:
                        instances[iid].tracked_tokens -= drop
                    iid, drop = f.instance_id, 0
                drop += num_tokens
            else:
                self.on_tokens(rid, num_tokens, now_s)
        if iid is not None:
            instances[iid].tracked_tokens -= drop

    def on_complete(self, request_id: str, now_s: float) -> None:
        """Finished, aborted or failed: its remaining work leaves Q; a request that streamed output
        updates the EWMA of output lengths."""
        flight = self._drop(request_id)
        if flight is None:
            if request_id in self._forgotten:
                self._forgotten.discard(request_id)
                self.num_dropped_running += 1
            return
        self._recent_done[request_id] = now_s
        self._recent_done_order.append((now_s, request_id))
        if flight.num_streamed > 0:
            self.mean_output_tokens += self.output_ewma_alpha * (flight.num_streamed - self.mean_output_tokens)
            self._mix_counts[1] += 1
            alpha = max(MIX_EWMA_ALPHA, 1.0 / self._mix_counts[1])
            self.mix_output_tokens += alpha * (flight.num_streamed - self.mix_output_tokens)
            self._mix_sq[1] += alpha * (flight.num_streamed**2 - self._mix_sq[1])

    def _drop(self, request_id: str) -> _Flight | None:
        """Remove a flight and its work from Q (no EWMA update: a lost request's partial output
        says nothing about output lengths)."""
        flight = self._flights.pop(request_id, None)
        if flight is None:
            return None
        inst = self._instances.get(flight.instance_id)
        if inst is not None:
            inst.flights.pop(request_id, None)
            inst.tracked_tokens = max(0.0, inst.tracked_tokens - flight.remaining)
            inst.num_tracked -= 1
            if inst.num_tracked == 0:
                inst.tracked_tokens = 0.0  # no float residue on an idle instance
        return flight

    # ---- engine reports --------------------------------------------------------------------
    def reconcile(self, instance_id: str, stats: InstanceStats, now_s: float) -> None:
        """Fold in what the engine measured: KV usage, drift of the in-flight count, and C."""
        inst = self._get(instance_id)
        v = inst.view
        prev_s = self._last_reconcile_s.get(instance_id)
        self._last_reconcile_s[instance_id] = now_s
        v.kv_used_tokens = int(stats.kv_used_tokens)
        v.measured_tokens_per_s = float(stats.output_tokens_per_s)
        v.num_waiting = int(stats.num_waiting)
        if stats.kv_capacity_tokens > 0:
            v.kv_capacity_tokens = int(stats.kv_capacity_tokens)
        if not stats.healthy:
            v.healthy = False

        self._prune_recent(now_s)
        if stats.request_ids is not None:
            self._reconcile_ids(instance_id, inst, stats.request_ids, now_s)
        else:
            self._reconcile_counts(instance_id, inst, stats.num_running + stats.num_waiting, now_s)
        inst.external_tokens = inst.num_external * self._mean_work

        if inst.fit is not None:
            inst.fit.update(stats.steps)
            self._stale_mix = self._mix()
            if self._stale_mix is None:
                self._refresh_capacities()  # no request seen yet: nothing to price, cheap
        elif self.learn_capacity:  # no coefficients: the saturated-stretch rule
            self._update_capacity(inst, stats, now_s, prev_s)

    def _reconcile_ids(
        self, instance_id: str, inst: _TrackedInstance, held_ids: Iterable[str], report_s: float
    ) -> None:
        held = set(held_ids)
        cutoff = report_s - self.report_grace_s
        lost = [rid for rid, f in inst.flights.items() if f.dispatch_s < cutoff and rid not in held]
        for rid in lost:
            self._forget(rid)
        flights, done = self._flights, self._recent_done
        inst.num_external = sum(1 for rid in held if rid not in flights and rid not in done)

    def _reconcile_counts(self, instance_id: str, inst: _TrackedInstance, on_engine: int, report_s: float) -> None:
        cutoff = report_s - self.report_grace_s
        old = sorted((f.dispatch_s, rid) for rid, f in inst.flights.items() if f.dispatch_s < cutoff)
        for _, rid in old[: max(0, len(old) - on_engine)]:
            self._forget(rid)
        inst.num_external = max(0, on_engine - inst.num_tracked)

    def _forget(self, request_id: str) -> None:
        if self._drop(request_id) is not None:
            self.num_forgotten += 1
            if len(self._forgotten) > 100_000:  # bounded: only a diagnostic
                self._forgotten.clear()
            self._forgotten.add(request_id)

    def _prune_recent(self, now_s: float) -> None:
        order, done = self._recent_done_order, self._recent_done
        while order and order[0][0] < now_s - _RECENT_DONE_S:
            _, rid = order.popleft()
            if done.get(rid, now_s) < now_s - _RECENT_DONE_S:
                del done[rid]

    @property
    def mix_cv(self) -> tuple[float, float]:
        """Coefficients of variation of the prompt and output lengths seen (0 before any)."""
        out = []
        for mean, sq in zip((self.mean_prompt_tokens or 0.0, self.mix_output_tokens), self._mix_sq, strict=True):
            out.append(math.sqrt(max(0.0, sq / (mean * mean) - 1.0)) if mean > 0 else 0.0)
        return out[0], out[1]

    def fit_summary(self, instance_id: str) -> dict[str, float | None]:
        """What C rests on, for /v1/hetserve/instances and metrics: fitted coefficients, the
        measured speed vs the plan, step-time error of the fit and of the plan, C's relative
        uncertainty and the mix it was computed for (empty without an online fit)."""
        inst = self._get(instance_id)
        if inst.fit is None:
            return {}
        self._fresh()
        out: dict[str, float | None] = dict(inst.fit.summary())
        est = inst.estimate
        out["capacity_rel_uncertainty"] = est.rel_uncertainty if est is not None else None
        out["capacity_batch_size"] = float(est.batch_size) if est is not None else None
        out["mix_mean_prompt_tokens"] = self.mean_prompt_tokens
        out["mix_mean_output_tokens"] = self.mix_output_tokens
        out["mix_prompt_tokens_cv"], out["mix_output_tokens_cv"] = self.mix_cv
        return out

    def _update_capacity(
        self, inst: _TrackedInstance, stats: InstanceStats, now_s: float, prev_s: float | None
    ) -> None:
        """The saturated-stretch rule of the class docstring."""
        total = int(stats.total_output_tokens)
        inst.has_counter = inst.has_counter or total > 0
        if inst.has_counter:
            delivered = float(total - inst.last_total_tokens)
        elif prev_s is not None:  # no cumulative counter: integrate the reported rate (trapezoid)
            delivered = 0.5 * (inst.last_rate + stats.output_tokens_per_s) * (now_s - prev_s)
        else:
            delivered = 0.0
        inst.last_total_tokens, inst.last_rate = total, float(stats.output_tokens_per_s)
        batch_full = stats.kv_usage >= SATURATED_KV_USAGE or (
            inst.max_num_seqs is not None and stats.num_running >= SATURATED_BATCH_FRACTION * inst.max_num_seqs
        )
        if stats.num_waiting <= 0 or not batch_full:
            inst.stretch_start_s = None
            return
        if inst.stretch_start_s is None:
            inst.stretch_start_s, inst.stretch_tokens = now_s, 0.0
            return
        inst.stretch_tokens += delivered
        span = now_s - inst.stretch_start_s
        if span >= self.capacity_window_s:
            self._fresh()  # `current` as a refresh at each report left it
            measured = max(inst.stretch_tokens / span, MIN_CAPACITY_FRACTION * inst.seed_tokens_per_s)
            current = inst.view.capacity_tokens_per_s
            inst.ratio = (current + self.ewma_alpha * (measured - current)) / inst.seed_tokens_per_s
            inst.stretch_start_s, inst.stretch_tokens = now_s, 0.0
            self._refresh_capacities()

    def _fresh(self) -> None:
        """Recompute the capacities if a report moved a fit since they were last computed, at
        that report's mix: the values recomputing after every report gave (each recompute
        overwrote every instance's, from the fits, the ratios and the mix alone)."""
        if self._stale_mix is not None:
            self._refresh_capacities(self._stale_mix)

    def _refresh_capacities(self, mix: tuple[float, float, float, float] | None = None) -> None:
        """C = seed x ratio. An instance never measured borrows the ratio of its deployment's
        measured instances, else the median over all measured ones: what moved a measured C away
        from its seed is mostly common to all (the live request mix differs from the one the plan
        was priced for, so output tokens/s differ everywhere), and C's that mix learned and seeded
        units would misroute toward the instances not yet measured."""
        self._stale_mix = None
        self._fit_ratios(mix or self._mix())
        by_dep: dict[str, list[float]] = {}
        for inst in self._instances.values():
            if inst.ratio is not None:
                by_dep.setdefault(inst.view.deployment, []).append(inst.ratio)
        everything = sorted(r for rs in by_dep.values() for r in rs)
        fallback = everything[len(everything) // 2] if everything else 1.0
        for inst in self._instances.values():
            if inst.ratio is not None:
                ratio = inst.ratio
            elif inst.view.deployment in by_dep:
                ratio = sum(by_dep[inst.view.deployment]) / len(by_dep[inst.view.deployment])
            else:
                ratio = fallback
            inst.view.capacity_tokens_per_s = inst.seed_tokens_per_s * ratio

    def _mix(self) -> tuple[float, float, float, float] | None:
        """The mix C is priced on: mean prompt and output lengths and their CVs (None before any
        request was seen)."""
        if self.mean_prompt_tokens is None:
            return None
        return (self.mean_prompt_tokens, self.mix_output_tokens, *self.mix_cv)

    def _fit_ratios(self, mix: tuple[float, float, float, float] | None) -> None:
        """For instances with an online fit, once a request was seen: the seed becomes C of the
        plan's coefficients on the current mix and ratio = C(fit) / seed, so that C = C(fit)
        (`inst.estimate`); an instance that has not reported steps yet gets no ratio and borrows
        its deployment's measured speed ratio (see above)."""
        from hetserve.model.online_fit import saturated_capacity_tokens_per_s

        if mix is None:
            return  # no request seen: the plan's prediction is the best view of the mix
        l_in, l_out, cv_in, cv_out = mix
        for inst in self._instances.values():
            if inst.fit is None:
                continue
            cap = inst.view.kv_capacity_tokens
            prior_c, slots = saturated_capacity_tokens_per_s(
                inst.fit.prior, l_in, l_out, cap, inst.max_num_seqs, cv_in, cv_out
            )
            inst.seed_tokens_per_s = max(prior_c, 1e-9)  # the plan's coefficients on this mix
            inst.view.batch_slots = slots
            if inst.fit.num_steps <= 0:
                p = inst.fit.prior
                inst.view.first_token_s = p.prefill_s(l_in) + p.decode_s(slots, slots * (l_in + l_out / 2.0))
                inst.ratio = None
                continue
            inst.estimate = inst.fit.capacity(l_in, l_out, cap, inst.max_num_seqs, cv_in, cv_out)
            c = inst.fit.coeffs
            inst.view.fitted_coeffs = c
            inst.view.first_token_s = c.prefill_s(l_in) + c.decode_s(slots, slots * (l_in + l_out / 2.0))
            tok = max(inst.estimate.tokens_per_s, 1e-9)
            inst.ratio = tok / inst.seed_tokens_per_s

    def _get(self, instance_id: str) -> _TrackedInstance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise KeyError(f"unknown instance {instance_id!r}; known: {', '.join(sorted(self._instances))}") from None
