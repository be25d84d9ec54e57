"""`hetero_classes`: route each request class to the accelerator types the class-aware fluid LP
gives it, balancing load within and across types by measured capacity like `hetero`.

A request's class comes from what the router sees before it runs (prompt length, max_tokens;
`ClassTable.classes`). The LP (`model.classes.solve_class_lp`, HiGHS) splits each class over the
deployments in proportions that maximise the total rate in the observed class mix; it is re-solved
every `resolve_every` requests from the mix seen since (an EWMA of class counts) and from the
healthy instances per deployment, so the split follows a drifting mix and lost instances.

Per request of class k: a smooth weighted round robin over the deployments, weighted by the LP's
share of class k, picks a deployment; inside it the instance with the earliest expected finish: the work in flight
that this policy sent there plus this request, each request costing 1/mu[j,k] seconds (its share
of one saturated instance of type j; from the table). Overflow keeps hetero's robustness under
mis-plans and slowdowns: if that finish is later than `overflow` times the earliest anywhere,
the earliest is taken instead. Work sent to an instance slower than the table says stays in
flight longer, so its backlog grows faster than the others' and overflow moves work away (the
measurement is the completions, as for least-outstanding-requests). The tracker's Q and C are
not used for this: Q counts a prompt token as a fixed fraction of an output token and C is
learned from each instance's own mix, so once types serve different classes their Q/C drift
apart by several-fold (measured: a 3000-token-prompt class vs a chat class, ~7x), and a
hetero-score overflow then moves long requests onto small-KV instances. (An earlier version
did that and gave up most of the gain.) At light load every queue is empty and the
overflow rule makes it hetero (idle fast instances first), which is right for latency; the LP
split matters only when every type is busy. Without a table (constructed by name only) it is
hetero. Plain Python, no ray, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hetserve.model.classes import RequestClasses, solve_class_lp
from hetserve.records import RequestInfo
from hetserve.scheduling.base import InstanceView
from hetserve.scheduling.policies import HeteroPolicy

__all__ = ["ClassTable", "HeteroClassesPolicy"]

# Requests between LP re-solves (an LP of ~5 deployments x 12 classes takes ~5 ms with HiGHS).
RESOLVE_EVERY = 500
# A chosen instance whose hetero score is this many times the best anywhere yields to the best.
OVERFLOW = 2.0
# EWMA weight of one request in the observed class mix.
MIX_ALPHA = 1e-3


@dataclass(frozen=True)
class ClassTable:
    """What the policy needs from the plan: the routable classes, and per deployment the saturated
    requests/s of one instance serving each class alone (from the simulator or the throughput model),
    with the class mix to start from."""

    classes: RequestClasses
    deployments: tuple[str, ...]
    requests_per_s: np.ndarray  # [deployment, class], one instance
    proportions: np.ndarray  # initial class mix

    def class_of(self, request: RequestInfo) -> int:
        return self.classes.index(request.num_prompt_tokens, request.max_tokens)


class HeteroClassesPolicy(HeteroPolicy, name="hetero_classes"):
    """Class-aware routing by the fluid LP's shares; hetero within a type and on overflow (module doc)."""

    def __init__(
        self,
        seed: int = 0,
        table: ClassTable | None = None,
        resolve_every: int = RESOLVE_EVERY,
        overflow: float = OVERFLOW,
    ):
        super().__init__(seed)
        self.table = table
        self.resolve_every = resolve_every
        self.overflow = overflow
        # The observed class mix (EWMA of class indicators); empty without a table.
        self._mix: np.ndarray = np.zeros(0) if table is None else np.asarray(table.proportions, dtype=float).copy()
        self._share: np.ndarray | None = None
        self._share_key: tuple[int, ...] | None = None
        self._since = 0
        self._credit: dict[tuple[int, str], float] = {}
        self.num_overflows = 0
        self.num_solves = 0
        self._dep_index: dict[str, int] = {}
        self._dep_of: dict[str, int | None] = {}  # instance_id -> deployment index
        self._cost = np.ones((0, 0))
        self._outstanding: dict[str, float] = {}
        self._flights: dict[str, tuple[str, float]] = {}
        if table is not None:
            self._dep_index = {d: j for j, d in enumerate(table.deployments)}
            # Seconds of one instance's saturated time per request of each class.
            self._cost = 1.0 / np.maximum(np.asarray(table.requests_per_s, dtype=float), 1e-9)

    # ---- LP --------------------------------------------------------------------------------
    def _resolve(self, instances: Sequence[InstanceView]) -> None:
        assert self.table is not None
        counts = np.array([sum(1 for v in instances if v.deployment == d) for d in self.table.deployments], float)
        keep = counts > 0
        self._share = np.zeros_like(self.table.requests_per_s)
        if keep.any():
            mix = np.maximum(self._mix, 1e-9)
            lp = solve_class_lp(self.table.requests_per_s[keep], counts[keep], mix)
            self._share[keep] = lp.share
        self._share_key = tuple(int(c) for c in counts)
        self._since = 0
        self.num_solves += 1

    # ---- choice ----------------------------------------------------------------------------
    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        table = self.table
        if table is None:
            return super().choose(request, instances, now_s)
        k = table.class_of(request)
        self._mix *= 1.0 - MIX_ALPHA
        self._mix[k] += MIX_ALPHA
        self._since += 1
        counts = tuple(sum(1 for v in instances if v.deployment == d) for d in table.deployments)
        if self._share is None or self._since >= self.resolve_every or counts != self._share_key:
            self._resolve(instances)
        # Expected finish on each instance, in the table's seconds: the in-flight work this policy
        # sent there (each request costs 1/mu[j,k] of one instance's saturated time) plus this one.
        # Work sent to an instance slower than the table says stays in flight longer, so its
        # backlog grows faster than the others' and overflow moves work away: measured, without C.
        dep_index = self._dep_index
        cost = self._cost
        finish = []
        for v in instances:
            j = dep_index.get(v.deployment)
            self._dep_of[v.instance_id] = j
            own = float(cost[j, k]) if j is not None else float(np.median(cost[:, k]))
            finish.append(self._outstanding.get(v.instance_id, 0.0) + own)
        best = min(range(len(instances)), key=lambda i: (finish[i], -instances[i].kv_free_tokens, i))
        dep = self._pick_deployment(k, instances)
        if dep is None:
            return instances[best].instance_id
        inside = [i for i, v in enumerate(instances) if v.deployment == dep]
        pick = min(inside, key=lambda i: (finish[i], -instances[i].kv_free_tokens, instances[i].instance_id))
        if finish[pick] > self.overflow * finish[best]:
            self.num_overflows += 1
            return instances[best].instance_id
        return instances[pick].instance_id

    def on_dispatch(self, request: RequestInfo, instance_id: str, now_s: float) -> None:
        if self.table is None:
            return
        j = self._dep_of.get(instance_id)
        k = self.table.class_of(request)
        c = float(self._cost[j, k]) if j is not None else float(np.median(self._cost[:, k]))
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
