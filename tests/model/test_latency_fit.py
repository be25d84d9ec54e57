"""Latency fits, rescaling, efficiency factors and the shipped profiles (hetserve.model.latency,
hetserve.profiles). Plain pytest: no ray, milliseconds except the data-set readers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hetserve.catalog import default_catalog
from hetserve.config import ModelSpec
from hetserve.model.latency import (
    LatencyModel,
    fit_decode,
    fit_efficiency,
    fit_prefill,
    fit_profile,
    load_profiles,
    rescale,
    roofline_coeffs,
)
from hetserve.profiles import DecodeSample, PrefillSample, StepSamples, read_helix, read_splitwise
from hetserve.records import LatencyCoeffs, LatencyProfile

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "helix-profiles").is_dir(), reason="../shared/data not present")


def noisy(rng: np.random.Generator, y: np.ndarray, rel: float = 0.01) -> np.ndarray:
    return y * (1.0 + rng.normal(0.0, rel, size=y.shape))


def test_fit_prefill_linear_recovers_coefficients_from_noisy_samples():
    rng = np.random.default_rng(0)
    n = np.linspace(64, 8192, 40)
    a_p, b_p = 30e-6, 4e-3
    got = fit_prefill(n, noisy(rng, a_p * n + b_p))
    assert got[0] == pytest.approx(a_p, rel=0.03)
    assert got[1] == 0.0
    assert got[2] == pytest.approx(b_p, rel=0.05)


def test_fit_prefill_quadratic_recovers_attention_term():
    rng = np.random.default_rng(1)
    n = np.linspace(128, 16384, 60)
    a_p, q_p, b_p = 20e-6, 2e-9, 5e-3
    got = fit_prefill(n, noisy(rng, a_p * n + q_p * n * n + b_p), quadratic=True)
    assert got == pytest.approx((a_p, q_p, b_p), rel=0.06)


def test_fit_prefill_quadratic_term_is_per_sequence():
    """A batch of b prompts of length l costs q_p * b * l^2, not q_p * (b*l)^2: passing num_seqs
    recovers the per-sequence q_p from batched samples."""
    rng = np.random.default_rng(2)
    seq_len = np.array([256, 512, 1024, 2048, 4096] * 6, dtype=float)
    seqs = np.repeat([1, 2, 4, 8, 16, 32], 5).astype(float)
    n = seq_len * seqs
    a_p, q_p, b_p = 25e-6, 3e-9, 2e-3
    y = noisy(rng, a_p * n + q_p * seqs * seq_len**2 + b_p)
    got = fit_prefill(n, y, quadratic=True, num_seqs=seqs)
    assert got == pytest.approx((a_p, q_p, b_p), rel=0.06)


def test_fit_decode_recovers_coefficients_from_noisy_samples():
    rng = np.random.default_rng(3)
    b = np.repeat([1, 4, 16, 64, 128, 256], 6).astype(float)
    s = b * np.tile([128, 512, 1024, 2048, 4096, 8192], 6)
    a_d, c_d, b_d = 40e-6, 50e-9, 12e-3
    got = fit_decode(b, s, noisy(rng, a_d * b + c_d * s + b_d))
    assert got == pytest.approx((a_d, c_d, b_d), rel=0.05)


def test_fit_decode_holds_a_given_context_term():
    """With one context length per sequence, B and S are collinear: a prior c_d is kept as given."""
    b = np.arange(1, 50, dtype=float)
    s = 870.0 * b
    y = 30e-6 * b + 100e-9 * s + 20e-3
    got = fit_decode(b, s, y, c_d=100e-9)
    assert got[1] == 100e-9
    assert got[0] == pytest.approx(30e-6, rel=1e-6)
    assert got[2] == pytest.approx(20e-3, rel=1e-6)


def test_fits_never_return_negative_coefficients():
    """A step cannot get faster with more work: a falling trend is fitted as a flat one."""
    n = np.linspace(100, 1000, 20)
    y = 0.05 - 1e-5 * n
    a_p, q_p, b_p = fit_prefill(n, y, quadratic=True)
    assert min(a_p, q_p, b_p) >= 0.0
    a_d, c_d, b_d = fit_decode(n, n * 10, y)
    assert min(a_d, c_d, b_d) >= 0.0


def _samples(prefill_q: float) -> StepSamples:
    n = np.array([64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384], dtype=float)
    prefill = tuple(PrefillSample(x, 1, 20e-6 * x + prefill_q * x * x + 3e-3) for x in n)
    decode = tuple(
        DecodeSample(b, b * c, 30e-6 * b + 40e-9 * b * c + 8e-3)
        for b in (1, 2, 8, 32, 64, 128)
        for c in (256, 1024, 4096)
    )
    return StepSamples("m", "A", 1, "synthetic", "vllm-0.14", prefill, decode)


def test_fit_profile_keeps_quadratic_term_only_when_it_helps_held_out_rows():
    with_attention, errs = fit_profile(_samples(prefill_q=2e-9))
    assert with_attention.coeffs.q_p == pytest.approx(2e-9, rel=1e-3)
    assert with_attention.prefill_mape < 1e-6 and with_attention.decode_mape < 1e-6
    assert len(errs["prefill"]) == 2 and len(errs["decode"]) == 3  # every 5th row held out
    linear, _ = fit_profile(_samples(prefill_q=0.0))
    assert linear.coeffs.q_p == 0.0
    assert linear.coeffs.a_p == pytest.approx(20e-6, rel=1e-6)


def test_shipped_profiles_load_and_every_profiled_key_resolves_as_profile():
    catalog = default_catalog()
    profiles = load_profiles()
    assert len(profiles) > 50
    latency = LatencyModel.default()
    for p in profiles:
        resolved = latency.resolve(catalog.model(p.model), catalog.accelerator(p.accelerator), p.tp)
        assert resolved.source == "profile", (p.model, p.accelerator, p.tp)
        c = resolved.coeffs
        assert min(c.a_p, c.b_p, c.a_d, c.c_d, c.b_d, c.q_p) >= 0.0
        assert c.decode_s(1, 1000) > 0 and c.prefill_s(1000) > 0


def test_newest_engine_wins_when_data_sets_overlap():
    """Llama-2-70B on H100 TP2 is both measured by splitwise (2023 engine) and composed from
    vLLM 0.14 kernels; the composed one is used."""
    catalog = default_catalog()
    latency = LatencyModel.default()
    used = latency.profile("llama-2-70b", "H100-SXM5-80GB", 2)
    assert used is not None and used.engine == "vllm-0.14"
    splitwise = [
        p
        for p in load_profiles()
        if p.engine == "splitwise" and p.model == "llama-2-70b" and p.accelerator == "H100-SXM5-80GB" and p.tp == 2
    ]
    assert splitwise and splitwise[0].coeffs != used.coeffs
    model, accel = catalog.model("llama-2-70b"), catalog.accelerator("H100-SXM5-80GB")
    assert latency.coeffs(model, accel, 2) == used.coeffs


def test_rescale_is_identity_for_the_same_model():
    catalog = default_catalog()
    model = catalog.model("llama-3.1-70b")
    coeffs = LatencyCoeffs(a_p=80e-6, b_p=15e-3, a_d=30e-6, c_d=50e-9, b_d=25e-3, q_p=4e-9)
    for tp, fixed in ((1, 0.0), (4, 2e-3), (8, 30e-3)):
        got = rescale(coeffs, model, model, fixed_s=fixed, tp=tp)
        for name in ("a_p", "b_p", "a_d", "c_d", "b_d", "q_p"):
            assert getattr(got, name) == pytest.approx(getattr(coeffs, name), rel=1e-12, abs=1e-15)


def test_rescale_scales_the_weight_stream_not_the_overhead():
    catalog = default_catalog()
    big, small = catalog.model("llama-3.1-70b"), catalog.model("llama-3.1-8b")
    coeffs = LatencyCoeffs(a_p=80e-6, b_p=1e-3, a_d=30e-6, c_d=40e-9, b_d=26e-3, q_p=4e-9)
    fixed = 3e-3
    got = rescale(coeffs, big, small, fixed_s=fixed, tp=1)
    w = small.weight_bytes / big.weight_bytes
    expected_b_d = fixed * small.num_layers / big.num_layers + (26e-3 - fixed) * w
    assert got.b_d == pytest.approx(expected_b_d, rel=1e-9)
    assert got.a_p == pytest.approx(80e-6 * w)
    assert got.c_d == pytest.approx(40e-9 * small.kv_bytes_per_token / big.kv_bytes_per_token)


def test_resolve_falls_back_to_rescaling_then_roofline():
    catalog = default_catalog()
    latency = LatencyModel.default()
    custom = ModelSpec(
        name="my-13b", num_layers=40, hidden_size=5120, num_heads=40, num_kv_heads=8, head_dim=128, num_params_b=13.0
    )
    on_h100 = latency.resolve(custom, catalog.accelerator("H100-SXM5-80GB"), 1)
    assert on_h100.source.startswith("rescaled from ")
    on_mi300x = latency.resolve(custom, catalog.accelerator("MI300X"), 1)
    assert on_mi300x.source == "roofline"
    assert on_mi300x.coeffs == roofline_coeffs(custom, catalog.accelerator("MI300X"), 1)


def test_roofline_uses_bandwidth_efficiency_and_tp():
    catalog = default_catalog()
    model = catalog.model("llama-3.1-8b")
    accel = catalog.accelerator("A10")
    one, two = roofline_coeffs(model, accel, 1), roofline_coeffs(model, accel, 2)
    stream_s = model.weight_bytes / (accel.mem_bw_gbps * 1e9 * accel.eta_bw)
    assert one.b_d == pytest.approx(stream_s + accel.step_overhead_ms / 1e3)
    assert two.b_d < one.b_d and two.c_d == pytest.approx(one.c_d / 2)
    slower = accel.model_copy(update={"eta_bw": accel.eta_bw / 2})
    assert roofline_coeffs(model, slower, 1).b_d > one.b_d


def test_fit_efficiency_recovers_eta_and_overhead_from_known_profiles():
    catalog = default_catalog()
    accel = catalog.accelerator("A10")
    profiles = []
    for name in ("llama-2-7b", "llama-2-13b", "llama-3.1-8b"):
        model = catalog.model(name)
        b_d = model.weight_bytes / (accel.mem_bw_gbps * 1e9 * 0.7) + 2e-3
        # a 2048-token prompt at 60% of peak, plus the 2 ms overhead
        a_p = 2 * model.num_params_b * 1e9 / (accel.peak_tflops * 1e12 * 0.6)
        coeffs = LatencyCoeffs(a_p=a_p, b_p=2e-3, a_d=1e-5, c_d=1e-8, b_d=b_d)
        profiles.append(LatencyProfile(name, "A10", 1, coeffs, "synthetic"))
    got = fit_efficiency(profiles, catalog.models, catalog.accelerators)["A10"]
    assert got["eta_bw"] == pytest.approx(0.7, rel=1e-6)
    assert got["step_overhead_ms"] == pytest.approx(2.0, abs=1e-3)
    assert got["eta_flops"] == pytest.approx(0.6, rel=1e-6)


def test_model_and_profiles_do_not_import_ray():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import hetserve.model, hetserve.model.latency, hetserve.profiles\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@needs_data
def test_helix_reader_makes_whole_model_samples():
    samples = {(s.model, s.accelerator, s.tp): s for s in read_helix(DATA)}
    assert ("llama-2-70b", "T4", 4) in samples and ("llama-1-30b", "A100-SXM4-40GB", 1) in samples
    a100 = samples[("llama-2-70b", "A100-SXM4-40GB", 1)]
    # helix raw row: llama2_70b, a100, decode, 2 sequences, 1.4 ms per layer -> x 80 layers
    first = a100.decode[0]
    assert first.num_seqs == 2 and first.time_s == pytest.approx(1.4 * 80 / 1e3)
    assert first.num_context_tokens == pytest.approx(2 * 870)
    assert all(p.num_tokens > 0 for p in a100.prefill)


@needs_data
def test_splitwise_reader_drops_runs_longer_than_their_iterations():
    samples = {(s.model, s.accelerator, s.tp): s for s in read_splitwise(DATA)}
    assert set(samples) >= {("llama-2-70b", "H100-SXM5-80GB", 2), ("bloom-176b", "A100-SXM4-80GB", 8)}
    tp2 = samples[("llama-2-70b", "H100-SXM5-80GB", 2)]
    # batch 64 at TP 2 ran far longer than prompt + tokens x iteration (preemption): dropped
    assert all(d.num_seqs < 64 for d in tp2.decode)
    assert all(p.num_seqs < 64 for p in tp2.prefill)
    tp8 = samples[("llama-2-70b", "H100-SXM5-80GB", 8)]
    assert max(d.num_seqs for d in tp8.decode) == 64


@needs_data
def test_kernel_tables_interpolate_and_drop_outliers():
    from hetserve.profiles import read_kernel_tables

    tables = read_kernel_tables(DATA, "h100_sxm")
    # a grid point comes back as measured (ms in the table, seconds here)
    assert tables.gemm_s(1024, 8192, 8192, "bfloat16") == pytest.approx(0.1513e-3, rel=0.01)
    # H100 bf16 m=2048, n=5120, k=6144 was timed at 0.748 ms, slower than m=4096 (0.314 ms):
    # cleaned to at most twice the m=1024 time
    cleaned = tables.gemm_s(2048, 5120, 6144, "bfloat16")
    assert cleaned <= 2 * tables.gemm_s(1024, 5120, 6144, "bfloat16") * 1.0001
    assert cleaned < 0.4e-3
    # between grid points the time lies between its neighbours
    mid = tables.gemm_s(1536, 8192, 8192, "bfloat16")
    assert tables.gemm_s(1024, 8192, 8192, "bfloat16") < mid < tables.gemm_s(2048, 8192, 8192, "bfloat16")


@needs_data
def test_composed_steps_grow_with_work_and_shrink_with_tp():
    from hetserve.profiles import compose_decode_s, compose_prefill_s, read_kernel_tables

    tables = read_kernel_tables(DATA, "h100_sxm")
    catalog = default_catalog()
    model = catalog.model("llama-3.1-70b")
    steps = [compose_decode_s(model, tables, 4, b, 1024) for b in (1, 16, 64, 256)]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    assert compose_decode_s(model, tables, 4, 32, 8192) > compose_decode_s(model, tables, 4, 32, 512)
    assert compose_decode_s(model, tables, 8, 8, 1024) < compose_decode_s(model, tables, 2, 8, 1024)
    assert compose_prefill_s(model, tables, 4, 1, 4096) > 3 * compose_prefill_s(model, tables, 4, 1, 1024)
    # FP8 weights halve the bytes streamed per decode step
    fp8 = catalog.model("llama-3.1-70b-fp8")
    assert compose_decode_s(fp8, tables, 2, 1, 1024) < 0.8 * compose_decode_s(model, tables, 2, 1, 1024)
