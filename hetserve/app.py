"""`serve run hetserve.app:build [key=value ...]`: plan the cluster (or load an approved plan), build the app.

The parameter is annotated `AppArgs | None` (not a class), so Serve hands the raw `key=value`
args (or a config file's `args:`) to `load_app_args`, whose refusals name each field the way every
other hetserve config error does.
"""

import dataclasses
from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from hetserve.catalog import default_catalog
from hetserve.cluster import Cluster, load_cluster
from hetserve.config import AppArgs, ConfigError, ModelSpec, format_validation_error
from hetserve.planner import load_plan, search_plan
from hetserve.records import Plan
from hetserve.serving.builder import build_application
from hetserve.serving.cluster_check import check_plan_fits_live_cluster

__all__ = ["build", "load_app_args", "resolve_plan"]


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


def _planned_model(plan: Plan, args: AppArgs) -> ModelSpec:
    """The served model of an approved plan: the cluster file's (when `cluster=` is given, e.g. an
    inline model), else the catalog's entry of the plan's model name."""
    if args.model is not None and args.model != plan.model:
        raise ConfigError(f"app args: model: {args.model!r} differs from the plan's model {plan.model!r}")
    if args.cluster is not None:
        cluster = load_cluster(args.cluster_path)
        if cluster.model.name == plan.model:
            return cluster.model
        return cluster.catalog.model(plan.model)
    return default_catalog().model(plan.model)


def resolve_plan(args: AppArgs) -> tuple[ModelSpec, Plan]:
    """The model and the plan to serve: the approved plan file (`plan=`), else a fresh search with
    the objective fields of the args, exactly as `hetserve plan` would run it."""
    if args.plan is not None:
        plan = load_plan(args.plan)
        return _planned_model(plan, args), plan
    cluster = _with_model(load_cluster(args.cluster_path), args.model)
    latency_model = None
    if args.profiles is not None:  # measured profiles (`hetserve profile`) take precedence
        from hetserve.profiles.sweep import latency_model_with

        latency_model = latency_model_with(args.profiles)
    plan = search_plan(
        cluster,
        latency_model=latency_model,
        objective=args.objective,
        target_output_tokens_per_s=args.target_tokens_per_s,
        mixed_partitions=args.mixed_partitions,
    )
    return cluster.model, plan


def build(args: AppArgs | dict[str, Any] | None = None) -> Application:
    """The hetserve application. With no args: the packaged laptop cluster on emulated engines.

    Refuses (ConfigError naming what is missing) a plan that does not fit the live Ray cluster.
    """
    app_args = load_app_args(args)
    model, plan = resolve_plan(app_args)
    check_plan_fits_live_cluster(plan)
    return build_application(model, plan, app_args)
