"""Simulator events: frozen records ordered on the heap by (time_s, priority, seq).

`seq` comes from the simulator's own itertools.count(), so two runs in one process order events
identically. At equal times, step ends come first (tokens produced at t are visible to whoever
looks at t), then window markers and stats ticks (observers), then arrivals (the router decides
on the state at t). Arrivals are not heap events: they are read in order from the request arrays,
which are already sorted, and merged with the heap by the same ordering.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARRIVAL_PRIORITY", "Marker", "StepEnd", "Tick"]


@dataclass(frozen=True, slots=True)
class StepEnd:
    """Instance `instance` finishes its step (or its run of decode steps)."""

    instance: int
    priority = 0


@dataclass(frozen=True, slots=True)
class Marker:
    """Boundary `index` (0: start, 1: end) of the measurement window: snapshot every instance."""

    index: int
    priority = 1


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic stats: every instance reports InstanceStats to the load tracker (reconcile)."""

    priority = 2


ARRIVAL_PRIORITY = 3
