"""Factories for policy and load-tracker tests: instance views and requests."""

from __future__ import annotations

from hetserve.records import RequestInfo
from hetserve.scheduling import InstanceView


def view(
    instance_id: str,
    capacity: float = 100.0,
    outstanding_tokens: float = 0.0,
    num_outstanding: int = 0,
    kv_capacity_tokens: int = 100_000,
    kv_used_tokens: int = 0,
    predicted: float = 0.0,
    healthy: bool = True,
) -> InstanceView:
    return InstanceView(
        instance_id,
        f"dep-{instance_id}",
        "fake",
        capacity,
        kv_capacity_tokens,
        outstanding_tokens=outstanding_tokens,
        num_outstanding=num_outstanding,
        kv_used_tokens=kv_used_tokens,
        healthy=healthy,
        predicted_tokens_per_s=predicted,
    )


def request(k: int = 0, prompt: int = 100, max_tokens: int = 200) -> RequestInfo:
    return RequestInfo(f"r{k}", prompt, max_tokens, 0.0)
