"""Serving pieces that need no running cluster: app args, deployment options, request bodies,
error mapping, and which modules may import ray."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from hetserve.app import build, load_app_args
from hetserve.catalog import default_catalog
from hetserve.cluster import load_cluster
from hetserve.config import AppArgs, ConfigError
from hetserve.engines.base import EngineDeadError, EngineError, RequestTooLongError
from hetserve.planner import search_plan
from hetserve.scheduling.base import NoInstanceError, policy_names
from hetserve.serving.builder import build_application, instance_deployment_options
from hetserve.serving.errors import RequestError, from_exception, from_validation_errors
from hetserve.serving.openai_api import ChatCompletionRequest, CompletionRequest
from hetserve.serving.replica_router import REQUEST_ROUTER_PATH

REPO = Path(__file__).resolve().parents[2]


def test_app_args_defaults_to_the_packaged_laptop_cluster():
    args = load_app_args(None)
    assert args.engine == "emulated" and args.policy == "hetero"
    assert args.cluster_path.read_text() == (REPO / "cluster_configs" / "laptop.yaml").read_text()


def test_app_args_refusals_name_the_field_and_the_known_values():
    with pytest.raises(ConfigError) as info:
        load_app_args({"policy": "fastest"})
    msg = str(info.value)
    assert "policy" in msg and "'fastest'" in msg
    assert all(name in msg for name in policy_names())
    with pytest.raises(ConfigError, match="engine"):
        load_app_args({"engine": "tensorrt"})
    with pytest.raises(ConfigError, match="time_scale"):
        load_app_args({"time_scale": "0"})
    with pytest.raises(ConfigError, match="not a JSON object"):
        load_app_args({"vllm_engine_kwargs": "{oops"})


def test_app_args_accept_serve_run_strings():
    """`serve run hetserve.app:build key=value` passes every value as a string."""
    args = load_app_args(
        {"time_scale": "0.25", "router_replicas": "2", "vllm_engine_kwargs": '{"enforce_eager": true}'}
    )
    assert (args.time_scale, args.router_replicas) == (0.25, 2)
    assert args.vllm_engine_kwargs == {"enforce_eager": True}


def test_serve_hands_key_value_args_to_build_which_names_a_bad_field():
    """`serve run hetserve.app:build k=v` goes through Serve's own builder call: strings in,
    an Application out; a bad value is refused by hetserve's validation naming the field."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    app = call_user_app_builder_with_args_if_necessary(build, {"time_scale": "0.5", "router_replicas": "2"})
    assert isinstance(app, Application)
    with pytest.raises(ConfigError, match=r"app args: time_scale: .*greater than 0"):
        call_user_app_builder_with_args_if_necessary(build, {"time_scale": "-1"})


def test_build_refuses_bad_args_before_touching_ray():
    with pytest.raises(ConfigError, match="policy"):
        build({"policy": "nope"})
    with pytest.raises(ConfigError, match="cannot read"):
        build({"cluster": "/nonexistent/cluster.yaml"})


def _laptop_plan():
    cluster = load_cluster(load_app_args(None).cluster_path)
    return cluster, search_plan(cluster)


def test_instance_deployments_reserve_their_accelerator_resource():
    """One Serve deployment per configuration, TP units of the type's custom resource each; the
    request router that reaches exact replicas is configured with the stats period."""
    cluster, plan = _laptop_plan()
    args = AppArgs(stats_period_s=0.5)
    for dp in plan.deployments:
        opts = instance_deployment_options(dp, args)
        assert opts["name"] == dp.name
        assert opts["num_replicas"] == dp.num_instances
        assert opts["ray_actor_options"]["resources"] == {dp.config.accelerator: dp.config.tp}
        assert "placement_group_bundles" not in opts
        rrc = opts["request_router_config"]
        assert rrc.request_router_class == REQUEST_ROUTER_PATH
        assert rrc.request_routing_stats_period_s == 0.5


