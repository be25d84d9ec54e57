"""Memory fit of one instance (hetserve.model.memory): K(t) = t (u M - W/t - r) / kv_bytes."""

from __future__ import annotations

import pytest

from hetserve.catalog import default_catalog
from hetserve.model.memory import GIB, memory_fit


@pytest.fixture(scope="module")
def catalog():
    return default_catalog()


def test_infeasible_when_weights_do_not_fit(catalog):
    fit = memory_fit(catalog.model("llama-3.1-70b"), catalog.accelerator("L4"), 1, 0.9, 1.5, 4096)
    assert not fit.feasible
    assert fit.kv_capacity_tokens == 0
    assert "GiB per device" in fit.reason and "L4" in fit.reason
    assert fit.weight_gib_per_device == pytest.approx(catalog.model("llama-3.1-70b").weight_bytes / GIB)


def test_kv_capacity_follows_the_formula(catalog):
    model, accel = catalog.model("llama-3.1-8b"), catalog.accelerator("A100-SXM4-80GB")
    for tp in (1, 2, 4):
        fit = memory_fit(model, accel, tp, 0.9, 1.5, 8192)
        per_device = 0.9 * accel.memory_gib * GIB - model.weight_bytes / tp - 1.5 * GIB
        assert fit.feasible
        assert fit.kv_capacity_tokens == int(tp * per_device / model.kv_bytes_per_token)


def test_more_devices_hold_more_kv(catalog):
    model, accel = catalog.model("qwen2.5-32b"), catalog.accelerator("H100-SXM5-80GB")
    caps = [memory_fit(model, accel, tp, 0.9, 1.5, 4096).kv_capacity_tokens for tp in (1, 2, 4, 8)]
    assert caps == sorted(caps) and caps[0] < caps[-1]


def test_heads_must_divide_by_tp(catalog):
    model = catalog.model("llama-1-30b")  # 52 heads
    fit = memory_fit(model, catalog.accelerator("H100-SXM5-80GB"), 8, 0.9, 1.5, 2048)
    assert not fit.feasible
    assert "num_heads=52" in fit.reason and "tp=8" in fit.reason
    assert memory_fit(model, catalog.accelerator("H100-SXM5-80GB"), 4, 0.9, 1.5, 2048).feasible


def test_infeasible_when_one_request_does_not_fit_the_kv_cache(catalog):
    model, accel = catalog.model("llama-2-13b"), catalog.accelerator("L40S")
    cap = memory_fit(model, accel, 1, 0.9, 1.5, 1).kv_capacity_tokens
    assert cap > 0
    assert memory_fit(model, accel, 1, 0.9, 1.5, cap).feasible
    too_long = memory_fit(model, accel, 1, 0.9, 1.5, cap + 1)
    assert not too_long.feasible and str(cap) in too_long.reason


def test_fp8_weights_leave_room_for_more_kv(catalog):
    bf16, fp8 = catalog.model("llama-3.1-70b"), catalog.model("llama-3.1-70b-fp8")
    accel = catalog.accelerator("H100-SXM5-80GB")
    assert not memory_fit(bf16, accel, 1, 0.9, 1.5, 8192).feasible
    assert memory_fit(fp8, accel, 1, 0.9, 1.5, 8192).feasible
    assert (
        memory_fit(fp8, accel, 2, 0.9, 1.5, 8192).kv_capacity_tokens
        > memory_fit(bf16, accel, 2, 0.9, 1.5, 8192).kv_capacity_tokens
    )
