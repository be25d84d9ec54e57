"""`hetserve simulate` end to end, in-process: tables, JSON, plot, trace replay and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hetserve.cli import main
from hetserve.commands.simulate import resolve_trace

LAPTOP = str(Path(__file__).resolve().parents[2] / "cluster_configs" / "laptop.yaml")


def test_compares_policies_over_a_load_sweep_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "sim.json", tmp_path / "sim.png"
    rc = main(
        [
            "simulate",
            "--cluster",
            LAPTOP,
            "--num-requests",
            "400",
            "--load",
            "0.5,1.2",
            "--policies",
            "hetero,round_robin",
            "--json-out",
            str(out_json),
            "--plot",
            str(out_png),
            "--no-progress",
            "--per-instance",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "hetero" in text and "round_robin" in text and "TTFT p99" in text
    doc = json.loads(out_json.read_text())
    assert [(r["policy"], r["load"]) for r in doc["runs"]] == [
        ("hetero", 0.5),
        ("round_robin", 0.5),
        ("hetero", 1.2),
        ("round_robin", 1.2),
    ]
    run = doc["runs"][2]
    for key in (
        "output_tokens_per_s",
        "total_tokens_per_s",
        "requests_per_s",
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "goodput_requests_per_s",
        "fraction_of_bound",
        "instances",
        "run_bound",
    ):
        assert key in run
    assert {i["instance_id"] for i in run["instances"]} >= {"A100-SXM4-80GB-tp1/a100-0/0"}
    assert abs(sum(i["token_share"] for i in run["instances"]) - 1.0) < 1e-9
    assert doc["offered_bound"]["requests_per_s"] > 0
    assert out_png.stat().st_size > 10_000 and out_png.read_bytes()[:4] == b"\x89PNG"


def test_replays_a_trace_at_given_rate_scales(capsys):
    try:
        resolve_trace("azure-conv")
    except Exception:
        pytest.skip("shared Azure traces not present")
    rc = main(
        [
            "simulate",
            "--cluster",
            LAPTOP,
            "--trace",
            "azure-conv",
            "--num-requests",
            "300",
            "--repeat",
            "2",
            "--rate-scale",
            "1,4",
            "--policies",
            "pow2",
            "--no-progress",
            "--run-bounds",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "AzureLLMInferenceTrace_conv" in text and "x4" in text and "(600 requests" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--policies", "hetero,nope"], "--policies: unknown scheduling policy 'nope'; known: hetero"),
        (["--load", "0.5,-1"], "--load: every value must be a positive number"),
        (["--rate-scale", "fast"], "--rate-scale: expected comma-separated numbers"),
        (["--trace", "/nonexistent/trace.csv"], "trace /nonexistent/trace.csv: no such file"),
        (["--num-requests", "0"], "--num-requests: must be >= 1"),
        (["--repeat", "0"], "--repeat: must be >= 1"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(capsys, argv, message):
    assert main(["simulate", "--cluster", LAPTOP, "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
