"""The built-in scheduling policies, registered by name. Plain Python: no ray import, no clock.

`hetero` is hetserve's heterogeneity-aware policy; the others are the baselines it is measured
against. Each class docstring gives its rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from hetserve.records import RequestInfo
from hetserve.scheduling.base import InstanceView, SchedulingPolicy, estimate_work

__all__ = [
    "HeteroPolicy",
    "LeastRequestsPolicy",
    "PowerOfTwoPolicy",
    "RandomPolicy",
    "RoundRobinPolicy",
    "WeightedRoundRobinPolicy",
]

# Scores within this relative distance of the best are ties (float noise, identical idle instances).
_TIE_RTOL = 1e-9


class HeteroPolicy(SchedulingPolicy, name="hetero"):
    """Capacity-normalised least outstanding work, KV-aware.

        score_i = (Q_i + w) / C_i,   w = mean work of a request (view.mean_work_tokens)

    Q_i is instance i's outstanding work and C_i its measured saturated rate (output-token
    equivalents and output tokens/s, see LoadTracker), so (Q_i + w) / C_i is when it would be done
    with one more typical request; the request goes to the lowest score. Idle fast instances win
    over idle slow ones, and under load every instance's queue drains in the same time.
    w is the typical request's work, not this request's: with its own w, long requests would
    always land on fast instances and short ones on slow instances. That sorts the request mix
    by instance (in benchmarks/scheduling.md, paper-mixed / code at saturation, the H100 instances
    then deliver 0.64 of their saturated tokens/s and the L4s 2.4x, on prompts their batches were
    not measured on), which makes C, learned from each instance's own mix, drift apart from what
    it will get next, for no throughput gain (0 to -1% at full load there). Priced as typical
    requests, every instance serves a sample of the same mix. `size_aware=True` restores the
    per-request w.
    KV-aware: `select` drops instances whose cache cannot hold the request, and C_i is the rate
    the instance sustains with its KV cache full, so a KV-limited batch is charged for. Ties
    (identical idle instances) go to the most free KV, then to the seeded generator.
    Batch-slot correction (`slot_aware`, default on; `hetero_noslots` is the ablation): when some
    instance's batch is full (requests in flight >= its saturated batch B_i, `view.batch_slots`),
    the request goes to the lowest expected TTFT, wait_i + first_token_s_i, where an instance with
    a free slot admits at once (wait 0) and a full one after (n_i + 1 - B_i) completions, arriving
    at C_i / mean output per second; ties go to the least (Q + w) / C. Without it a slow
    instance's share of Q stays at its share of C, which at 1.0x load leaves its batch mostly
    empty (it then delivers far less than C) while the fast instances queue: in
    benchmarks/capacity.md it lifts 1.0x throughput from ~0.97 to ~0.99 of the bound and halves
    p99 TTFT there.
    Failure mode: C_i comes from the online fit of the instance's engine steps (see LoadTracker);
    until an instance has reported steps it is the plan's coefficients scaled by its deployment's
    measured speed, so a plan far off misroutes for the first report period or two.
    """

    def __init__(self, seed: int = 0, size_aware: bool = False, slot_aware: bool = True):
        super().__init__(seed)
        self.size_aware = size_aware
        self.slot_aware = slot_aware

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        if (
            self.slot_aware
            and all(v.batch_slots > 0 for v in instances)
            and any(v.num_outstanding >= v.batch_slots for v in instances)
        ):
            # Some batch is full. Expected TTFT: an instance with a free batch slot admits the
            # request at once; a full one after (n + 1 - B) completions, which come C / mean output per second. Plus the
            # instance's own prefill and step. The fastest first token wins; ties (identical
            # instances with free slots) go to the least drain time below.
            ttft = [
                max(0, v.num_outstanding + 1 - v.batch_slots)
                * v.mean_output_tokens
                / max(v.capacity_tokens_per_s, 1e-9)
                + v.first_token_s
                for v in instances
            ]
            best = min(ttft)
            instances = [v for v, t in zip(instances, ttft, strict=True) if t <= best + _TIE_RTOL * abs(best)]
        return self._least_drain_time(request, instances)

    def _least_drain_time(self, request: RequestInfo, instances: Sequence[InstanceView]) -> str:
        scores = []
        for v in instances:
            w = (
                estimate_work(request, v.prefill_weight, v.mean_output_tokens)
                if self.size_aware
                else v.mean_work_tokens
            )
            scores.append((v.outstanding_tokens + w) / max(v.capacity_tokens_per_s, 1e-9))
        best = min(scores)
        tied = [i for i, s in enumerate(scores) if s <= best + _TIE_RTOL * abs(best)]
        if len(tied) > 1:
            most_free = max(instances[i].kv_free_tokens for i in tied)
            tied = [i for i in tied if instances[i].kv_free_tokens == most_free]
        if len(tied) == 1:
            return instances[tied[0]].instance_id
        return instances[tied[int(self.rng.integers(len(tied)))]].instance_id


class HeteroNoSlotsPolicy(HeteroPolicy, name="hetero_noslots"):
    """`hetero` without its batch-slot correction (the ablation): always the least (Q + w) / C."""

    def __init__(self, seed: int = 0):
        super().__init__(seed, slot_aware=False)


class RoundRobinPolicy(SchedulingPolicy, name="round_robin"):
    """The paper's baseline: instances in instance_id order, one request each, cyclically
    (the next eligible id after the previous choice)."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._last: str | None = None

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        ids = sorted(v.instance_id for v in instances)
        nxt = ids[0]
        if self._last is not None:
            for iid in ids:
                if iid > self._last:
                    nxt = iid
                    break
        self._last = nxt
        return nxt


