"""Which instances the router may route to: failure detection faster than Serve's health checks.

Serve notices a dead replica at its next health check (seconds) and the router would keep
sending work there meanwhile. This tracks three things per instance, from what the router
itself sees (plain Python, no ray, every call gets `now_s`):

- dead: a call failed with actor death. Out of routing at once, until the replica leaves
  Serve's replica list (Serve's replacement is a new instance id and joins as a new instance).
- stale: no fresh stats report for `report_timeout_s` while other instances' reports keep
  arriving. (When every instance's reports stop together the path that carries them, Serve's
  controller, is what stalled, not the instances, and routing goes on.)
- circuit breaker: `failure_threshold` consecutive failed calls open it; after `open_s` it
  half-opens and lets one probe request through; the probe's success closes it, a failure
  opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BreakerState", "HealthConfig", "InstanceHealth"]


class BreakerState:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    report_timeout_s: float = 1.5
    failure_threshold: int = 3
    open_s: float = 5.0


@dataclass(slots=True)
class _State:
    joined_s: float
    last_report_s: float
    dead: bool = False
    consecutive_failures: int = 0
    opened_s: float | None = None
    probe_in_flight: bool = False


class InstanceHealth:
    """Per-instance dead / stale / breaker state; `routable(iid, now_s)` combines them."""

    def __init__(self, config: HealthConfig | None = None):
        self.config = config or HealthConfig()
        self._states: dict[str, _State] = {}

    def add(self, instance_id: str, now_s: float) -> None:
        self._states.setdefault(instance_id, _State(joined_s=now_s, last_report_s=now_s))

    def remove(self, instance_id: str) -> None:
        self._states.pop(instance_id, None)

    def on_report(self, instance_id: str, now_s: float) -> None:
        st = self._states.get(instance_id)
        if st is not None:
            st.last_report_s = now_s

    def on_dead(self, instance_id: str) -> None:
        st = self._states.get(instance_id)
        if st is not None:
            st.dead = True

    def on_success(self, instance_id: str) -> None:
        st = self._states.get(instance_id)
        if st is not None:
            st.consecutive_failures = 0
            st.opened_s = None
            st.probe_in_flight = False

    def on_failure(self, instance_id: str, now_s: float) -> None:
        st = self._states.get(instance_id)
        if st is None:
            return
        st.consecutive_failures += 1
        half_open_probe = st.opened_s is not None
        st.probe_in_flight = False
        if half_open_probe or st.consecutive_failures >= self.config.failure_threshold:
            st.opened_s = now_s

    def on_bind(self, instance_id: str, now_s: float) -> None:
        """A request was sent there: in half-open state it is the one probe."""
        st = self._states.get(instance_id)
        if st is not None and self.breaker(instance_id, now_s) == BreakerState.HALF_OPEN:
            st.probe_in_flight = True

    def on_abandon(self, instance_id: str) -> None:
        """A request sent there ended without a verdict (client went away)."""
        st = self._states.get(instance_id)
        if st is not None:
            st.probe_in_flight = False

    # ---- queries ---------------------------------------------------------------------------
    def breaker(self, instance_id: str, now_s: float) -> str:
        st = self._states.get(instance_id)
        if st is None or st.opened_s is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now_s - st.opened_s < self.config.open_s else BreakerState.HALF_OPEN

    def is_dead(self, instance_id: str) -> bool:
        st = self._states.get(instance_id)
        return st is not None and st.dead

    def is_stale(self, instance_id: str, now_s: float) -> bool:
        st = self._states.get(instance_id)
        if st is None or now_s - st.last_report_s <= self.config.report_timeout_s:
            return False
        freshest = max(s.last_report_s for s in self._states.values())
        return now_s - freshest <= self.config.report_timeout_s

    def routable(self, instance_id: str, now_s: float) -> bool:
        st = self._states.get(instance_id)
        if st is None:
            return True
        if st.dead or self.is_stale(instance_id, now_s):
            return False
        state = self.breaker(instance_id, now_s)
        if state == BreakerState.OPEN:
            return False
        return not (state == BreakerState.HALF_OPEN and st.probe_in_flight)

    def describe(self, instance_id: str, now_s: float) -> dict[str, object]:
        st = self._states.get(instance_id)
        return {
            "dead": self.is_dead(instance_id),
            "stale": self.is_stale(instance_id, now_s),
            "breaker": self.breaker(instance_id, now_s),
            "consecutive_failures": st.consecutive_failures if st else 0,
            "report_age_s": round(now_s - st.last_report_s, 3) if st else None,
        }
