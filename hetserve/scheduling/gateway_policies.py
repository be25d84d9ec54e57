"""Baselines from production LLM gateways, registered by name. Plain Python: no ray import, no clock.

`least_load` is the SGLang model gateway's published load rule; `llmd` an llm-d-style weighted
scorer (queue + KV utilisation). Both see what those gateways see: counts and tokens in flight,
the engines' reported throughput and KV use; neither knows the plan or a fitted capacity.
"""

from __future__ import annotations

from collections.abc import Sequence

from hetserve.records import RequestInfo
from hetserve.scheduling.base import InstanceView, SchedulingPolicy
from hetserve.scheduling.policies import _pick_min

__all__ = ["LeastLoadPolicy", "LlmdScorerPolicy"]

# SGLang gateway's KV-pressure penalty, seconds at k -> 0.5 (0.15 * k / (1 - k)).
KV_PENALTY_S = 0.15
# Highest KV use priced (k / (1 - k) diverges at 1).
_MAX_KV = 0.99


def _kv_use(v: InstanceView) -> float:
    return min(_MAX_KV, v.kv_used_tokens / v.kv_capacity_tokens) if v.kv_capacity_tokens else 0.0


class LeastLoadPolicy(SchedulingPolicy, name="least_load"):
    """SGLang model gateway's rule: the lowest expected wait,

        score_i = (queued + in-flight tokens)_i / live throughput_i + 0.15 s * k_i / (1 - k_i)

    with k_i the instance's KV use. Tokens in flight are the tracker's Q_i (prefill and
    estimated output not yet streamed); live throughput is the engine's reported output tokens/s
    over its recent window, or the plan's prediction while it has delivered nothing (an idle
    instance reports 0 and would otherwise look infinitely slow). Unlike `hetero` it divides by
    what the instance delivers *now*, which is low when it is lightly loaded.
    """

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        scores = []
        for v in instances:
            rate = v.measured_tokens_per_s if v.measured_tokens_per_s > 0 else v.predicted_tokens_per_s
            k = _kv_use(v)
            scores.append(v.outstanding_tokens / max(rate, 1e-9) + KV_PENALTY_S * k / (1.0 - k))
        return _pick_min(self, instances, scores)


class LlmdScorerPolicy(SchedulingPolicy, name="llmd"):
    """llm-d-style scorer: each instance gets a weighted sum of per-scorer scores in [0, 1] and
    the highest wins (ties by the seeded generator):

        queue scorer:  (max_q - q_i) / (max_q - min_q), q = requests in flight (1 when all equal)
        KV scorer:     1 - KV use
        score_i = QUEUE_WEIGHT * queue_i + KV_WEIGHT * kv_i

    llm-d's queue scorer reads the engines' waiting queues; here the router's own in-flight
    count stands in (fresher than a stats period). No prefix-cache scorer: the emulated engines
    have no prefix cache.
    """

    QUEUE_WEIGHT = 1.0
    KV_WEIGHT = 1.0

    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        qs = [float(v.num_outstanding) for v in instances]
        lo, hi = min(qs), max(qs)
        scores = []
        for v, q in zip(instances, qs, strict=True):
            queue = 1.0 if hi == lo else (hi - q) / (hi - lo)
            scores.append(-(self.QUEUE_WEIGHT * queue + self.KV_WEIGHT * (1.0 - _kv_use(v))))
        return _pick_min(self, instances, scores)
