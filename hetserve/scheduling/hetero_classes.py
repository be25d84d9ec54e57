"""`hetero_classes`: route each request class to the accelerator types the class-aware fluid LP
gives it, balancing load within and across types by measured capacity like `hetero`.

A request's class comes from what the router sees before it runs (prompt length, max_tokens;
`ClassTable.classes`). The LP (`model.classes.solve_class_lp`, HiGHS) splits each class over the
deployments in proportions that maximise the total rate in the observed class mix.

What the LP is solved on follows the cluster: the observed class mix (an EWMA of class counts),
the healthy instances per deployment, and the measured speeds. The table's per-class rates
mu[j, k] are the plan's; each instance's are those times one measured speed factor: per class,
the throughput model's rate (`model_class_rates`) at the online fit's coefficients over the same
at the plan's (`InstanceView.fitted_coeffs` / `plan_coeffs`, the coefficients the load tracker's
C rests on: one speed estimate, read twice), averaged over the classes by the time the instance
spends on each under the current split. Per class the fit extrapolates: a small-KV instance that
serves short prompts pins its long-prompt rate to +-10-28% only (measured), which would reshuffle
the split on noise; averaged over what it serves, the factor is what its steps measured. A
deployment's rates are the mean over its instances (one not fitted yet takes that mean).
Every `check_every` requests the policy reprices the rates and re-solves; the new split replaces
the current one only past a hysteresis: when it serves `hysteresis` (2%) more than the current
shares would at the new rates and mix (`_shares_rate`), or when the healthy counts changed. The
hysteresis is on the objective, not on the inputs: a few per cent of noise in the factors moves
no split, while a card running 2x slower than its plan moves it at the next check.
`follow_capacity=False` keeps the plan's rates (the ablation).

Per request of class k: a smooth weighted round robin over the deployments, weighted by the LP's
share of class k, picks a deployment; inside it the instance with the earliest expected finish: the work in flight
that this policy sent there plus this request, each request costing 1/mu[i,k] seconds (its share
of one saturated instance; the measured rates above). Overflow keeps hetero's robustness under
mis-plans and slowdowns before the fit has seen them: if that finish is later than `overflow`
times the earliest anywhere, the earliest is taken instead. Work sent to an instance slower than
its rates say stays in flight longer, so its backlog grows faster than the others' and overflow
moves work away (the measurement is the completions, as for least-outstanding-requests). The
tracker's Q and C are not used for this: Q counts a prompt token as a fixed fraction of an output
token and C is learned for the mix as a whole, so once types serve different classes their Q/C
drift apart by several-fold (measured: a 3000-token-prompt class vs a chat class, ~7x), and a
hetero-score overflow then moves long requests onto small-KV instances. (An earlier version did
that and gave up most of the gain.) The per-class rates from the fitted coefficients do not have
that problem: they price each class on its own.

Below saturation (`room_first`): when hetero's pick has a free batch slot (in flight < its
saturated batch), it is taken: the LP split matters only when every type is
busy, and before that it would trade latency for nothing (sending each class by the split at
0.7x doubled p99 TTFT live in stop 15; in the simulator, laptop / azure-conv at 0.7x: 8.7 s
without, 4.2 s with, hetero 6.9 s).

Late binding (the live router's default, `scheduling/admission.py`): a request waits in the
router's queue until a slot frees, and is bound then to the instance that freed it, so the
choice at binding is among one or two instances and the split cannot be made there. It is made
by what the freed instance pulls (`pick_queued`): of the oldest waiting requests, the one whose
class is furthest behind its LP share on that deployment (requests bound under the current split,
`_bound_to` against share x `_bound_of`), the head on ties or when none has a place there (a free
slot is never left idle). `pull=False` binds the head (the ablation: then it is hetero).

Without a table (constructed by name only) it is hetero. Plain Python, no ray, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hetserve.model.classes import RequestClasses, model_class_rates, solve_class_lp
from hetserve.records import LatencyCoeffs, PlanClasses, RequestInfo
from hetserve.scheduling.base import InstanceView
from hetserve.scheduling.policies import HeteroPolicy

__all__ = ["ClassTable", "HeteroClassesPolicy"]

# Requests between checks of the observed mix and the measured rates (a check is a few model
# evaluations per refitted instance; a re-solve, ~5 ms with HiGHS for ~5 deployments x 12 classes).
CHECK_EVERY = 100
# A re-solved split replaces the current one only if it serves this much more (relative) than the
# current shares would at the measured rates and the observed mix: the fit's few per cent of noise
# (larger on classes an instance rarely serves) must not reshuffle the classes every check.
HYSTERESIS = 0.02
# An instance not offered to the policy for this many requests leaves the LP's instance counts.
FORGET_AFTER = 1000
# A chosen instance whose expected finish is this many times the best anywhere yields to the best.
OVERFLOW = 2.0
# Late binding: a deployment serves class k (pulls it past the head) when the LP gives it more
# than this share of the class.
SERVED_SHARE = 0.01
# EWMA weight of one request in the observed class mix.
MIX_ALPHA = 1e-3


@dataclass(frozen=True)
class ClassTable:
    """What the policy needs from the plan: the routable classes, and per deployment the saturated
    requests/s of one instance serving each class alone (from the simulator or the throughput
    model), with the class mix to start from. `class_mean_prompt` / `class_mean_output` (the
    classes' mean lengths) let the policy reprice the rates at the measured speeds; without them
    it keeps the table's rates."""

    classes: RequestClasses
    deployments: tuple[str, ...]
    requests_per_s: np.ndarray  # [deployment, class], one instance
    proportions: np.ndarray  # initial class mix
    class_mean_prompt: np.ndarray | None = None
    class_mean_output: np.ndarray | None = None

    def class_of(self, request: RequestInfo) -> int:
        return self.classes.index(request.num_prompt_tokens, request.max_tokens)

    @classmethod
    def from_plan(cls, pc: PlanClasses) -> ClassTable:
        """The table the plan carries (`Plan.classes`: model-priced rates per deployment)."""
        return cls(
            RequestClasses(pc.prompt_edges, pc.second_edges),
            pc.deployments,
            np.asarray(pc.requests_per_s, dtype=float),
            np.asarray(pc.proportions, dtype=float),
            np.asarray(pc.mean_prompt_tokens, dtype=float),
            np.asarray(pc.mean_output_tokens, dtype=float),
        )


class HeteroClassesPolicy(HeteroPolicy, name="hetero_classes"):
    """Class-aware routing by the fluid LP's shares, re-solved on the observed mix and the measured
    speeds; hetero within a type and on overflow (module doc)."""

    def __init__(
        self,
        seed: int = 0,
        table: ClassTable | None = None,
        check_every: int = CHECK_EVERY,
        overflow: float = OVERFLOW,
        follow_capacity: bool = True,
        hysteresis: float = HYSTERESIS,
        room_first: bool = True,
        pull: bool = True,
    ):
        super().__init__(seed)
        self.room_first = room_first
        self.pull = pull
        self.num_roomy = 0  # requests placed by hetero's rule on an instance with a free slot
        self.num_pulled = 0  # late binding: queued requests picked past the head (pick_queued)
        self._target: tuple[str, str] | None = None  # (request id, deployment) pick_queued chose
        self.table = table
        self.check_every = check_every
        self.overflow = overflow
        self.follow_capacity = follow_capacity and table is not None and table.class_mean_prompt is not None
        self.hysteresis = hysteresis
        # The observed class mix (EWMA of class indicators); empty without a table.
        self._mix: np.ndarray = np.zeros(0) if table is None else np.asarray(table.proportions, dtype=float).copy()
        self._share: np.ndarray | None = None
        self._share_key: tuple[int, ...] | None = None
        self._since = 0
        self._credit: dict[tuple[int, str], float] = {}
        self.num_overflows = 0
        self.num_solves = 0  # LPs solved (one per check)
        self.num_adopted = 0  # splits put in use (the first, and each past the hysteresis)
        self._dep_index: dict[str, int] = {}
        self._dep_of: dict[str, int | None] = {}  # instance_id -> deployment index
        self._mu = np.ones((0, 0))  # the table's rates, [deployment, class]
        # Per instance: the fitted coefficients its speed was last computed from, and that speed
        # per class (measured rate / plan rate); instances never fitted are absent (speed 1).
        self._speed: dict[str, tuple[LatencyCoeffs, np.ndarray]] = {}
        self._cost_of: dict[str, np.ndarray] = {}  # instance_id -> seconds per request of each class
        # The LP's instance counts: every healthy instance offered in the last FORGET_AFTER
        # requests (id -> deployment, request number), and its scalar speed factor once fitted.
        self._known: dict[str, tuple[str, int]] = {}
        self._factor: dict[str, float] = {}
        self._num_requests = 0
        self._outstanding: dict[str, float] = {}
        self._flights: dict[str, tuple[str, float]] = {}
        if table is not None:
            self._dep_index = {d: j for j, d in enumerate(table.deployments)}
            self._mu = np.maximum(np.asarray(table.requests_per_s, dtype=float), 1e-9)
        # Requests of each class bound under the current split, in all and per deployment (pull).
        self._bound_of = np.zeros(self._mu.shape[1])
        self._bound_to = np.zeros_like(self._mu)

    @classmethod
    def build(cls, seed: int = 0, classes: PlanClasses | None = None) -> HeteroClassesPolicy:
        """With the plan's classes, the class-aware policy; without, hetero (module doc)."""
        return cls(seed, ClassTable.from_plan(classes) if classes is not None else None)

    # ---- measured rates --------------------------------------------------------------------
    def _instance_speed(self, v: InstanceView) -> np.ndarray | None:
        """Measured over planned per-class rate of one instance, from the coefficients C rests on
        (None until the online fit has seen its steps). Recomputed only when the fit moved."""
        fit, plan, table = v.fitted_coeffs, v.plan_coeffs, self.table
        if not self.follow_capacity or fit is None or plan is None or table is None:
            return None
        cached = self._speed.get(v.instance_id)
        if cached is not None and cached[0] is fit:
            return cached[1]
        assert table.class_mean_prompt is not None and table.class_mean_output is not None
        seqs = v.max_num_seqs or v.batch_slots or 256
        args = (v.kv_capacity_tokens, seqs, table.class_mean_prompt, table.class_mean_output)
        speed = model_class_rates(fit, *args) / np.maximum(model_class_rates(plan, *args), 1e-12)
        self._speed[v.instance_id] = (fit, speed)
        return speed

    def _measured(self, instances: Sequence[InstanceView]) -> np.ndarray:
        """Per deployment and class, one instance's rate at the measured speeds (the mean factor
        over the deployment's known instances; one not fitted yet takes that mean), and the
        offered instances' seconds per request of each class (`_cost_of`)."""
        weights = self._served_weights()
        for v in instances:
            j = self._dep_index.get(v.deployment)
            per_class = self._instance_speed(v)
            if j is not None and per_class is not None:
                self._factor[v.instance_id] = float(np.dot(weights[j], per_class))
        nd = len(self._mu)
        total, fitted = np.zeros(nd), np.zeros(nd)
        for iid, (dep, _) in self._known.items():
            j = self._dep_index.get(dep)
            f = self._factor.get(iid)
            if j is not None and f is not None:
                total[j] += f
                fitted[j] += 1
        dep_speed = np.where(fitted > 0, total / np.maximum(fitted, 1.0), 1.0)
        median_cost = 1.0 / np.median(self._mu, axis=0)
        for v in instances:
            j = self._dep_index.get(v.deployment)
            if j is None:
                self._cost_of[v.instance_id] = median_cost
            else:
                self._cost_of[v.instance_id] = 1.0 / (self._mu[j] * self._factor.get(v.instance_id, dep_speed[j]))
        return self._mu * dep_speed[:, None]

    def _served_weights(self) -> np.ndarray:
        """Per deployment, the fraction of its time each class takes under the current split (the
        observed mix before the first one): what an instance's measured speed is averaged over."""
        mix = np.maximum(self._mix, 1e-9)
        share = self._share if self._share is not None else np.ones_like(self._mu)
        time = share * mix[None, :] / self._mu
        tot = time.sum(axis=1, keepdims=True)
        return np.where(tot > 0, time / np.maximum(tot, 1e-300), 1.0 / self._mu.shape[1])

    # ---- LP --------------------------------------------------------------------------------
    def _maybe_resolve(self, instances: Sequence[InstanceView]) -> None:
        """Every `check_every` requests: reprice the rates, re-solve, and adopt the new split only
        if it serves `hysteresis` more than the current shares would at the new rates and mix
        (or the healthy counts changed)."""
        assert self.table is not None
        deps = self.table.deployments
        if self._since >= self.check_every:
            old = self._num_requests - FORGET_AFTER
            for iid in [i for i, (_, n) in self._known.items() if n < old]:
                del self._known[iid]
        key = tuple(sum(1 for dep, _ in self._known.values() if dep == d) for d in deps)
        if self._share is not None and self._since < self.check_every and key == self._share_key:
            if any(v.instance_id not in self._cost_of for v in instances):  # a new replica: its cost row
                self._measured(instances)
            return
        self._since = 0
        mu = self._measured(instances)
        counts = np.asarray(key, dtype=float)
        keep = counts > 0
        mix = np.maximum(self._mix, 1e-9)
        mix = mix / mix.sum()
        share = np.zeros_like(self._mu)
        lam = 0.0
        if keep.any():
            lp = solve_class_lp(mu[keep], counts[keep], mix)
            share[keep], lam = lp.share, lp.requests_per_s
            self.num_solves += 1
        if self._share is not None and key == self._share_key:
            if lam <= (1.0 + self.hysteresis) * _shares_rate(self._share, mu, counts, mix):
                return
        self._share, self._share_key = share, key
        self.num_adopted += 1
        self._bound_of[:] = 0.0  # the pull's deficits count from the split in use
        self._bound_to[:] = 0.0

    # ---- choice ----------------------------------------------------------------------------
    def select(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        """Count the healthy instances offered (the LP's counts) before the KV filter narrows them
        to this request's eligible ones: a long request that fits only the big caches must not
        make the split look like the small types were gone. An instance counts until it is seen
        unhealthy or is not offered for FORGET_AFTER requests: the live router's admission queue
        (late binding) offers only the instances with a free slot, and a busy type must not drop
        out of the split for that."""
        self._num_requests += 1
        n, known = self._num_requests, self._known
        for v in instances:
            if v.healthy:
                known[v.instance_id] = (v.deployment, n)
            elif v.instance_id in known:
                del known[v.instance_id]
        return super().select(request, instances, now_s)

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        table = self.table
        if table is None:
            return super().choose(request, instances, now_s)
        k = table.class_of(request)
        self._mix *= 1.0 - MIX_ALPHA
        self._mix[k] += MIX_ALPHA
        self._since += 1
        if not self._known:  # called without select (tests): the offered instances count
            self._known = {v.instance_id: (v.deployment, self._num_requests) for v in instances}
        self._maybe_resolve(instances)
        for v in instances:
            self._dep_of[v.instance_id] = self._dep_index.get(v.deployment)
        target, self._target = self._target, None
        if target is not None and target[0] == request.request_id:
            # Pulled from the queue for this deployment (pick_queued): the earliest finish there.
            there = [v for v in instances if v.deployment == target[1]]
            if there:
                return there[self._earliest(there, self._finish(there, k))].instance_id
        if self.room_first:
            # Not every batch is full: hetero's pick starts at once (the LP split matters only
            # when every type is busy; before that it would trade latency for nothing).
            first = super().choose(request, instances, now_s)
            v0 = next(v for v in instances if v.instance_id == first)
            if 0 < v0.batch_slots and v0.num_outstanding < v0.batch_slots:
                self.num_roomy += 1
                return first
        finish = self._finish(instances, k)
        best = self._earliest(instances, finish)
        dep = self._pick_deployment(k, instances)
        if dep is None:
            return instances[best].instance_id
        inside = [i for i, v in enumerate(instances) if v.deployment == dep]
        pick = min(inside, key=lambda i: (finish[i], -instances[i].kv_free_tokens, instances[i].instance_id))
        if finish[pick] > self.overflow * finish[best]:
            self.num_overflows += 1
            return instances[best].instance_id
        return instances[pick].instance_id

    def _finish(self, instances: Sequence[InstanceView], k: int) -> list[float]:
        """Expected finish on each instance, in the rates' seconds: the in-flight work this policy
        sent there (each request costs 1/mu[i,k] of one instance's saturated time) plus this one.
        Work sent to an instance slower than its rates say stays in flight longer, so its
        backlog grows faster than the others' and overflow moves work away: measured, without C."""
        cost_of, outstanding = self._cost_of, self._outstanding
        return [outstanding.get(v.instance_id, 0.0) + float(cost_of[v.instance_id][k]) for v in instances]

    @staticmethod
    def _earliest(instances: Sequence[InstanceView], finish: Sequence[float]) -> int:
        """Index of the earliest finish (ties: the most free KV, then the first)."""
        return min(range(len(instances)), key=lambda i: (finish[i], -instances[i].kv_free_tokens, i))

    @property
    def pulls_from_queue(self) -> bool:
        return self.pull and self.table is not None

    def pick_queued(self, waiting: Sequence[tuple[RequestInfo, Sequence[InstanceView]]]) -> int:
        """Late binding pulls by class: of the oldest waiting requests, the one whose class is
        furthest behind its LP share on a deployment with room for it (requests bound under the
        current split; the head on ties), bound to that deployment (`choose` reads the target).
        The head when no waiting request has such a place: a free slot is never left idle.
        Under saturation the router's queue, not the arrival, is where the split is made: at
        arrival a request has only the instances with room to choose from."""
        table, share = self.table, self._share
        self._target = None
        if table is None or share is None or not self.pull:
            return 0
        best, best_behind, best_dep = 0, -np.inf, -1
        for i, (r, fits) in enumerate(waiting):
            k = table.class_of(r)
            for j in {self._dep_index.get(v.deployment) for v in fits}:
                if j is None or share[j, k] <= SERVED_SHARE:
                    continue
                b = share[j, k] * self._bound_of[k] - self._bound_to[j, k]
                if b > best_behind + 1e-9:
                    best, best_behind, best_dep = i, b, j
        if best_dep < 0:
            return 0
        self._target = (waiting[best][0].request_id, table.deployments[best_dep])
        if best:
            self.num_pulled += 1
        return best

    def stats(self) -> dict[str, int]:
        """How it decided: LPs solved and splits adopted; requests placed by hetero's rule on a
        free slot, moved off their split by overflow, and pulled past the queue's head."""
        return {
            "lp_solves": self.num_solves,
            "splits_adopted": self.num_adopted,
            "placed_on_free_slot": self.num_roomy,
            "overflows": self.num_overflows,
            "pulled_past_head": self.num_pulled,
        }

    def on_dispatch(self, request: RequestInfo, instance_id: str, now_s: float) -> None:
        if self.table is None:
            return
        row = self._cost_of.get(instance_id)
        k = self.table.class_of(request)
        j = self._dep_of.get(instance_id)
        if j is not None:
            self._bound_of[k] += 1.0
            self._bound_to[j, k] += 1.0
        c = float(row[k]) if row is not None else float(np.median(1.0 / self._mu[:, k]))
        self._flights[request.request_id] = (instance_id, c)
        self._outstanding[instance_id] = self._outstanding.get(instance_id, 0.0) + c

    def on_complete(self, request_id: str, instance_id: str, now_s: float) -> None:
        flight = self._flights.pop(request_id, None)
        if flight is None:
            return
        iid, c = flight
        left = self._outstanding.get(iid, 0.0) - c
        self._outstanding[iid] = left if left > 1e-12 else 0.0

    def _pick_deployment(self, k: int, instances: Sequence[InstanceView]) -> str | None:
        """Smooth weighted round robin over the eligible deployments, weights = LP share of class k."""
        assert self.table is not None and self._share is not None
        present = {v.deployment for v in instances}
        total = 0.0
        best, best_credit = None, float("-inf")
        for j, dep in enumerate(self.table.deployments):
            w = float(self._share[j, k])
            if w <= 0 or dep not in present:
                continue
            total += w
            credit = self._credit.get((k, dep), 0.0) + w
            self._credit[(k, dep)] = credit
            if credit > best_credit:
                best, best_credit = dep, credit
        if best is None:
            return None
        self._credit[(k, best)] -= total
        return best


def _shares_rate(share: np.ndarray, mu: np.ndarray, counts: np.ndarray, mix: np.ndarray) -> float:
    """Total requests/s that routing by `share` (fraction of class k to deployment j) serves in the
    proportions `mix` at the rates `mu` before some deployment saturates: deployment j spends
    sum_k share[j,k] mix_k / mu[j,k] instance-seconds per request of the stream."""
    load = (share * mix[None, :] / np.maximum(mu, 1e-12)).sum(axis=1)
    used = load > 0
    if not used.any():
        return 0.0
    return float(np.min(counts[used] / load[used]))
