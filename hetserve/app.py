"""`serve run hetserve.app:build [key=value ...]`: load the cluster, plan it, build the app.

No `from __future__ import annotations` here: Serve reads the builder's parameter annotation as a
class to validate `key=value` args (and a config file's `args:`) into AppArgs before calling it.
"""

import dataclasses
from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from hetserve.cluster import Cluster, load_cluster
from hetserve.config import AppArgs, ConfigError, format_validation_error
from hetserve.planner import search_plan
from hetserve.serving.builder import build_application

__all__ = ["build", "load_app_args"]


def load_app_args(args: AppArgs | dict[str, Any] | None) -> AppArgs:
    """AppArgs from a model, a dict (Python callers, config files) or nothing (the defaults)."""
    if isinstance(args, AppArgs):
        return args
    try:
        return AppArgs.model_validate(args or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "app args")) from None


def _with_model(cluster: Cluster, model_name: str | None) -> Cluster:
    if model_name is None or model_name == cluster.model.name:
        return cluster
    model = cluster.catalog.model(model_name)
    if cluster.workload.max_request_tokens > model.max_model_len:
        raise ConfigError(
            f"app args: model: {model_name!r} holds {model.max_model_len} tokens, less than the "
            f"cluster workload's max_request_tokens {cluster.workload.max_request_tokens}"
        )
    return dataclasses.replace(cluster, model=model)


def build(args: AppArgs = None) -> Application:
    """The hetserve application. With no args: the packaged laptop cluster on emulated engines."""
    app_args = load_app_args(args)
    cluster = _with_model(load_cluster(app_args.cluster_path), app_args.model)
    latency_model = None
    if app_args.profiles is not None:
        from hetserve.profiles.sweep import latency_model_with

        latency_model = latency_model_with(app_args.profiles)
    plan = search_plan(cluster, latency_model=latency_model)
    return build_application(cluster, plan, app_args, latency_model=latency_model)
