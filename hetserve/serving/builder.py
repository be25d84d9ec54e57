"""Plan -> Serve application: one deployment per planned configuration, plus the router (ingress).

Each instance deployment has `num_replicas` = the plan's instance count and reserves its
accelerator type's Ray custom resource (one unit per device, TP units per instance), so Ray places
every replica on a node labelled with that type and nowhere else.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from hetserve.catalog import ray_resource_name
from hetserve.cluster import Cluster
from hetserve.config import AppArgs
from hetserve.engines import EngineSpec
from hetserve.records import DeploymentPlan, Plan
from hetserve.serving.engine_deployment import InstanceServer, InstanceSpec
from hetserve.serving.replica_router import REQUEST_ROUTER_PATH
from hetserve.serving.router import DeploymentInfo, RouterIngress, RouterSpec

__all__ = ["ROUTER_DEPLOYMENT", "build_application", "deployment_name", "instance_deployment_options"]

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


def deployment_name(dp: DeploymentPlan) -> str:
    """The planner's unique name, or the configuration's (accelerator type and TP)."""
    return dp.name or dp.config.deployment_name


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
        "name": deployment_name(dp),
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


def _plan_view(plan: Plan, args: AppArgs, max_model_len: int) -> dict[str, Any]:
    """The read-only plan served at /v1/hetserve/plan."""
    return {
        "cluster": plan.cluster,
        "model": plan.model,
        "objective": plan.objective,
        "policy": args.policy,
        "engine": args.engine,
        "time_scale": args.time_scale if args.engine == "emulated" else None,
        "max_model_len": max_model_len,
        "predicted_output_tokens_per_s": plan.output_tokens_per_s,
        "predicted_requests_per_s": plan.requests_per_s,
        "num_accelerators": plan.num_accelerators,
        "price_per_hour": plan.price_per_hour,
        "deployments": [
            {
                "name": deployment_name(dp),
                "accelerator": dp.config.accelerator,
                "tp": dp.config.tp,
                "max_num_seqs": dp.config.max_num_seqs,
                "gpu_memory_utilization": dp.config.gpu_memory_utilization,
                "num_instances": dp.num_instances,
                "nodes": list(dp.node_names),
                "predicted_output_tokens_per_s_per_instance": dp.prediction.output_tokens_per_s,
                "kv_capacity_tokens": dp.prediction.kv_capacity_tokens,
                "batch_size": dp.prediction.batch_size,
            }
            for dp in plan.deployments
        ],
        "infeasible": list(plan.infeasible),
        "runners_up": [
            {"description": r.description, "output_tokens_per_s": r.output_tokens_per_s, "why": r.why}
            for r in plan.runners_up
        ],
    }


def build_application(cluster: Cluster, plan: Plan, args: AppArgs) -> Application:
    """The Serve application for `plan` on `cluster`: instance deployments bound into the router."""
    if not plan.deployments:
        raise ValueError(f"plan for cluster {plan.cluster!r} has no deployments: nothing to serve")
    max_model_len = cluster.workload.max_request_tokens
    instances = {}
    infos = []
    for dp in plan.deployments:
        name = deployment_name(dp)
        if name in instances:
            raise ValueError(f"two planned deployments are both named {name!r}")
        engine_spec = EngineSpec(
            model=cluster.model,
            accelerator=cluster.catalog.accelerator(dp.config.accelerator),
            tp=dp.config.tp,
            max_num_seqs=dp.config.max_num_seqs,
            gpu_memory_utilization=dp.config.gpu_memory_utilization,
            max_model_len=max_model_len,
            reserve_gib=cluster.engine.reserve_gib,
            max_num_batched_tokens=cluster.engine.max_num_batched_tokens,
            time_scale=args.time_scale,
            stats_window_s=args.stats_window_s,
            model_path=args.vllm_model_path,
            engine_kwargs=dict(args.vllm_engine_kwargs),
        )
        spec = InstanceSpec(name, args.engine, engine_spec, dp.prediction.output_tokens_per_s, args.stream_interval_s)
        instances[name] = serve.deployment(InstanceServer).options(**instance_deployment_options(dp, args)).bind(spec)
        infos.append(
            DeploymentInfo(
                name=name,
                accelerator=dp.config.accelerator,
                tp=dp.config.tp,
                num_instances=dp.num_instances,
                predicted_tokens_per_s=dp.prediction.output_tokens_per_s,
                kv_capacity_tokens=dp.prediction.kv_capacity_tokens,
                max_num_seqs=dp.config.max_num_seqs,
            )
        )
    router_spec = RouterSpec(
        model=cluster.model.name,
        max_model_len=max_model_len,
        vocab_size=cluster.model.vocab_size,
        policy=args.policy,
        deployments=tuple(infos),
        plan_view=_plan_view(plan, args, max_model_len),
        seed=args.seed,
        stats_period_s=args.stats_period_s,
        default_max_tokens=args.default_max_tokens,
        default_output_tokens=max(1, round(cluster.workload.mean_output_tokens)),
    )
    router = serve.deployment(RouterIngress).options(
        name=ROUTER_DEPLOYMENT,
        num_replicas=args.router_replicas,
        max_ongoing_requests=args.max_ongoing_requests,
        ray_actor_options={"num_cpus": args.router_num_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        logging_config=REPLICA_LOGGING,
    )
    return router.bind(router_spec, instances)
