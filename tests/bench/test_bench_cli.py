"""`hetserve bench` and `hetserve cluster up` flags: bad input names the flag (exit 2), and the
dashboard is on by default."""

from __future__ import annotations

import pytest

from hetserve.cli import build_parser, main

LAPTOP = "cluster_configs/laptop.yaml"


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--url", "http://127.0.0.1:1", "--policies", "nope"], "--policies"),
        (["--url", "http://127.0.0.1:1", "--policies", "hetero,round_robin"], "--policies"),
        (["--url", "http://127.0.0.1:1", "--load", "0,1"], "--load"),
        (["--url", "http://127.0.0.1:1", "--num-requests", "1"], "--num-requests"),
        (["--url", "http://127.0.0.1:1", "--num-requests", "20"], "--url"),
        (["--address", "127.0.0.1:1", "--num-requests", "20", "--app-arg", "stats_periods=1"], "stats_periods"),
        (["--address", "127.0.0.1:1", "--num-requests", "20", "--app-arg", "policy=hetero"], "--policies"),
    ],
)
def test_bad_bench_input_names_the_flag(capsys, extra, flag):
    assert main(["bench", "--cluster", LAPTOP, *extra]) == 2
    assert flag in capsys.readouterr().err


def test_cluster_up_starts_the_dashboard_on_loopback_by_default():
    args = build_parser().parse_args(["cluster", "up", LAPTOP])
    assert args.dashboard is True and args.dashboard_host == "127.0.0.1"
    assert build_parser().parse_args(["cluster", "up", LAPTOP, "--no-dashboard"]).dashboard is False
