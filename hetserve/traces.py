"""Request traces: Azure LLM inference 2023 CSV and Mooncake JSONL, as arrays.

Only arrival times and token counts are kept; prompt text is not in these traces. Plain Python.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from hetserve.config import ConfigError

__all__ = ["ArrivalSpan", "Trace", "load_trace"]


class ArrivalSpan:
    """Size and span of anything holding sorted `arrival_s` (traces, simulator request lists)."""

    arrival_s: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0


@dataclass(frozen=True)
class Trace(ArrivalSpan):
    """Requests sorted by arrival; times in seconds from the first arrival."""

    name: str
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def mean_input_tokens(self) -> float:
        return float(self.input_tokens.mean())

    @property
    def mean_output_tokens(self) -> float:
        return float(self.output_tokens.mean())

    def head(self, num_requests: int) -> Trace:
        return Trace(
            self.name,
            self.arrival_s[:num_requests],
            self.input_tokens[:num_requests],
            self.output_tokens[:num_requests],
        )

    def window(self, duration_s: float) -> Trace:
        n = int(np.searchsorted(self.arrival_s, duration_s, side="right"))
        return self.head(n)


def _azure(path: Path) -> Trace:
    times, ins, outs = [], [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            ts = row["TIMESTAMP"]
            # Seven fractional digits: trim to microseconds for datetime.
            head, _, frac = ts.partition(".")
            times.append(datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}").timestamp())
            ins.append(int(row["ContextTokens"]))
            outs.append(int(row["GeneratedTokens"]))
    return _trace(path.stem, times, ins, outs)


def _mooncake(path: Path) -> Trace:
    times, ins, outs = [], [], []
    with path.open() as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                times.append(rec["timestamp"] / 1000.0)
                ins.append(int(rec["input_length"]))
                outs.append(int(rec["output_length"]))
    return _trace(path.stem, times, ins, outs)


def _trace(name: str, times: list[float], ins: list[int], outs: list[int]) -> Trace:
    """Arrivals relative to the first request (an empty file gives an empty trace, refused by load_trace)."""
    t = np.asarray(times, dtype=float)
    return Trace(name, t - t[0] if len(t) else t, np.asarray(ins, dtype=np.int64), np.asarray(outs, dtype=np.int64))


def load_trace(path: str | Path) -> Trace:
    """Load a trace by its format (`.csv` Azure, `.jsonl` Mooncake); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"trace {p}: no such file")
    try:
        trace = _mooncake(p) if p.suffix == ".jsonl" else _azure(p)
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"trace {p}: unreadable ({type(exc).__name__}: {exc})") from None
    if len(trace) == 0:
        raise ConfigError(f"trace {p}: no requests")
    # Zero-token outputs exist in the Azure traces; a request always yields at least one token.
    return Trace(trace.name, trace.arrival_s, np.maximum(trace.input_tokens, 1), np.maximum(trace.output_tokens, 1))
