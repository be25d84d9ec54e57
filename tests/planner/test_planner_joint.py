"""Joint plan (planner/joint.py): the MILP's optimum equals a brute force over every node's option,
one class reproduces the exhaustive search, and the CLI objective works."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from planner_factories import random_cluster

from hetserve.cli import main
from hetserve.cluster import load_cluster
from hetserve.model.classes import solve_class_lp
from hetserve.planner import search_plan
from hetserve.planner.joint import brute_force, joint_problem, solve_joint

pytest.importorskip("scipy")

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"


def _bimodal(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    long_ = rng.random(n) < 0.5
    prompts = np.where(long_, rng.integers(1500, 3000, n), rng.integers(50, 300, n))
    outputs = np.where(long_, rng.integers(5, 40, n), rng.integers(200, 600, n))
    return prompts, outputs


def _per_node_brute_force(problem) -> float:
    """Independent of the MILP's pool bookkeeping: every node picks one of its pool's options or
    idles, instances are counted per configuration, and the class LP prices the result."""
    per_node = []
    for c in problem.cands:
        per_node += [list(range(len(c.options))) + [None]] * c.pool.num_nodes
    owners = [i for i, c in enumerate(problem.cands) for _ in range(c.pool.num_nodes)]
    best = 0.0
    for combo in itertools.product(*per_node):
        counts = np.zeros(len(problem.configs))
        for i, o in zip(owners, combo, strict=True):
            if o is not None:
                for ci, n in problem.inst[i][o].items():
                    counts[ci] += n
        keep = counts > 0
        if keep.any():
            best = max(best, solve_class_lp(problem.mu[keep], counts[keep], problem.proportions).requests_per_s)
    return best


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_milp_equals_brute_force_on_small_clusters(seed: int) -> None:
    cluster = random_cluster(seed, max_nodes=4)
    prompts, outputs = _bimodal(seed=seed)
    mml = cluster.model.max_model_len
    problem = joint_problem(cluster, np.minimum(prompts, mml - outputs), outputs)
    if not problem.configs:
        pytest.skip("model fits no node of this random cluster")
    sol = solve_joint(problem)
    assert sol.requests_per_s == pytest.approx(_per_node_brute_force(problem), rel=1e-6)
    assert sol.requests_per_s == pytest.approx(brute_force(problem)[0], rel=1e-6)


def test_one_class_reproduces_the_exhaustive_search() -> None:
    cluster = load_cluster(CONFIGS / "paper_mixed.yaml")
    problem = joint_problem(cluster)  # no requests: one class of the workload means
    sol = solve_joint(problem)
    assert sol.output_tokens_per_s(problem) == pytest.approx(search_plan(cluster).output_tokens_per_s, rel=1e-6)


def test_joint_beats_or_matches_the_exhaustive_plan_routed_by_class() -> None:
    cluster = load_cluster(CONFIGS / "paper_mixed.yaml")
    prompts, outputs = _bimodal()
    plan = search_plan(cluster, objective="joint", requests=(prompts, outputs))
    assert plan.objective == "joint"
    exhaustive = next(r for r in plan.runners_up if r.description.startswith("the exhaustive"))
    joint_value = float(plan.notes[0].split(" output tok/s")[0].split()[-1].replace(",", ""))
    assert joint_value >= exhaustive.output_tokens_per_s * (1 - 1e-6)
    assert any(n.startswith("routing:") for n in plan.notes)


def test_cli_joint_objective(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    prompts, outputs = _bimodal(200)
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [
        f"2023-11-16 18:{i // 60:02d}:{i % 60:02d}.0000000,{p},{o}"
        for i, (p, o) in enumerate(zip(prompts, outputs, strict=True))
    ]
    trace.write_text("\n".join(rows) + "\n")
    assert main(["plan", str(CONFIGS / "paper_mixed.yaml"), "--objective", "joint", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "objective: joint" in out and "routing:" in out
