"""Open-loop replay: send each request of a stream at its arrival time, whatever the earlier ones do.

A closed loop (N clients, each waiting for its previous answer) slows its own arrivals when the
cluster falls behind, so it never shows the queueing a real trace causes; an open loop keeps the
trace's arrival process and lets the backlog build. Times: the stream is in emulated seconds
(as the simulator's); the replay runs them `time_scale` wall seconds per emulated second, and the
record converts back, so live and simulated results share one clock. Plain asyncio, no ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hetserve.bench.clients import BenchClient, InstanceCounter, Outcome
from hetserve.sim.workload import SimRequests

__all__ = ["ReplayRecord", "replay"]


@dataclass
class ReplayRecord:
    """What one replay measured, in emulated seconds from the stream's time 0."""

    requests: SimRequests
    window_s: tuple[float, float]
    sent_s: np.ndarray  # when each request actually left (open-loop lag shows here)
    first_token_s: np.ndarray  # NaN: none
    finish_s: np.ndarray  # NaN: failed
    num_output_tokens: np.ndarray  # as the usage chunk reported
    errors: list[str | None]
    counters_at_window: tuple[list[InstanceCounter], list[InstanceCounter]] = field(default_factory=lambda: ([], []))
    wall_s: float = 0.0

    @property
    def errors_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.errors:
            if e is not None:
                out[e] = out.get(e, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def max_send_lag_s(self) -> float:
        """Worst lateness of a send against its arrival time (the client keeping up, or not)."""
        return float(np.max(self.sent_s - self.requests.arrival_s)) if len(self.requests) else 0.0


async def replay(
    client: BenchClient,
    requests: SimRequests,
    window_s: tuple[float, float],
    time_scale: float = 1.0,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayRecord:
    """Send `requests` open loop; read the instances' token counters at the window's two ends.

    Every request is a task started at `t0 + arrival * time_scale`; the replay returns once all
    have finished (the drain), so latencies cover every request."""
    n = len(requests)
    sent = np.full(n, np.nan)
    outcomes: list[Outcome | None] = [None] * n
    done = 0
    loop_t0 = time.monotonic() + 0.05

    def emulated(wall: float | None) -> float:
        return np.nan if wall is None else (wall - loop_t0) / time_scale

    async def one(i: int) -> None:
        nonlocal done
        sent[i] = emulated(time.monotonic())
        outcomes[i] = await client.send(int(requests.num_prompt_tokens[i]), int(requests.max_tokens[i]))
        done += 1
        if on_progress is not None:
            on_progress(done)

    async def counters_at(t_emulated: float) -> list[InstanceCounter]:
        await asyncio.sleep(max(0.0, loop_t0 + t_emulated * time_scale - time.monotonic()))
        return await client.counters()

    start_c = asyncio.create_task(counters_at(window_s[0]))
    end_c = asyncio.create_task(counters_at(window_s[1]))
    tasks = []
    for i, t in enumerate(requests.arrival_s):
        delay = loop_t0 + float(t) * time_scale - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    counters = (await start_c, await end_c)
    wall = time.monotonic() - loop_t0
    return ReplayRecord(
        requests=requests,
        window_s=window_s,
        sent_s=sent,
        first_token_s=np.array([emulated(o.first_token_s) if o else np.nan for o in outcomes]),
        finish_s=np.array([emulated(o.finish_s) if o and o.error is None else np.nan for o in outcomes]),
        num_output_tokens=np.array([o.num_output_tokens if o else 0 for o in outcomes], dtype=np.int64),
        errors=[o.error if o else "not sent" for o in outcomes],
        counters_at_window=counters,
        wall_s=wall,
    )