class RandomPolicy(SchedulingPolicy, name="random"):
    """Uniformly random eligible instance (seeded)."""

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        return instances[int(self.rng.integers(len(instances)))].instance_id


class LeastRequestsPolicy(SchedulingPolicy, name="least_requests"):
    """Least outstanding requests: argmin of num_outstanding, ties broken by the seeded generator.
    Blind to speed: a fast and a slow instance with 3 requests each look the same."""

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        return _pick_min(self, instances, [float(v.num_outstanding) for v in instances])


class PowerOfTwoPolicy(SchedulingPolicy, name="pow2"):
    """Power of two choices (Ray Serve's default router): sample two distinct instances with the
    seeded generator and take the one with fewer outstanding requests (the first sampled on a tie)."""

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        if len(instances) == 1:
            return instances[0].instance_id
        i, j = self.rng.choice(len(instances), size=2, replace=False)
        a, b = instances[int(i)], instances[int(j)]
        return b.instance_id if b.num_outstanding < a.num_outstanding else a.instance_id


class WeightedRoundRobinPolicy(SchedulingPolicy, name="weighted_round_robin"):
    """Static throughput-weighted round robin, smooth (nginx) variant.

    Weights are the plan's predicted tokens/s per instance (never the measured C). Each choice adds
    every eligible instance's weight to its running credit, picks the highest credit (first in
    instance_id order on a tie) and takes the eligible total off the winner, so over any window
    instance i gets weight_i / sum(weights) of the requests, spread evenly rather than in bursts.
    """

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._credit: dict[str, float] = {}

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        total = 0.0
        best, best_credit = "", float("-inf")
        for v in sorted(instances, key=lambda x: x.instance_id):
            weight = v.predicted_tokens_per_s or v.capacity_tokens_per_s
            total += weight
            credit = self._credit.get(v.instance_id, 0.0) + weight
            self._credit[v.instance_id] = credit
            if credit > best_credit:
                best, best_credit = v.instance_id, credit
        self._credit[best] -= total
        return best


def _pick_min(policy: SchedulingPolicy, instances: Sequence[InstanceView], scores: list[float]) -> str:
    """The lowest score; near-equal scores are ties drawn with the policy's seeded generator."""
    best = min(scores)
    tied = [i for i, s in enumerate(scores) if s <= best + _TIE_RTOL * abs(best)]
    if len(tied) == 1:
        return instances[tied[0]].instance_id
    return instances[tied[int(policy.rng.integers(len(tied)))]].instance_id
