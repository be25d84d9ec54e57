"""Throughput model: memory fit, least-squares latency model, steady-state throughput. No ray import."""

from hetserve.model.latency import LatencyModel, fit_decode, fit_prefill, roofline_coeffs
from hetserve.model.memory import MemoryFit, memory_fit
from hetserve.model.throughput import Workload, predict_instance

__all__ = [
    "LatencyModel",
    "MemoryFit",
    "Workload",
    "fit_decode",
    "fit_prefill",
    "memory_fit",
    "predict_instance",
    "roofline_coeffs",
]
