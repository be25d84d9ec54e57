"""Every bad cluster config is refused with a message naming the field, in Python and on the CLI."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import pytest
import yaml

from hetserve.cli import main
from hetserve.cluster import load_cluster
from hetserve.config import ConfigError

BASE = {
    "name": "bad",
    "model": "llama-3.1-8b",
    "workload": {"mean_input_tokens": 512, "mean_output_tokens": 128},
    "engine": {"max_num_seqs": 64},
    "nodes": [
        {"name": "a100-0", "accelerator": "A100-SXM4-80GB", "count": 1},
        {"name": "l4-0", "accelerator": "L4", "count": 2},
    ],
}


def mutated(change: Callable[[dict], None]) -> dict:
    data = copy.deepcopy(BASE)
    change(data)
    return data


# (case id, config as a mapping or raw text, fragment the message must contain)
CASES: list[tuple[str, dict | str, str]] = [
    ("unknown key", mutated(lambda d: d["nodes"][0].update(colour="red")), "line 7: nodes[0].colour: Extra inputs"),
    ("unknown top-level key", mutated(lambda d: d.update(replicas=3)), "replicas: Extra inputs"),
    (
        "wrong type",
        mutated(lambda d: d["nodes"][1].update(count="two")),
        "nodes[1].count: Input should be a valid integer",
    ),
    ("negative count", mutated(lambda d: d["nodes"][1].update(count=-2)), "nodes[1].count: Input should be greater"),
    (
        "unknown accelerator",
        mutated(lambda d: d["nodes"][1].update(accelerator="GTX-1080")),
        "nodes[1].accelerator: unknown accelerator type (got 'GTX-1080')",
    ),
    ("unknown model", mutated(lambda d: d.update(model="gpt-9")), "model: unknown model 'gpt-9'"),
    (
        "tp_degrees not dividing count",
        mutated(lambda d: d["nodes"][1].update(overrides={"tp_degrees": [3]})),
        "nodes[1].overrides.tp_degrees: 3 does not divide count=2",
    ),
    (
        "duplicate node names",
        mutated(lambda d: d["nodes"][1].update(name="a100-0")),
        "nodes[1].name='a100-0' is used twice",
    ),
    (
        "missing workload means and trace",
        mutated(lambda d: d.update(workload={"mean_input_tokens": 10})),
        "workload: Value error, give mean_input_tokens and mean_output_tokens, or a trace file",
    ),
    (
        "missing trace file",
        mutated(lambda d: d.update(workload={"trace": "no_such_trace.csv"})),
        "workload.trace: trace",
    ),
    ("negative SLO", mutated(lambda d: d.update(slo={"ttft_ms": -5})), "slo.ttft_ms: Input should be greater than 0"),
    (
        "gpu_memory_utilization above 1",
        mutated(lambda d: d["engine"].update(gpu_memory_utilization=1.2)),
        "engine.gpu_memory_utilization: Input should be less than or equal to 1",
    ),
    (
        "node override above 1",
        mutated(lambda d: d["nodes"][0].update(overrides={"gpu_memory_utilization": 2})),
        "nodes[0].overrides.gpu_memory_utilization",
    ),
    (
        "request longer than the model",
        mutated(lambda d: d["workload"].update(max_request_tokens=100_000)),
        "workload.max_request_tokens: 100000 exceeds",
    ),
    ("no nodes", mutated(lambda d: d.update(nodes=[])), "nodes: List should have at least 1 item"),
    ("missing model", mutated(lambda d: d.pop("model")), "model: Field required"),
    ("top level not a mapping", "- just\n- a list\n", "expected a mapping at the top level"),
    ("bad YAML syntax", "name: bad\nnodes: [unclosed\n", "not valid YAML"),
    # Strict reading: nothing is coerced to another type or meaning, and nothing is silently lost.
    ("count as a quoted string", mutated(lambda d: d["nodes"][1].update(count="2")), "nodes[1].count: Input should be"),
    ("count as a float", mutated(lambda d: d["nodes"][1].update(count=2.0)), "nodes[1].count: Input should be a valid"),
    ("count as a bool", mutated(lambda d: d["nodes"][1].update(count=True)), "nodes[1].count: Input should be a valid"),
    ("name as a number", mutated(lambda d: d.update(name=7)), "name: Input should be a valid string"),
    (
        "duplicate key",
        "name: bad\nmodel: llama-3.1-8b\nmodel: llama-3.1-70b\n",
        "line 3: key 'model' appears twice in one mapping (first at line 2)",
    ),
    (
        "YAML 1.1 boolean word",
        "name: bad\nmodel: llama-3.1-8b\nworkload: {mean_input_tokens: 8, mean_output_tokens: 8}\n"
        "nodes: [{name: a, accelerator: L4, count: 1, overrides: {tp_degrees: [1]}}]\nengine: {max_num_seqs: yes}\n",
        "line 5: engine.max_num_seqs: Input should be a valid integer (got 'yes')",
    ),
    (
        "leading-zero integer (YAML 1.1 octal)",
        "name: bad\nmodel: llama-3.1-8b\nworkload: {mean_input_tokens: 8, mean_output_tokens: 8}\n"
        "nodes: [{name: a, accelerator: L4, count: 010}]\n",
        "line 4: nodes[0].count: Input should be a valid integer (got '010')",
    ),
    (
        "sexagesimal integer",
        "name: bad\nmodel: llama-3.1-8b\nworkload: {mean_input_tokens: 8, mean_output_tokens: 8}\n"
        "nodes: [{name: a, accelerator: L4, count: 1:30}]\n",
        "nodes[0].count: Input should be a valid integer (got '1:30')",
    ),
    (
        "underscored integer",
        "name: bad\nmodel: llama-3.1-8b\nworkload: {mean_input_tokens: 1_000, mean_output_tokens: 8}\n"
        "nodes: [{name: a, accelerator: L4, count: 1}]\n",
        "line 3: workload.mean_input_tokens: Input should be a valid number (got '1_000')",
    ),
    (
        "date-like name stays text, non-string key refused",
        "name: 2024-01-01\n1: x\n",
        "line 2: key 1 is a int; keys must be strings",
    ),
    ("overflowing float", "name: bad\nslo: {ttft_ms: 1e999}\n", "line 2: '1e999' is too large for a float"),
]


def write(tmp_path: Path, config: dict | str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def test_base_config_is_valid(tmp_path: Path) -> None:
    """The mutations start from a config that loads, so each refusal is the mutation's doing."""
    cluster = load_cluster(write(tmp_path, BASE))
    assert [n.name for n in cluster.nodes] == ["a100-0", "l4-0"]


@pytest.mark.parametrize("config, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_load_cluster_names_the_field(tmp_path: Path, config: dict | str, fragment: str) -> None:
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    msg = str(err.value)
    assert fragment in msg
    assert str(path) in msg  # the file is named too


@pytest.mark.parametrize("config, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_exits_2_naming_the_field(
    tmp_path: Path, config: dict | str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config)
    assert main(["plan", str(path)]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read"):
        load_cluster(path)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "absent.yaml: cannot read" in err and "Traceback" not in err


@pytest.mark.parametrize("suffix, text", [(".csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"), (".jsonl", "\n")])
def test_empty_trace_file_is_refused_by_name(tmp_path: Path, suffix: str, text: str) -> None:
    """A trace with a header and no rows (or blank lines only) is bad input, not an IndexError."""
    from hetserve.traces import load_trace

    path = tmp_path / f"empty{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.(csv|jsonl): no requests"):
        load_trace(path)
