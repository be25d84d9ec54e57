"""Prefill/decode step-time models: least-squares fits, roofline priors, and profile lookup.

Lookup order for (model, accelerator, tp), most trusted first:
  1. a profile fitted on measured samples of this very model, accelerator and TP;
  2. a measured profile of another model on the same accelerator and TP, rescaled by the
     models' per-device weight and KV bytes (the step is memory/compute-bound in those);
  3. the roofline prior from the catalog, with the type's fitted efficiency factors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable, Mapping, Sequence

import numpy as np

from hetserve.config import AcceleratorSpec, ModelSpec
from hetserve.records import LatencyCoeffs, LatencyProfile

__all__ = ["LatencyModel", "fit_decode", "fit_prefill", "roofline_coeffs", "load_profiles"]

# Per all-reduce latency floor (NVLink-class); two all-reduces per layer with TP > 1.
ALLREDUCE_LATENCY_S = 8e-6


def fit_prefill(
    num_tokens: Sequence[float], times_s: Sequence[float], quadratic: bool = False
) -> tuple[float, float, float]:
    """Least squares T_p(N) = a_p*N (+ q_p*N^2) + b_p; returns (a_p, q_p, b_p)."""
    n = np.asarray(num_tokens, dtype=float)
    y = np.asarray(times_s, dtype=float)
    cols = [n, n * n, np.ones_like(n)] if quadratic else [n, np.ones_like(n)]
    sol, *_ = np.linalg.lstsq(np.column_stack(cols), y, rcond=None)
    if quadratic:
        return float(sol[0]), float(sol[1]), float(sol[2])
    return float(sol[0]), 0.0, float(sol[1])


def fit_decode(
    num_seqs: Sequence[float], num_context_tokens: Sequence[float], times_s: Sequence[float]
) -> tuple[float, float, float]:
    """Least squares T_d(B, S) = a_d*B + c_d*S + b_d; returns (a_d, c_d, b_d)."""
    b = np.asarray(num_seqs, dtype=float)
    s = np.asarray(num_context_tokens, dtype=float)
    y = np.asarray(times_s, dtype=float)
    sol, *_ = np.linalg.lstsq(np.column_stack([b, s, np.ones_like(b)]), y, rcond=None)
    return float(sol[0]), float(sol[1]), float(sol[2])


def roofline_coeffs(model: ModelSpec, accel: AcceleratorSpec, tp: int) -> LatencyCoeffs:
    """Roofline prior: decode streams the weights and the KV, prefill is FLOP-bound.

    b_d ~ W/(t*BW*eta_bw), c_d ~ kv_bytes/(t*BW*eta_bw), a_p ~ 2*params/(t*FLOPs*eta_flops)
    (DESIGN.md); eta are per-type factors fitted from measured data (data/efficiency.json).
    """
    bw = accel.mem_bw_gbps * 1e9 * accel.eta_bw * tp
    flops = accel.peak_tflops * 1e12 * accel.eta_flops * tp
    overhead = accel.step_overhead_ms / 1e3
    comm = 2 * model.num_layers * ALLREDUCE_LATENCY_S if tp > 1 else 0.0
    per_token_flops = 2.0 * model.num_params_b * 1e9
    return LatencyCoeffs(
        a_p=per_token_flops / flops,
        b_p=overhead + comm,
        a_d=per_token_flops / flops,
        c_d=model.kv_bytes_per_token / bw,
        b_d=model.weight_bytes / bw + overhead + comm,
    )


def rescale(coeffs: LatencyCoeffs, src: ModelSpec, dst: ModelSpec) -> LatencyCoeffs:
    """Carry a measured profile of `src` over to `dst` on the same accelerator and TP.

    Weight-proportional terms (b_d, a_p, a_d) scale with weight bytes, the context term with
    KV bytes per token; fixed overheads (b_p) stay. The quadratic attention term scales with
    layers x heads x head_dim.
    """
    w = dst.weight_bytes / src.weight_bytes
    kv = dst.kv_bytes_per_token / src.kv_bytes_per_token
    att = (dst.num_layers * dst.num_heads * dst.head_dim) / (src.num_layers * src.num_heads * src.head_dim)
    return LatencyCoeffs(
        a_p=coeffs.a_p * w,
        b_p=coeffs.b_p,
        a_d=coeffs.a_d * w,
        c_d=coeffs.c_d * kv,
        b_d=coeffs.b_d * w,
        q_p=coeffs.q_p * att,
    )


@lru_cache(maxsize=1)
def load_profiles() -> tuple[LatencyProfile, ...]:
    """Profiles shipped as package data (data/profiles.json, written by scripts/fit_profiles.py)."""
    try:
        raw = json.loads(resources.files("hetserve.data").joinpath("profiles.json").read_text())
    except FileNotFoundError:
        return ()
    return tuple(LatencyProfile.from_dict(p) for p in raw["profiles"])


@dataclass(frozen=True)
class Resolved:
    coeffs: LatencyCoeffs
    source: str  # "profile", "rescaled from <model>", "roofline"


class LatencyModel:
    """Answers `coeffs(model, accel, tp)` from measured profiles, rescaled profiles or the roofline."""

    def __init__(self, profiles: Iterable[LatencyProfile] = (), models: Mapping[str, ModelSpec] | None = None):
        self._exact: dict[tuple[str, str, int], LatencyProfile] = {}
        self._by_accel_tp: dict[tuple[str, int], list[LatencyProfile]] = {}
        for p in profiles:
            self._exact[(p.model, p.accelerator, p.tp)] = p
            self._by_accel_tp.setdefault((p.accelerator, p.tp), []).append(p)
        self._models = dict(models or {})

    @classmethod
    def default(cls) -> "LatencyModel":
        from hetserve.catalog import default_catalog

        return cls(load_profiles(), default_catalog().models)

    def resolve(self, model: ModelSpec, accel: AcceleratorSpec, tp: int) -> Resolved:
        exact = self._exact.get((model.name, accel.name, tp))
        if exact is not None:
            return Resolved(exact.coeffs, "profile")
        # Prefer the profiled model closest in size: rescaling error grows with the ratio.
        best = None
        for p in self._by_accel_tp.get((accel.name, tp), []):
            src = self._models.get(p.model)
            if src is None:
                continue
            dist = abs(np.log(model.weight_bytes / src.weight_bytes))
            if best is None or dist < best[0]:
                best = (dist, p, src)
        if best is not None:
            _, p, src = best
            return Resolved(rescale(p.coeffs, src, model), f"rescaled from {p.model}")
        return Resolved(roofline_coeffs(model, accel, tp), "roofline")

    def coeffs(self, model: ModelSpec, accel: AcceleratorSpec, tp: int) -> LatencyCoeffs:
        return self.resolve(model, accel, tp).coeffs
