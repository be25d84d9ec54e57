"""Prefill/decode step-time models: least-squares fits, roofline priors, and profile lookup.

Lookup order for (model, accelerator, tp), most trusted first:
  1. a profile fitted on samples of this very model, accelerator and TP (measured steps, or steps
     composed from measured vLLM kernels; see hetserve/profiles.py);
  2. a profile of another model on the same accelerator and TP, rescaled by the models' weight and
     KV bytes (decode streams both; prefill FLOPs follow the weights);
  3. the roofline prior from the catalog, with the type's fitted efficiency factors.
On the silicon validation rows (benchmarks/model_accuracy.md) the median TPOT error is ~10% with
the model's own profile, ~15% rescaled from another model and ~20% from the roofline alone.
There is deliberately no "nearest TP" step: the kernel-composed profiles cover TP 1/2/4/8 for every
catalog model that fits, and scaling another TP's profile by devices would drop the all-reduce
cost that the roofline (with the type's fitted factors) keeps. No ray import.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from hetserve.config import DTYPE_BYTES, AcceleratorSpec, ModelSpec
from hetserve.records import LatencyCoeffs, LatencyProfile

if TYPE_CHECKING:
    from hetserve.profiles import StepSamples

__all__ = [
    "LatencyModel",
    "Resolved",
    "fit_decode",
    "fit_efficiency",
    "fit_nonneg",
    "fit_prefill",
    "fit_profile",
    "fit_profiles",
    "kv_read_prior",
    "load_profiles",
    "rescale",
    "roofline_coeffs",
]

# Per all-reduce latency floor (NVLink-class); two all-reduces per layer with TP > 1. vLLM's
# CUDA-graph custom all-reduce takes 4-6 us for decode-sized messages on A100/H100/H200
# (aiconfigurator custom_allreduce_perf.csv); the floor adds the surrounding sync.
ALLREDUCE_LATENCY_S = 8e-6

# When several data sets profile the same (model, accelerator, TP), the newest engine wins:
# hetserve serves with a current vLLM, so vLLM 0.14 kernels beat vLLM 0.4 (Helix) and the
# 2023 Splitwise engine, whose per-step overheads current vLLM no longer has.
ENGINE_PREFERENCE: tuple[str, ...] = ("vllm-0.14", "vllm-0.4", "splitwise")

# 16-bit weights: the roofline's bf16 peaks describe them; FP8 profiles carry GEMM costs (activation
# quantisation, fixed kernel floors) that would bias the per-type efficiency fit.
_HALF_PRECISION = ("bfloat16", "float16")


def fit_nonneg(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    prior: np.ndarray | None = None,
    prior_weight: np.ndarray | None = None,
) -> np.ndarray:
    """THE least-squares fit of step-time coefficients: the planner's profiles (`fit_prefill`,
    `fit_decode`, `fit_efficiency`) and the router's online per-instance fit
    (`hetserve.model.online_fit`) both call it.

    Weighted least squares min sum (w*(x.c - y))^2 with every coefficient >= 0 (a step cannot get
    faster with more work), optionally regularised toward `prior`: one extra row per coefficient
    j with `prior_weight[j] > 0`, sqrt(prior_weight[j]) * (c_j - prior_j) (a ridge centred on the
    prior; weight 0 leaves c_j to the data). Active set: a coefficient that comes out negative is
    pinned to 0 and the rest refitted.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.asarray(w, dtype=float)
    rows, target = x * w[:, None], y * w
    if prior is not None and prior_weight is not None:
        keep = np.asarray(prior_weight, dtype=float) > 0
        root = np.sqrt(np.asarray(prior_weight, dtype=float)[keep])
        rows = np.vstack([rows, np.eye(x.shape[1])[keep] * root[:, None]])
        target = np.concatenate([target, np.asarray(prior, dtype=float)[keep] * root])
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(rows[:, active], target, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0.0
            coef[active] = sol
            return coef
        active.pop(int(np.argmin(sol)))
    return coef


def _lstsq_nonneg(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`fit_nonneg` without a prior (the offline profile fits)."""
    return fit_nonneg(x, y, w)


def _weights(y: np.ndarray, relative: bool) -> np.ndarray:
    # Relative weighting minimises percentage error, the figure we report and the one that matters
    # when a 5 ms decode step and a 2 s prefill share one model.
    return 1.0 / np.maximum(y, 1e-9) if relative else np.ones_like(y)


def fit_prefill(
    num_tokens: ArrayLike,
    times_s: ArrayLike,
    quadratic: bool = False,
    num_seqs: ArrayLike | None = None,
    relative: bool = True,
) -> tuple[float, float, float]:
    """Least squares T_p(N) = a_p*N (+ q_p*sum_i l_i^2) + b_p; returns (a_p, q_p, b_p).

    The quadratic (attention) term grows with each sequence's own length squared: a batch of
    `num_seqs` equal prompts holding N tokens has sum l_i^2 = N^2 / num_seqs (one sequence when
    num_seqs is not given), so q_p means the same thing whatever the batching of the samples.
    Coefficients are kept >= 0.
    """
    n = np.asarray(num_tokens, dtype=float)
    y = np.asarray(times_s, dtype=float)
    seqs = np.ones_like(n) if num_seqs is None else np.asarray(num_seqs, dtype=float)
    cols = [n, n * n / seqs, np.ones_like(n)] if quadratic else [n, np.ones_like(n)]
    sol = _lstsq_nonneg(np.column_stack(cols), y, _weights(y, relative))
    if quadratic:
        return float(sol[0]), float(sol[1]), float(sol[2])
    return float(sol[0]), 0.0, float(sol[1])


def fit_decode(
    num_seqs: ArrayLike,
    num_context_tokens: ArrayLike,
    times_s: ArrayLike,
    relative: bool = True,
    c_d: float | None = None,
) -> tuple[float, float, float]:
    """Least squares T_d(B, S) = a_d*B + c_d*S + b_d; returns (a_d, c_d, b_d), all >= 0.

    Pass `c_d` to hold the context term fixed (a prior) when the samples cannot separate it from
    the per-sequence term, e.g. when every sample has the same context per sequence.
    """
    b = np.asarray(num_seqs, dtype=float)
    s = np.asarray(num_context_tokens, dtype=float)
    y = np.asarray(times_s, dtype=float)
    w = _weights(y, relative)
    if c_d is not None:
        sol = _lstsq_nonneg(np.column_stack([b, np.ones_like(b)]), y - c_d * s, w)
        return float(sol[0]), float(c_d), float(sol[1])
    sol = _lstsq_nonneg(np.column_stack([b, s, np.ones_like(b)]), y, w)
    return float(sol[0]), float(sol[1]), float(sol[2])


def _abs_pct_errors(pred: np.ndarray, actual: np.ndarray) -> np.ndarray:
    return np.abs(pred - actual) / actual


def _holdout_mask(n: int, every: int) -> np.ndarray:
    """Deterministic split: every `every`-th row (1-based) is held out; the rest is fitted."""
    return (np.arange(n) % every) == every - 1


def fit_profile(
    samples: StepSamples, c_d_prior: float | None = None, holdout_every: int = 5
) -> tuple[LatencyProfile, dict[str, np.ndarray]]:
    """Fit one (model, accelerator, TP) and measure its error on held-out rows.

    Every `holdout_every`-th prefill and decode row is held out; the forms are fitted on the rest
    and judged on those rows. The quadratic prefill term is kept only when it lowers the held-out
    error. The shipped coefficients are then refitted on all rows with the chosen form. When every
    decode row has the same context per sequence (Helix), the context term is not identifiable and
    `c_d_prior` (the KV-read roofline) holds it.

    Returns the profile (held-out MAPE as fractions) and the held-out absolute % errors per phase.
    """
    pre_n = np.array([p.num_tokens for p in samples.prefill], dtype=float)
    pre_b = np.array([p.num_seqs for p in samples.prefill], dtype=float)
    pre_y = np.array([p.time_s for p in samples.prefill], dtype=float)
    dec_b = np.array([d.num_seqs for d in samples.decode], dtype=float)
    dec_s = np.array([d.num_context_tokens for d in samples.decode], dtype=float)
    dec_y = np.array([d.time_s for d in samples.decode], dtype=float)

    hold_p = _holdout_mask(len(pre_y), holdout_every)
    hold_d = _holdout_mask(len(dec_y), holdout_every)
    fit_p = ~hold_p

    def prefill_pred(coef: tuple[float, float, float], n: np.ndarray, b: np.ndarray) -> np.ndarray:
        return coef[0] * n + coef[1] * n * n / b + coef[2]

    per_seq_len = pre_n / pre_b
    quad_identifiable = len(pre_y) >= 4 and np.ptp(per_seq_len) > 1e-6 * per_seq_len.mean()
    linear = fit_prefill(pre_n[fit_p], pre_y[fit_p], False, pre_b[fit_p])
    err_lin = _abs_pct_errors(prefill_pred(linear, pre_n[hold_p], pre_b[hold_p]), pre_y[hold_p])
    quadratic = False
    err_p = err_lin
    if quad_identifiable:
        quad = fit_prefill(pre_n[fit_p], pre_y[fit_p], True, pre_b[fit_p])
        err_quad = _abs_pct_errors(prefill_pred(quad, pre_n[hold_p], pre_b[hold_p]), pre_y[hold_p])
        if err_quad.mean() < err_lin.mean():
            quadratic, err_p = True, err_quad
    a_p, q_p, b_p = fit_prefill(pre_n, pre_y, quadratic, pre_b)

    ratio = dec_s / dec_b
    fixed_c = c_d_prior if np.ptp(ratio) <= 1e-6 * ratio.mean() else None
    train = fit_decode(dec_b[~hold_d], dec_s[~hold_d], dec_y[~hold_d], c_d=fixed_c)
    err_d = _abs_pct_errors(train[0] * dec_b[hold_d] + train[1] * dec_s[hold_d] + train[2], dec_y[hold_d])
    a_d, c_d, b_d = fit_decode(dec_b, dec_s, dec_y, c_d=fixed_c)

    profile = LatencyProfile(
        model=samples.model,
        accelerator=samples.accelerator,
        tp=samples.tp,
        coeffs=LatencyCoeffs(a_p=a_p, b_p=b_p, a_d=a_d, c_d=c_d, b_d=b_d, q_p=q_p),
        source=samples.source,
        engine=samples.engine,
        num_samples=len(pre_y) + len(dec_y),
        prefill_mape=float(err_p.mean()) if len(err_p) else None,
        decode_mape=float(err_d.mean()) if len(err_d) else None,
    )
    return profile, {"prefill": err_p, "decode": err_d}


# Fraction of peak bandwidth that decode attention reaches reading the KV cache: 77-91% on
# A100/H100/H200/L40S in the vLLM kernel tables (aiconfigurator README, batch 64, 4k context).
KV_READ_EFFICIENCY = 0.8


def kv_read_prior(model: ModelSpec, accel: AcceleratorSpec, tp: int) -> float:
    """c_d when the data cannot separate it: the KV bytes of one token read at 80% of peak."""
    return model.kv_bytes_per_token / (tp * accel.mem_bw_gbps * 1e9 * KV_READ_EFFICIENCY)


def fit_profiles(
    samples: Iterable[StepSamples],
    models: Mapping[str, ModelSpec],
    accelerators: Mapping[str, AcceleratorSpec],
    holdout_every: int = 5,
) -> list[tuple[LatencyProfile, dict[str, np.ndarray]]]:
    """`fit_profile` over many sample sets, with the KV-read prior of each one's model and type."""
    out = []
    for s in samples:
        prior = kv_read_prior(models[s.model], accelerators[s.accelerator], s.tp)
        out.append(fit_profile(s, c_d_prior=prior, holdout_every=holdout_every))
    return out


def _comm_s(model: ModelSpec, tp: int) -> float:
    return 2 * model.num_layers * ALLREDUCE_LATENCY_S if tp > 1 else 0.0


def _comm_per_token_s(model: ModelSpec, accel: AcceleratorSpec, tp: int) -> float:
    """All-reduce traffic of one token: two all-reduces of hidden bf16 values per layer, of which a
    ring moves 2(t-1)/t per device over the interconnect. Matters on PCIe types (L40S, L4, A10)."""
    if tp <= 1:
        return 0.0
    per_token_bytes = 2 * model.num_layers * model.hidden_size * 2.0 * 2 * (tp - 1) / tp
    return per_token_bytes / (accel.interconnect_gbps * 1e9)


def roofline_coeffs(model: ModelSpec, accel: AcceleratorSpec, tp: int) -> LatencyCoeffs:
    """Roofline prior: decode streams the weights and the KV, prefill is FLOP-bound.

    b_d ~ W/(t*BW*eta_bw) + overhead + all-reduce latency, c_d ~ kv_bytes/(t*BW*eta_bw),
    a_p ~ 2*params/(t*FLOPs*eta_flops) + all-reduce traffic per token,
    q_p ~ 2*layers*heads*head_dim/(t*FLOPs*eta_flops) (causal attention: QK^T and PV, half the
    square), a_d ~ a_p (one token's FLOPs per sequence; an upper bound while decode GEMMs are
    bandwidth-bound). eta are per-type factors fitted from measured data (data/efficiency.json,
    merged into the catalog). Compute is priced at the bf16 peak whatever the weight dtype.
    """
    bw = accel.mem_bw_gbps * 1e9 * accel.eta_bw * tp
    flops = accel.peak_tflops * 1e12 * accel.eta_flops * tp
    overhead = accel.step_overhead_ms / 1e3
    comm = _comm_s(model, tp)
    per_token = 2.0 * model.num_params_b * 1e9 / flops + _comm_per_token_s(model, accel, tp)
    return LatencyCoeffs(
        a_p=per_token,
        b_p=overhead + comm,
        a_d=per_token,
        c_d=model.kv_bytes_per_token / bw,
        b_d=model.weight_bytes / bw + overhead + comm,
        q_p=2.0 * model.num_layers * model.num_heads * model.head_dim / flops,
    )


def rescale(coeffs: LatencyCoeffs, src: ModelSpec, dst: ModelSpec, fixed_s: float = 0.0, tp: int = 1) -> LatencyCoeffs:
    """Carry a profile of `src` over to `dst` on the same accelerator and TP.

    The constants b_d and b_p are a weight stream plus a fixed part: the engine overhead
    `fixed_s` and the per-layer all-reduces at this TP. Only the stream scales with weight bytes
    (on slow-memory types such as L4 a short prefill is weight-bound too); the fixed part scales
    with layers (it is mostly per-layer kernel launches and small kernels: Helix measured it per
    layer, and the composed profiles add it per layer), the all-reduces with layers. a_p and a_d
    scale with weight bytes (FLOPs per token follow the parameters, and FP8 GEMMs run at twice the
    bf16 rate where FP8 halves the bytes), c_d with KV bytes per token, the quadratic attention
    term with layers x heads x head_dim. The identity when src is dst.
    """
    w = dst.weight_bytes / src.weight_bytes
    kv = dst.kv_bytes_per_token / src.kv_bytes_per_token
    att = (dst.num_layers * dst.num_heads * dst.head_dim) / (src.num_layers * src.num_heads * src.head_dim)
    comm_src, comm_dst = _comm_s(src, tp), _comm_s(dst, tp)
    layers = dst.num_layers / src.num_layers

    def constant(value: float) -> float:
        stream = max(0.0, value - fixed_s - comm_src)
        fixed = max(0.0, value - stream - comm_src)
        return fixed * layers + comm_dst + stream * w

    return LatencyCoeffs(
        a_p=coeffs.a_p * w,
        b_p=constant(coeffs.b_p),
        a_d=coeffs.a_d * w,
        c_d=coeffs.c_d * kv,
        b_d=constant(coeffs.b_d),
        q_p=coeffs.q_p * att,
    )


REFERENCE_PROMPT_TOKENS = 2048


def fit_efficiency(
    profiles: Iterable[LatencyProfile],
    models: Mapping[str, ModelSpec],
    accelerators: Mapping[str, AcceleratorSpec],
) -> dict[str, dict[str, float]]:
    """Per accelerator type: eta_bw, eta_flops and step_overhead_ms implied by its fitted profiles.

    Uses the type's single-device profiles of bf16/fp16 models when it has two models or more of
    them, else all its profiles. x = W/(t*BW_peak) is the weight stream at peak bandwidth; across
    the profiles b_d - all-reduce latency = x/eta_bw + overhead (least squares, both >= 0; with a
    single distinct x the overhead is taken as 0 and eta_bw absorbs it). eta_flops is the median
    FLOP rate on a 2048-token prompt (less overhead and all-reduce traffic) over peak. Factors are
    clipped to [0.05, 1].
    """
    by_type: dict[str, list[tuple[ModelSpec, LatencyProfile]]] = {}
    for p in profiles:
        model = models.get(p.model)
        if model is None or p.accelerator not in accelerators or model.dtype not in _HALF_PRECISION:
            continue
        by_type.setdefault(p.accelerator, []).append((model, p))
    out: dict[str, dict[str, float]] = {}
    for name, items in sorted(by_type.items()):
        accel = accelerators[name]
        # Single-device profiles when there are at least two models of them: with TP the
        # all-reduces (latency well above the roofline's floor on PCIe types) blur the split
        # between bandwidth and overhead.
        single = [(m, p) for m, p in items if p.tp == 1]
        if len({m.name for m, _ in single}) >= 2:
            items = single
        x = np.array([m.weight_bytes / (p.tp * accel.mem_bw_gbps * 1e9) for m, p in items])
        y = np.array([p.coeffs.b_d - _comm_s(m, p.tp) for m, p in items])
        if np.ptp(x) > 1e-6 * x.mean():
            slope, overhead = _lstsq_nonneg(np.column_stack([x, np.ones_like(x)]), y, 1.0 / y)
        else:
            slope, overhead = float(np.median(y / x)), 0.0
        eta_bw = 1.0 / slope if slope > 0 else 1.0
        # Prefill compute efficiency: the FLOP rate a profile achieves on a 2048-token prompt, less
        # the type's overhead (the roofline's prefill form: a_p*N + overhead).
        flops = []
        for m, p in items:
            compute_s = p.coeffs.prefill_s(REFERENCE_PROMPT_TOKENS) - overhead
            compute_s -= REFERENCE_PROMPT_TOKENS * _comm_per_token_s(m, accel, p.tp)
            if compute_s > 0:
                work = 2.0 * m.num_params_b * 1e9 * REFERENCE_PROMPT_TOKENS
                flops.append(work / (p.tp * accel.peak_tflops * 1e12 * compute_s))
        out[name] = {
            "eta_bw": float(np.clip(eta_bw, 0.05, 1.0)),
            "eta_flops": float(np.clip(np.median(flops), 0.05, 1.0)) if flops else 0.5,
            "step_overhead_ms": round(float(overhead) * 1e3, 3),
            "num_profiles": len(items),
        }
    return out


@lru_cache(maxsize=1)
def load_profiles() -> tuple[LatencyProfile, ...]:
    """Profiles shipped as package data (data/profiles.json, written by scripts/fit_profiles.py)."""
    try:
        raw = json.loads(resources.files("hetserve.data").joinpath("profiles.json").read_text())
    except FileNotFoundError:
        return ()
    return tuple(LatencyProfile.from_dict(p) for p in raw["profiles"])


def _engine_rank(engine: str) -> int:
    try:
        return ENGINE_PREFERENCE.index(engine)
    except ValueError:
        return len(ENGINE_PREFERENCE)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The coefficients the model answers for one (model, accelerator, TP), and where they came from."""

    coeffs: LatencyCoeffs
    source: str  # "profile", "rescaled from <model>", "roofline"


class LatencyModel:
    """Answers `coeffs(model, accel, tp)` from profiles, rescaled profiles or the roofline.

    When several profiles share (model, accelerator, TP), the one from the preferred engine
    (`ENGINE_PREFERENCE`) is used.
    """

    def __init__(self, profiles: Iterable[LatencyProfile] = (), models: Mapping[str, ModelSpec] | None = None):
        self._exact: dict[tuple[str, str, int], LatencyProfile] = {}
        for p in profiles:
            key = (p.model, p.accelerator, p.tp)
            held = self._exact.get(key)
            if held is None or _engine_rank(p.engine) < _engine_rank(held.engine):
                self._exact[key] = p
        self._by_accel_tp: dict[tuple[str, int], list[LatencyProfile]] = {}
        for p in self._exact.values():
            self._by_accel_tp.setdefault((p.accelerator, p.tp), []).append(p)
        self._models = dict(models or {})

    @classmethod
    def default(cls) -> LatencyModel:
        from hetserve.catalog import default_catalog

        return cls(load_profiles(), default_catalog().models)

    def profile(self, model: str, accelerator: str, tp: int) -> LatencyProfile | None:
        """The profile used for exactly this (model, accelerator, TP), if any."""
        return self._exact.get((model, accelerator, tp))

    def resolve(self, model: ModelSpec, accel: AcceleratorSpec, tp: int) -> Resolved:
        exact = self._exact.get((model.name, accel.name, tp))
        if exact is not None:
            return Resolved(exact.coeffs, "profile")
        # Prefer the profiled model closest in size and of the same weight dtype: rescaling error
        # grows with the size ratio, and FP8 GEMMs carry fixed costs bf16 ones do not.
        best = None
        for p in self._by_accel_tp.get((accel.name, tp), []):
            src = self._models.get(p.model)
            if src is None:
                continue
            same_width = DTYPE_BYTES[src.dtype] == DTYPE_BYTES[model.dtype]
            dist = abs(np.log(model.weight_bytes / src.weight_bytes)) + (0.0 if same_width else 1.0)
            if best is None or dist < best[0]:
                best = (dist, p, src)
        if best is not None:
            _, p, src = best
            coeffs = rescale(p.coeffs, src, model, fixed_s=accel.step_overhead_ms / 1e3, tp=tp)
            return Resolved(coeffs, f"rescaled from {p.model}")
        return Resolved(roofline_coeffs(model, accel, tp), "roofline")

    def coeffs(self, model: ModelSpec, accel: AcceleratorSpec, tp: int) -> LatencyCoeffs:
        return self.resolve(model, accel, tp).coeffs
