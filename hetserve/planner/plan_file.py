"""A plan as a JSON file: what `hetserve plan --json` writes and `serve run ... plan=FILE` serves.

The file is the Plan record itself (`Plan.to_dict`, plus totals for readers), so serving it
re-derives nothing: the deployments, their coefficients and KV sizes are the ones inspected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hetserve.config import ConfigError
from hetserve.records import Plan

__all__ = ["load_plan", "plan_to_json"]


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """Every Plan field, plus the totals the dataclass computes, with numbers as plain floats/ints."""
    data = plan.to_dict()
    data["output_tokens_per_s"] = plan.output_tokens_per_s
    data["requests_per_s"] = plan.requests_per_s
    data["num_accelerators"] = plan.num_accelerators
    data["num_instances"] = sum(d.num_instances for d in plan.deployments)
    for d, out in zip(plan.deployments, data["deployments"], strict=True):
        out["num_instances"] = d.num_instances
        out["output_tokens_per_s"] = d.output_tokens_per_s
    return data


def load_plan(path: str | Path) -> Plan:
    """Read a plan JSON; a missing file, bad JSON or a missing/mistyped field is a ConfigError
    naming the file and the field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a plan object (from `hetserve plan --json`), got {type(data).__name__}")
    try:
        plan = Plan.from_dict(data)
    except KeyError as exc:
        raise ConfigError(f"{p}: {exc.args[0]}: missing; is this the output of `hetserve plan --json`?") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{p}: not a plan written by `hetserve plan --json`: {exc}") from None
    if not plan.deployments:
        raise ConfigError(f"{p}: deployments: the plan has none; nothing to serve")
    return plan
