"""The scheduling-policy interface and its registry by name. No ray import, no clock.

A policy gets the request, a view of every instance and the current time, and returns the id of
the instance that should serve it. The simulator and the live router call the same objects.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hetserve.records import DEFAULT_OUTPUT_TOKENS, LatencyCoeffs, PlanClasses, RequestInfo

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_PREFILL_WEIGHT",
    "InstanceView",
    "NoInstanceError",
    "SchedulingPolicy",
    "estimate_work",
    "make_policy",
    "policy_names",
]

# Cost of one prefill token in decode-token equivalents. A decode step of B sequences costs about
# (a_d*B + c_d*S + b_d) and yields B tokens, a prefill token costs a_p: with the fitted and roofline
# coefficients of 7B-70B models at their planned batch sizes the ratio a_p*B / T_d sits near 0.1-0.3
# on GPUs. Only the relative size of requests depends on it (C and Q share one unit).
DEFAULT_PREFILL_WEIGHT = 0.2


class NoInstanceError(RuntimeError):
    """No healthy instance can take the request (all down, or none whose KV cache holds it)."""


@dataclass(slots=True)
class InstanceView:
    """What a policy may know of one instance (one engine; one Serve replica).

    capacity_tokens_per_s: C, seeded from the plan's prediction, then an EWMA of what the
        instance measurably delivers when saturated (output tokens/s).
    outstanding_tokens: Q, work in flight (prefill + estimated decode tokens not yet done),
        in output-token equivalents (a prompt token counts `prefill_weight`).
    predicted_tokens_per_s: the plan's static prediction (0: unknown, use C); weighted round
        robin uses it so that its weights never move.
    prefill_weight, mean_output_tokens: the units of Q, so that a policy prices a new request
        exactly as the load tracker does (see `estimate_work`).
    mean_work_tokens: the work of a typical request in the same units (recent mean of w).
    measured_tokens_per_s, num_waiting: the engine's own last report (a stats period old).
    batch_slots: the saturated batch (max_num_seqs, or fewer when the KV cache fills first for
        the current mix), as the load tracker's capacity model sizes it.
    first_token_s: time to first token once admitted, from the same (fitted) coefficients.
    plan_coeffs, fitted_coeffs, max_num_seqs: the step-time coefficients C rests on (the plan's,
        and the online fit's once the instance reported steps; None otherwise) and the engine's
        batch limit, so that a policy pricing requests by class (hetero_classes) reads the same
        measured speed as C rather than estimating another.
    """

    instance_id: str
    deployment: str
    accelerator: str
    capacity_tokens_per_s: float
    kv_capacity_tokens: int
    outstanding_tokens: float = 0.0
    num_outstanding: int = 0
    kv_used_tokens: int = 0
    healthy: bool = True
    predicted_tokens_per_s: float = 0.0
    prefill_weight: float = DEFAULT_PREFILL_WEIGHT
    mean_output_tokens: float = DEFAULT_OUTPUT_TOKENS
    mean_work_tokens: float = DEFAULT_PREFILL_WEIGHT * 1024 + DEFAULT_OUTPUT_TOKENS
    measured_tokens_per_s: float = 0.0  # the engine's last reported output tokens/s (its recent window)
    num_waiting: int = 0  # the engine's waiting queue at its last report
    batch_slots: int = 0  # sequences the instance runs at once for the current mix (0: unknown)
    first_token_s: float = 0.0  # prefill of a typical prompt + one full decode step (0: unknown)
    plan_coeffs: LatencyCoeffs | None = None
    fitted_coeffs: LatencyCoeffs | None = None
    max_num_seqs: int = 0  # 0: unknown

    def can_hold(self, request: RequestInfo) -> bool:
        """KV filter: the request's prompt plus its max output must fit in an empty cache (a
        request that outgrows the whole cache would be preempted and restarted forever)."""
        return request.num_prompt_tokens + request.max_tokens <= self.kv_capacity_tokens

    @property
    def kv_free_tokens(self) -> int:
        return max(0, self.kv_capacity_tokens - self.kv_used_tokens)


def estimate_work(request: RequestInfo, prefill_weight: float, mean_output_tokens: float) -> float:
    """Work w of a request in output-token equivalents, without its true output length:
    w = prefill_weight * prompt + min(max_tokens, mean observed output)."""
    return prefill_weight * request.num_prompt_tokens + min(float(request.max_tokens), mean_output_tokens)


class SchedulingPolicy(abc.ABC):
    """Base of every policy. Subclasses register with `class X(SchedulingPolicy, name="x")`.

    A policy never reads a clock (the time is passed in) and draws randomness only from its own
    generator seeded at construction, so the same seed and inputs give the same choices.
    """

    name: ClassVar[str]
    _registry: ClassVar[dict[str, type[SchedulingPolicy]]] = {}

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is None:
            return  # abstract intermediate class
        if name in SchedulingPolicy._registry:
            raise TypeError(f"scheduling policy {name!r} registered twice")
        cls.name = name
        SchedulingPolicy._registry[name] = cls

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    @classmethod
    def build(cls, seed: int = 0, classes: PlanClasses | None = None) -> SchedulingPolicy:
        """The policy for a plan (`make_policy`): `classes` are the plan's request classes, which
        only a class-aware policy reads."""
        return cls(seed=seed)

    def select(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        """Filter healthy instances that can hold the request, then ask the policy."""
        eligible = [v for v in instances if v.healthy and v.can_hold(request)]
        if not eligible:
            raise NoInstanceError(
                f"no healthy instance can hold request {request.request_id} "
                f"({request.num_prompt_tokens} prompt + {request.max_tokens} max tokens; "
                f"{sum(v.healthy for v in instances)}/{len(instances)} healthy)"
            )
        return self.choose(request, eligible, now_s)

    @abc.abstractmethod
    def choose(self, request: RequestInfo, instances: Sequence[InstanceView], now_s: float) -> str:
        """Return the instance_id to serve `request`; `instances` is non-empty and all eligible."""

    @property
    def pulls_from_queue(self) -> bool:
        """Whether `pick_queued` may pick anything but the head: the admission queue builds the
        window of waiting requests and their places only for a policy that says so."""
        return False

    def pick_queued(self, waiting: Sequence[tuple[RequestInfo, Sequence[InstanceView]]]) -> int:
        """Late binding: which of the oldest waiting requests (FIFO order, each with the
        instances that have room for it now, maybe none) to bind next. 0, the head, for every
        policy that treats requests alike; a class-aware one may let a request that the free
        instances serve best pass the head (the queue binds the head when the pick has none)."""
        return 0

    def stats(self) -> dict[str, int]:
        """Counters of the policy's own decisions, for the router's stats (none for most)."""
        return {}

    def on_dispatch(self, request: RequestInfo, instance_id: str, now_s: float) -> None:
        """Called after the request was sent to `instance_id` (a no-op unless the policy keeps state)."""
        return None

    def on_complete(self, request_id: str, instance_id: str, now_s: float) -> None:
        """Called when the request finished or failed on `instance_id` (a no-op unless the policy keeps state)."""
        return None


def policy_names() -> list[str]:
    import hetserve.scheduling.gateway_policies  # noqa: F401  (registers the gateway baselines)
    import hetserve.scheduling.hetero_classes  # noqa: F401  (registers hetero_classes)
    import hetserve.scheduling.policies  # noqa: F401  (registers the built-in policies)

    return sorted(SchedulingPolicy._registry)


def make_policy(name: str, seed: int = 0, classes: PlanClasses | None = None) -> SchedulingPolicy:
    """The policy registered as `name`; `classes`, the plan's request classes (`Plan.classes`),
    give `hetero_classes` its table (without them it is hetero)."""
    names = policy_names()
    if name not in SchedulingPolicy._registry:
        raise ValueError(f"unknown scheduling policy {name!r}; known: {', '.join(names)}")
    return SchedulingPolicy._registry[name].build(seed, classes)
