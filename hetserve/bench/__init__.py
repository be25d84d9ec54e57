"""`hetserve bench`: open-loop replay of a trace against the live app, measured with the
simulator's own report code (sim.report), with the simulator's prediction beside it."""

from hetserve.bench.clients import HandleClient, HttpClient, Outcome
from hetserve.bench.replay import ReplayRecord, replay
from hetserve.bench.run import BenchPoint, BenchResult, offered_points, predict, run_bench

__all__ = [
    "BenchPoint",
    "BenchResult",
    "HandleClient",
    "HttpClient",
    "Outcome",
    "ReplayRecord",
    "offered_points",
    "predict",
    "replay",
    "run_bench",
]
