"""`hetserve profile`: the sweep's step records, fitted with the online fit's code, give back an
emulated engine's configured coefficients within 5%; the profile file then prices the plan. On
the vLLM CPU tier (marked vllm) it measures the tiny Llama and the planner uses that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hetserve.catalog import default_catalog
from hetserve.cli import main
from hetserve.cluster import load_cluster
from hetserve.model import LatencyModel
from hetserve.planner import search_plan
from hetserve.profiles.sweep import latency_model_with, load_profile_file

CLUSTER = """
name: profile-test
model: {model}
workload: {{mean_input_tokens: 64, mean_output_tokens: 32, max_request_tokens: 256}}
engine: {{max_num_seqs: 4}}
nodes:
  - {{name: n0, accelerator: {accel}, count: 1, overrides: {{tp_degrees: [1]}}}}
"""


@pytest.mark.parametrize("speed", [1.0, 1.7])
def test_profile_of_an_emulated_engine_recovers_its_coefficients(tmp_path: Path, speed: float):
    out = tmp_path / "profiles.json"
    rc = main(
        ["profile", "--model", "llama-3.1-8b", "--accelerator", "L4", "--out", str(out), "--speed-factor", str(speed)]
    )
    assert rc == 0
    (prof,) = load_profile_file(out)
    assert (prof.model, prof.accelerator, prof.tp, prof.engine) == ("llama-3.1-8b", "L4", 1, "emulated")
    cat = default_catalog()
    configured = LatencyModel.default().coeffs(cat.model("llama-3.1-8b"), cat.accelerator("L4"), 1)
    for name in ("a_p", "b_p", "a_d", "c_d", "b_d"):
        assert getattr(prof.coeffs, name) == pytest.approx(speed * getattr(configured, name), rel=0.05), name


def test_plan_uses_the_profile_file(tmp_path: Path, capsys):
    out = tmp_path / "profiles.json"
    assert (
        main(["profile", "--model", "llama-3.1-8b", "--accelerator", "L4", "--out", str(out), "--speed-factor", "2"])
        == 0
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CLUSTER.format(model="llama-3.1-8b", accel="L4"))
    base = search_plan(load_cluster(cfg)).output_tokens_per_s
    profiled = search_plan(load_cluster(cfg), latency_model=latency_model_with(out)).output_tokens_per_s
    assert profiled == pytest.approx(base / 2, rel=0.05)
    capsys.readouterr()
    assert main(["plan", str(cfg), "--profiles", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["deployments"][0]["prediction"]["output_tokens_per_s"] == pytest.approx(profiled, rel=1e-6)


def test_a_bad_profile_file_is_a_clear_error(tmp_path: Path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"profiles": [{"model": "x"}]}')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CLUSTER.format(model="llama-3.1-8b", accel="L4"))
    assert main(["plan", str(cfg), "--profiles", str(bad)]) == 2
    assert "profiles[0]" in capsys.readouterr().err
    assert main(["plan", str(cfg), "--profiles", str(tmp_path / "missing.json")]) == 2


@pytest.mark.vllm
def test_profile_on_the_vllm_cpu_tier_feeds_the_planner(tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("vllm")
    out = tmp_path / "profiles.json"
    rc = main(
        [
            "profile", "--engine", "vllm", "--model", "tiny-llama", "--accelerator", "A100-SXM4-80GB",
            "--vllm-model-path", str(tiny_model_dir), "--max-num-seqs", "4", "--max-model-len", "256",
            "--prompt-tokens", "16,64,160", "--batch-sizes", "1,4", "--output-tokens", "12",
            "--gpu-memory-utilization", "0.1",
            "--vllm-engine-kwargs", json.dumps({"kv_cache_memory_bytes": 32 * 2**20, "enforce_eager": True}),
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    (prof,) = load_profile_file(out)
    assert prof.engine.startswith("vllm-") and prof.num_samples > 20
    assert prof.coeffs.b_d > 0 or prof.coeffs.a_d > 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CLUSTER.format(model="tiny-llama", accel="A100-SXM4-80GB"))
    lm = latency_model_with(out)
    cluster = load_cluster(cfg)
    assert lm.resolve(cluster.model, cluster.catalog.accelerator("A100-SXM4-80GB"), 1).source == "profile"
    plan = search_plan(cluster, latency_model=lm)
    default = search_plan(cluster)
    # A CPU is far slower than the A100 the catalog prices: the profiled plan says so.
    assert plan.output_tokens_per_s < default.output_tokens_per_s