def test_vllm_tp_instances_pack_one_bundle_per_device_on_one_node():
    cluster, plan = _laptop_plan()
    t4 = next(dp for dp in plan.deployments if dp.config.tp == 2)
    opts = instance_deployment_options(t4, AppArgs(engine="vllm"))
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    bundles = opts["placement_group_bundles"]
    assert len(bundles) == 2 and all(b["T4"] == 1 and b["GPU"] == 1 for b in bundles)
    one = next(dp for dp in plan.deployments if dp.config.tp == 1)
    actor = instance_deployment_options(one, AppArgs(engine="vllm"))["ray_actor_options"]
    assert actor["resources"] == {one.config.accelerator: 1} and actor["num_gpus"] == 1
    cpu_tier = instance_deployment_options(t4, AppArgs(engine="vllm", vllm_gpus_per_device=0))
    assert all("GPU" not in b for b in cpu_tier["placement_group_bundles"])


def test_build_application_refuses_an_empty_plan():
    cluster, plan = _laptop_plan()
    empty = dataclasses.replace(plan, deployments=())
    with pytest.raises(ValueError, match="no deployments"):
        build_application(cluster.model, empty, AppArgs())


def test_completion_body_validation():
    assert CompletionRequest(model="m", prompt=[1, 2]).max_tokens == 16
    for bad, field in (
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": [1, -3]}, "prompt"),
        ({"model": "m", "prompt": "x", "n": 129}, "n"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "prompt": "x", "temperature": 3}, "temperature"),
        ({"model": "m", "prompt": "x", "echo": True}, "echo"),
        ({"model": "m", "prompt": "x", "surprise": 1}, "surprise"),
    ):
        with pytest.raises(ValidationError) as info:
            CompletionRequest.model_validate(bad)
        assert info.value.errors()[0]["loc"][0] == field


def test_chat_prompt_and_max_tokens():
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            ],
            "max_completion_tokens": 9,
            "max_tokens": 3,
        }
    )
    assert body.render_prompt() == "<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\n"
    assert body.requested_max_tokens() == 9
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"model": "m", "messages": []})


def test_validation_errors_become_400_naming_loc_and_value():
    try:
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "max_tokens": "many"})
    except ValidationError as err:
        mapped = from_validation_errors(err.errors())
    assert mapped.status_code == 400 and mapped.param == "max_tokens"
    assert "max_tokens" in mapped.message and "'many'" in mapped.message
    http_style = from_validation_errors(
        [{"loc": ("body", "prompt"), "msg": "Field required", "type": "missing"}], "body"
    )
    assert http_style.message == "body.prompt: Field required" and http_style.param == "prompt"


def test_engine_errors_map_to_status_codes():
    cases = [
        (RequestTooLongError("too long"), 400, "context_length_exceeded"),
        (NoInstanceError("none"), 503, "no_instance"),
        (EngineDeadError("dead"), 503, "engine_dead"),
        (EngineError("odd"), 500, "engine_error"),
        (KeyError("bug"), 500, None),
    ]
    for exc, status, code in cases:
        mapped = from_exception(exc)
        assert (mapped.status_code, mapped.code) == (status, code), exc

    class Wrapped(Exception):  # the shape of Ray's RayTaskError: the replica's exception in .cause
        def __init__(self, cause):
            super().__init__("wrapped")
            self.cause = cause

    assert from_exception(Wrapped(RequestTooLongError("x"))).status_code == 400


def test_request_error_survives_pickling_with_every_field():
    err = RequestError(404, "model 'x' is not served", param="model", code="model_not_found")
    back = pickle.loads(pickle.dumps(err))
    assert (back.status_code, back.message, back.param, back.code) == (404, err.message, "model", "model_not_found")
    assert back.body() == err.body()


def test_engine_and_api_modules_import_without_ray():
    """The emulated engine, the request bodies and the error mapping are plain Python."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # any `import ray` now fails
        import hetserve.engines.emulated, hetserve.engines, hetserve.serving.openai_api, hetserve.serving.errors
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_catalog_types_of_the_default_plan_are_ray_resource_names():
    """The deployment options name resources exactly as the catalog (and local nodes) spell them."""
    _, plan = _laptop_plan()
    catalog = default_catalog()
    for dp in plan.deployments:
        (resource,) = instance_deployment_options(dp, AppArgs())["ray_actor_options"]["resources"]
        assert resource in catalog.accelerators
