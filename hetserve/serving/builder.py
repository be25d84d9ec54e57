"""Plan -> Serve application: one deployment per planned configuration, plus the router (ingress).

Each instance deployment has `num_replicas` = the plan's instance count and reserves its
accelerator type's Ray custom resource (one unit per device, TP units per instance), so Ray places
every replica on a node labelled with that type and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from hetserve.catalog import ray_resource_name
from hetserve.config import AppArgs, ConfigError, ModelSpec
from hetserve.engines import EngineSpec
from hetserve.records import DeploymentPlan, Plan
from hetserve.scheduling.admission import AdmissionConfig
from hetserve.serving.door import load_api_key_digests
from hetserve.serving.engine_deployment import InstanceServer
from hetserve.serving.health import HealthConfig
from hetserve.serving.replica_router import REQUEST_ROUTER_PATH
from hetserve.serving.router import RouterIngress, RouterSpec

__all__ = ["ROUTER_DEPLOYMENT", "build_application", "instance_deployment_options", "tokenizer_path"]

ROUTER_DEPLOYMENT = "router"

# Serve's replica defaults put every outgoing handle call through an extra thread hop (a router
# event loop in its own thread), and log one access line per request; profiling the router under
# load (benchmarks/overhead.md) showed the cross-thread future chaining and the logging among its
# largest costs. The router and the instances are fully async: their handle calls run on the
# calling loop, and their own metrics carry what an access line would. User code keeps its own
# thread (Serve's default), so health checks are answered even when the router's loop is
# saturated: with RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 too, a router starved of CPU
# missed three 30 s health checks in a row here and Serve replaced it mid-run.
REPLICA_ENV = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
REPLICA_LOGGING = {"enable_access_log": False}


def instance_deployment_options(dp: DeploymentPlan, args: AppArgs) -> dict[str, Any]:
    """Serve options of one instance deployment.

    Emulated engines need no GPU: one actor holds `tp` units of the type's resource.
    vLLM reserves `vllm_gpus_per_device` Ray GPUs per device (0 on the vLLM CPU tier); with
    TP > 1 its workers must share one node: a STRICT_PACK placement group with one bundle per
    device (the replica itself runs in the first bundle).
    """
    resource = ray_resource_name(dp.config.accelerator)
    tp = dp.config.tp
    options: dict[str, Any] = {
        "name": dp.name,
        "num_replicas": dp.num_instances,
        "max_ongoing_requests": args.max_ongoing_requests,
        "logging_config": REPLICA_LOGGING,
        "request_router_config": RequestRouterConfig(
            request_router_class=REQUEST_ROUTER_PATH,
            request_routing_stats_period_s=args.stats_period_s,
            request_routing_stats_timeout_s=max(5.0, 5 * args.stats_period_s),
        ),
    }
    if args.engine == "emulated":
        options["ray_actor_options"] = {
            "num_cpus": args.instance_num_cpus,
            "resources": {resource: tp},
            "runtime_env": {"env_vars": REPLICA_ENV},
        }
        return options
    gpu = {"GPU": args.vllm_gpus_per_device} if args.vllm_gpus_per_device > 0 else {}
    if tp == 1:
        options["ray_actor_options"] = {"num_cpus": 1, "num_gpus": gpu.get("GPU", 0), "resources": {resource: 1}}
    else:
        options["ray_actor_options"] = {"num_cpus": 1}
        options["placement_group_bundles"] = [{"CPU": 1, **gpu, resource: 1}] + [{**gpu, resource: 1}] * (tp - 1)
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def tokenizer_path(model: ModelSpec, args: AppArgs) -> str | None:
    """The router's tokenizer: AppArgs.tokenizer ('none' = without), else the model's
    `tokenizer`, else (vLLM) the weights path the engine loads its own tokenizer from."""
    if args.tokenizer is not None:
        return None if args.tokenizer.lower() == "none" else args.tokenizer
    if model.tokenizer:
        return model.tokenizer
    if args.engine == "vllm":
        return args.vllm_model_path or model.hf_path
    return None


def _tokenizer_view(path: str | None) -> dict[str, Any]:
    if path is None:
        return {
            "path": None,
            "in_use": False,
            "prompt_tokens": "estimated: 4 characters per token (no tokenizer configured)",
            "chat_prompt": "role-tagged transcript (no chat template)",
        }
    return {"path": path, "in_use": True, "prompt_tokens": "exact", "chat_prompt": "the model's chat template"}


def _plan_view(plan: Plan, args: AppArgs, tokenizer: str | None = None) -> dict[str, Any]:
    """The read-only plan served at /v1/hetserve/plan."""
    return {
        "tokenizer": _tokenizer_view(tokenizer),
        "cluster": plan.cluster,
        "model": plan.model,
        "objective": plan.objective,
        "policy": args.policy,
        "engine": args.engine,
        "time_scale": args.time_scale if args.engine == "emulated" else None,
        "max_model_len": plan.max_model_len,
        "predicted_output_tokens_per_s": plan.output_tokens_per_s,
        "predicted_requests_per_s": plan.requests_per_s,
        "num_accelerators": plan.num_accelerators,
        "price_per_hour": plan.price_per_hour,
        "deployments": [
            {
                "name": dp.name,
                "accelerator": dp.config.accelerator,
                "tp": dp.config.tp,
                "max_num_seqs": dp.config.max_num_seqs,
                "gpu_memory_utilization": dp.config.gpu_memory_utilization,
                "num_instances": dp.num_instances,
                "nodes": list(dp.node_names),
                "predicted_output_tokens_per_s_per_instance": dp.prediction.output_tokens_per_s,
                "kv_capacity_tokens": dp.prediction.kv_capacity_tokens,
                "batch_size": dp.prediction.batch_size,
                "latency_coeffs": dataclasses.asdict(dp.coeffs),
                "latency_coeffs_source": dp.coeffs_source,
                "max_num_batched_tokens": dp.max_num_batched_tokens,
            }
            for dp in plan.deployments
        ],
        "infeasible": list(plan.infeasible),
        "request_classes": plan.classes.source if plan.classes is not None else None,  # hetero_classes' table
        "runners_up": [
            {"description": r.description, "output_tokens_per_s": r.output_tokens_per_s, "why": r.why}
            for r in plan.runners_up
        ],
    }


def reliability_settings(args: AppArgs) -> dict[str, Any]:
    """RouterSpec fields of retries, failure detection, admission and the door. API keys are read
    here, from the environment or a file named in the args, and only their digests travel."""
    try:
        digests = load_api_key_digests(args.api_key_env, args.api_key_file)
    except ValueError as exc:
        raise ConfigError(f"app args: {exc}") from None
    return {
        "max_tries": args.max_tries,
        "retry_backoff_s": args.retry_backoff_s,
        "instance_timeout_s": args.instance_timeout_s,
        "admission": AdmissionConfig(
            max_queue_requests=args.max_queue_requests,
            max_queue_work_tokens=args.max_queue_work_tokens if args.max_queue_work_tokens is not None else math.inf,
            slots_factor=args.bind_slots_factor,
            late_binding=args.late_binding,
        ),
        "queue_timeout_s": args.queue_timeout_s,
        "health": HealthConfig(
            report_timeout_s=args.effective_report_timeout_s,
            failure_threshold=args.breaker_failures,
            open_s=args.breaker_open_s,
        ),
        "api_key_digests": digests,
        "max_body_bytes": args.max_body_bytes,
    }


def build_application(model: ModelSpec, plan: Plan, args: AppArgs) -> Application:
    """The Serve application for `plan`: instance deployments bound into the router.

    Every instance fact (configuration, latency coefficients, KV capacity, prediction) is read
    from the plan's DeploymentPlan records; nothing is re-derived here. Each deployment's
    coefficients are also the router's prior for the online capacity fit.
    """
    if not plan.deployments:
        raise ValueError(f"plan for cluster {plan.cluster!r} has no deployments: nothing to serve")
    if model.name != plan.model:
        raise ValueError(f"plan is for model {plan.model!r}, not {model.name!r}")
    names = [dp.name for dp in plan.deployments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two planned deployments are both named {dupes[0]!r}")
    tok_path = tokenizer_path(model, args)
    output_token_ids: tuple[int, ...] = ()
    if tok_path is not None and args.engine == "emulated":
        from hetserve.serving.tokenizer import load_tokenizer

        # Emulated instances emit this tokenizer's ids (computed once, carried to every instance).
        output_token_ids = load_tokenizer(tok_path).output_vocabulary()
    instances = {}
    for dp in plan.deployments:
        engine_spec = EngineSpec(
            model=model,
            deployment=dp,
            max_model_len=plan.max_model_len,
            time_scale=args.time_scale,
            stats_window_s=args.stats_window_s,
            model_path=args.vllm_model_path,
            engine_kwargs=dict(args.vllm_engine_kwargs),
            output_token_ids=output_token_ids,
            speed_factor=args.emulated_speed.get(dp.name, args.emulated_speed.get(dp.config.accelerator, 1.0)),
            speed_changes=tuple(
                args.emulated_speed_changes.get(dp.name, args.emulated_speed_changes.get(dp.config.accelerator, []))
            ),
        )
        instances[dp.name] = (
            serve.deployment(InstanceServer)
            .options(**instance_deployment_options(dp, args))
            .bind(args.engine, engine_spec, args.stream_interval_s)
        )
    router_spec = RouterSpec(
        model=model.name,
        max_model_len=plan.max_model_len,
        vocab_size=model.vocab_size,
        policy=args.policy,
        deployments=plan.deployments,
        plan_view=_plan_view(plan, args, tok_path),
        seed=args.seed,
        stats_period_s=args.stats_period_s,
        default_max_tokens=args.default_max_tokens,
        default_output_tokens=max(1, round(plan.workload.mean_output_tokens)),
        tokenizer_path=tok_path,
        detokenize=bool(output_token_ids),
        learn_capacity=args.learn_capacity,
        classes=plan.classes,
        **reliability_settings(args),
    )
    router = serve.deployment(RouterIngress).options(
        name=ROUTER_DEPLOYMENT,
        num_replicas=args.router_replicas,
        max_ongoing_requests=args.max_ongoing_requests,
        ray_actor_options={"num_cpus": args.router_num_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        logging_config=REPLICA_LOGGING,
    )
    return router.bind(router_spec, instances)
