"""The served app end to end on the shared local Ray cluster: placement, replica-exact routing,
OpenAI HTTP (openai client), handles from another Ray job, Prometheus metrics, and refusals.

One app for the module: the packaged laptop plan (A100 x1, T4 tp2 x1, L4 x2) on emulated engines
at 5x real speed, with two router replicas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest


ray = pytest.importorskip("ray")
openai = pytest.importorskip("openai")
import requests  # noqa: E402
from ray import serve  # noqa: E402

from hetserve.app import build  # noqa: E402
from hetserve.engines.base import GenerateRequest  # noqa: E402
from hetserve.serving.errors import RequestError, from_exception  # noqa: E402
from hetserve.serving.replica_router import TARGET_KWARG  # noqa: E402
from serving_helpers import deployed, node_resources, require_resources, wait_for_instances  # noqa: E402

pytestmark = pytest.mark.ray

APP = "hetserve-test"
PREFIX = "/hetserve-test"
MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def app(serve_url):
    needs = {"A100-SXM4-80GB": 1, "L4": 2, "T4": 2}
    require_resources(**needs)
    args = {"time_scale": 0.2, "stats_period_s": 0.5, "router_replicas": 2}
    with deployed(build(args), APP, PREFIX, needs) as handle:
        yield {"handle": handle, "base": f"{serve_url}{PREFIX}"}


@pytest.fixture(scope="module")
def plan(app):
    return requests.get(f"{app['base']}/v1/hetserve/plan", timeout=10).json()


@pytest.fixture(scope="module")
def client(app):
    return openai.OpenAI(base_url=f"{app['base']}/v1", api_key="unused", max_retries=0, timeout=60)


def test_replicas_run_only_on_nodes_with_their_accelerator(app, plan):
    """Serve's replica records (node id per running replica) and each replica's own Ray runtime
    context agree, and that node carries the deployment's accelerator resource and no other; the
    replica count is the plan's instance count. (The state API needs the dashboard, which the
    local cluster does not start.)"""
    resources = node_resources()
    status = serve.status().applications[APP].deployments
    assert {d["name"] for d in plan["deployments"]} == {"A100-SXM4-80GB-tp1", "L4-tp1", "T4-tp2"}
    for dep in plan["deployments"]:
        assert status[dep["name"]].replica_states.get("RUNNING") == dep["num_instances"]
        snaps = wait_for_instances(APP, dep["name"], dep["num_instances"])
        handle = serve.get_deployment_handle(dep["name"], app_name=APP)
        for snap in snaps:
            own = handle.whoami.remote(**{TARGET_KWARG: snap.instance_id}).result()
            assert own["node_id"] == snap.node_id
            on_node = resources[snap.node_id]
            assert on_node.get(dep["accelerator"], 0) >= dep["tp"], (dep["name"], on_node)
            others = [r for r in ("A100-SXM4-80GB", "L4", "T4") if r != dep["accelerator"]]
            assert not any(on_node.get(r) for r in others), (dep["name"], on_node)


def test_requests_reach_the_exact_replica_the_scheduler_names(app, plan):
    """Every call carrying a target replica id is answered by that replica; an unknown id falls
    back to some live replica instead of failing."""
    for dep in plan["deployments"]:
        snaps = wait_for_instances(APP, dep["name"], dep["num_instances"])
        handle = serve.get_deployment_handle(dep["name"], app_name=APP)
        for snap in snaps:
            answers = [handle.whoami.remote(**{TARGET_KWARG: snap.instance_id}).result() for _ in range(6)]
            assert {a["instance_id"] for a in answers} == {snap.instance_id}
            assert {a["node_id"] for a in answers} == {snap.node_id}
        fallback = handle.whoami.remote(**{TARGET_KWARG: "no-such-replica"}).result()
        assert fallback["instance_id"] in {s.instance_id for s in snaps}


def test_openai_client_completions_unary_streaming_and_token_ids(client):
    """Same prompt, same placeholder text, whether streamed or not; token-id prompts count ids."""
    unary = client.completions.create(model=MODEL, prompt="Tell me a story", max_tokens=12)
    assert unary.choices[0].finish_reason == "length"
    assert len(unary.choices[0].text.split()) == 12
    assert (unary.usage.prompt_tokens, unary.usage.completion_tokens) == (len("Tell me a story") // 4, 12)

    stream = client.completions.create(model=MODEL, prompt="Tell me a story", max_tokens=12, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == unary.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"

    ids = client.completions.create(model=MODEL, prompt=list(range(100, 140)), max_tokens=5)
    assert ids.usage.prompt_tokens == 40 and ids.usage.completion_tokens == 5
    streamed_ids = client.completions.create(
        model=MODEL, prompt=list(range(100, 140)), max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(streamed_ids)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ids.choices[0].text
    assert chunks[-1].usage.prompt_tokens == 40 and chunks[-1].usage.completion_tokens == 5


def test_openai_client_chat_unary_and_streaming(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]
    unary = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7)
    msg = unary.choices[0].message
    assert msg.role == "assistant" and len(msg.content.split()) == 7
    assert unary.usage.completion_tokens == 7

    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == msg.content
    assert chunks[-1].choices[0].finish_reason == "length"
    assert [m.id for m in client.models.list().data] == [MODEL]


def _instance_output_tokens(base: str) -> dict[str, int]:
    rows = requests.get(f"{base}/v1/hetserve/instances", timeout=10).json()["data"]
    return {r["instance_id"]: r["total_output_tokens"] or 0 for r in rows}


def test_n_choices_through_the_app_on_one_instance(app, client):
    """n=3 over HTTP: three choices indexed 0-2, usage with the prompt counted once and the
    outputs summed, streamed chunks carrying their choice's index; all three children ran on
    one instance (its engine-reported output grew by 3 x max_tokens, the others' by nothing);
    n beyond 128 and greedy n > 1 are refused naming `n`."""
    before = _instance_output_tokens(app["base"])
    unary = client.completions.create(model=MODEL, prompt="Tell me a story", max_tokens=40, n=3, seed=11)
    assert [c.index for c in unary.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" and len(c.text.split()) == 40 for c in unary.choices)
    assert len({c.text for c in unary.choices}) == 3  # seeds 11, 12, 13
    assert (unary.usage.prompt_tokens, unary.usage.completion_tokens) == (len("Tell me a story") // 4, 120)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # engine reports arrive every stats period
        grown = {i: n - before.get(i, 0) for i, n in _instance_output_tokens(app["base"]).items()}
        if sum(grown.values()) >= 120:
            break
        time.sleep(0.25)
    # (Reports of earlier tests' few tokens may land in the same window: at most tens.)
    big = [v for v in grown.values() if v >= 40]
    assert len(big) == 1 and big[0] >= 120, grown

    messages = [{"role": "user", "content": "Hi there!"}]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=6,
            n=3,
            seed=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    body, usage = chunks[:-1], chunks[-1]
    assert {c.choices[0].index for c in body} == {0, 1, 2} and len({c.id for c in chunks}) == 1
    for i in range(3):
        mine = [c.choices[0] for c in body if c.choices[0].index == i]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "length"
        assert len("".join(m.delta.content or "" for m in mine).split()) == 6
    assert usage.choices == [] and usage.usage.completion_tokens == 18
    chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, n=3, seed=5)
    assert chat.usage.prompt_tokens == usage.usage.prompt_tokens and chat.usage.completion_tokens == 18

    for body, param in (
        ({"model": MODEL, "prompt": "x", "n": 129}, "n"),
        ({"model": MODEL, "prompt": "x", "n": 2, "temperature": 0}, "n"),
        ({"model": MODEL, "prompt": "x", "n": 2, "best_of": 4}, "best_of"),
        ({"model": MODEL, "prompt": "x", "n": 2, "logprobs": 1}, "logprobs"),  # the emulated engine, per child
        ({"model": MODEL, "prompt": "x", "logprobs": 1}, "logprobs"),  # a 400, not an instance failure (503)
    ):
        r = requests.post(f"{app['base']}/v1/completions", json=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_raw_sse_framing_ends_with_done(app):
    resp = requests.post(
        f"{app['base']}/v1/completions",
        json={"model": MODEL, "prompt": "abc", "max_tokens": 3, "stream": True},
        stream=True,
        timeout=30,
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [line for line in resp.iter_lines(decode_unicode=True) if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert len(chunks) >= 2 and {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert sum(len(c["choices"][0]["text"].split()) for c in chunks) == 3


def test_instances_batch_streamed_tokens(app):
    """An instance sends one chunk per stream interval (50 ms), not one per token: 100 tokens
    (~2 ms each on the A100 at this time scale, ~16 ms on the slowest) arrive in at most one chunk
    per interval, the first token alone (time to first token)."""
    t0 = time.monotonic()
    resp = requests.post(
        f"{app['base']}/v1/completions",
        json={"model": MODEL, "prompt": "count", "max_tokens": 100, "stream": True},
        stream=True,
        timeout=30,
    )
    chunks = [json.loads(e[len("data: ") :]) for e in resp.iter_lines(decode_unicode=True) if e and e != "data: [DONE]"]
    wall_s = time.monotonic() - t0
    words = [len(c["choices"][0]["text"].split()) for c in chunks]
    assert sum(words) == 100 and words[0] == 1
    assert len(chunks) <= min(50, wall_s / 0.05 + 3), (words, wall_s)


def test_instances_view_plan_and_health(app, plan):
    """/v1/hetserve/instances lists every planned instance with C, Q, KV and measured tok/s."""
    body = requests.get(f"{app['base']}/v1/hetserve/instances", timeout=10).json()
    rows = body["data"]
    assert len(rows) == sum(d["num_instances"] for d in plan["deployments"])
    per_dep = {d["name"]: d for d in plan["deployments"]}
    for row in rows:
        dep = per_dep[row["deployment"]]
        assert row["accelerator"] == dep["accelerator"] and row["tp"] == dep["tp"]
        assert row["predicted_tokens_per_s"] == pytest.approx(dep["predicted_output_tokens_per_s_per_instance"])
        assert row["capacity_tokens_per_s"] > 0 and row["kv_capacity_tokens"] > 0
        for key in ("outstanding_tokens", "num_running", "num_waiting", "kv_usage", "measured_output_tokens_per_s"):
            assert key in row
    assert plan["policy"] == "hetero" and plan["engine"] == "emulated"
    assert plan["predicted_output_tokens_per_s"] == pytest.approx(
        sum(d["num_instances"] * d["predicted_output_tokens_per_s_per_instance"] for d in plan["deployments"])
    )
    health = requests.get(f"{app['base']}/health", timeout=10)
    assert health.status_code == 200 and health.json()["healthy_instances"] == len(rows)


def test_handles_from_another_ray_job(app, ray_driver):
    """A separate process (a new Ray job) gets the app by name and calls it unary and streaming."""
    script = textwrap.dedent(
        f"""
        import json, ray
        from ray import serve
        ray.init(address={ray_driver.address!r}, logging_level="ERROR", log_to_driver=False)
        print("JOB", ray.get_runtime_context().get_job_id())
        h = serve.get_app_handle({APP!r})
        out = h.generate.remote({{"model": {MODEL!r}, "prompt": "from afar", "max_tokens": 6}}).result()
        print("UNARY", json.dumps(out))
        chunks = list(h.options(stream=True).generate_stream.remote(
            {{"model": {MODEL!r}, "messages": [{{"role": "user", "content": "hey"}}], "max_tokens": 4}}))
        print("STREAM", json.dumps(chunks))
        try:
            h.generate.remote({{"model": "gpt-9", "prompt": "x"}}).result()
        except Exception as exc:
            print("ERROR", getattr(exc, "status_code", None))
        """
    )
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}
    assert lines["JOB"] != ray.get_runtime_context().get_job_id()
    unary = json.loads(lines["UNARY"])
    assert unary["usage"]["completion_tokens"] == 6 and len(unary["choices"][0]["text"].split()) == 6
    stream = json.loads(lines["STREAM"])
    assert stream[0]["object"] == "chat.completion.chunk" and stream[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(len(c["choices"][0]["delta"]["content"].split()) for c in stream) == 4
    assert lines["ERROR"] == "404"


def test_bad_requests_get_4xx_json_naming_the_problem_and_others_are_unaffected(app):
    """Each refusal class is a 4xx with an OpenAI error body naming the field; a long request
    streaming at the same time completes, and the service stays healthy."""
    base = app["base"]
    good: dict = {}

    def long_request():
        r = requests.post(
            f"{base}/v1/completions",
            json={"model": MODEL, "prompt": "keep going", "max_tokens": 200, "stream": True},
            stream=True,
            timeout=120,
        )
        good["status"] = r.status_code
        good["events"] = [line for line in r.iter_lines(decode_unicode=True) if line]

    worker = threading.Thread(target=long_request)
    worker.start()
    cases = [
        ({"model": "gpt-9", "prompt": "x"}, 404, "model_not_found", "gpt-9"),
        ({"model": MODEL}, 400, "invalid_value", "body.prompt: Field required"),
        ({"model": MODEL, "prompt": "x", "max_tokens": "lots"}, 400, "invalid_value", "body.max_tokens"),
        ({"model": MODEL, "prompt": 42}, 400, "invalid_value", "body.prompt"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "invalid_value", "greater than or equal to 1"),
        (
            {"model": MODEL, "prompt": "x", "max_tokens": 10**6},
            400,
            "invalid_value",
            "max_tokens=1000000 is out of range",
        ),
        (
            {"model": MODEL, "prompt": "x" * 40_000, "max_tokens": 10},
            400,
            "context_length_exceeded",
            "longer than the context",
        ),
        ({"model": MODEL, "prompt": [1, 2, 10**9], "max_tokens": 2}, 400, "invalid_value", "outside the vocabulary"),
        ({"model": MODEL, "prompt": "x", "n": 129}, 400, "invalid_value", "body.n"),
        ({"model": MODEL, "prompt": "x", "best_of_everything": 1}, 400, "invalid_value", "best_of_everything"),
    ]
    for body, status, code, needle in cases:
        r = requests.post(f"{base}/v1/completions", json=body, timeout=30)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == code and needle in err["message"], (body, err)
    chat = requests.post(
        f"{base}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        timeout=30,
    )
    assert chat.status_code == 400 and "body.messages.0.role" in chat.json()["error"]["message"]
    garbage = requests.post(
        f"{base}/v1/completions", data=b"{not json", headers={"content-type": "application/json"}, timeout=30
    )
    assert garbage.status_code == 400 and "JSON" in garbage.json()["error"]["message"]
    streamed_refusal = requests.post(
        f"{base}/v1/chat/completions",
        json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}], "stream": True},
        timeout=30,
    )
    assert streamed_refusal.status_code == 404 and streamed_refusal.json()["error"]["param"] == "model"

    worker.join(timeout=120)
    assert good["status"] == 200 and good["events"][-1] == "data: [DONE]"
    assert sum(len(json.loads(e[6:])["choices"][0]["text"].split()) for e in good["events"][:-1]) == 200
    assert requests.get(f"{base}/health", timeout=10).status_code == 200


def test_client_that_disconnects_mid_stream_frees_its_instance(app):
    """Closing a streaming HTTP response aborts the request on its instance: no engine is busy and
    no tokens are produced a few stats periods later, long before the 4000-token answer (~9 s on
    the A100 at this time scale, longer elsewhere) would have ended."""
    base = app["base"]

    def instances() -> list[dict]:
        return requests.get(f"{base}/v1/hetserve/instances", timeout=10).json()["data"]

    with requests.post(
        f"{base}/v1/completions",
        json={"model": MODEL, "prompt": "never mind", "max_tokens": 4000, "stream": True},
        stream=True,
        timeout=30,
    ) as resp:
        events = [line for _, line in zip(range(5), resp.iter_lines(decode_unicode=True))]
        assert events[0].startswith("data: ")
    time.sleep(2.0)
    before = {r["instance_id"]: r["total_output_tokens"] for r in instances()}
    time.sleep(1.5)
    rows = instances()
    assert {r["instance_id"]: r["total_output_tokens"] for r in rows} == before
    assert all(r["num_running"] == 0 and r["num_waiting"] == 0 for r in rows), rows


def test_engine_errors_cross_ray_typed_and_map_to_status_codes(app, plan):
    """An instance refusing a too-long request (bypassing the router's checks) raises the typed
    engine error through Ray; the router's mapping turns it into 400 context_length_exceeded."""
    dep = plan["deployments"][0]
    handle = serve.get_deployment_handle(dep["name"], app_name=APP).options(stream=True)
    too_long = GenerateRequest("direct-too-long", max_tokens=10, prompt_token_ids=tuple(range(5000)))
    with pytest.raises(Exception) as info:
        list(handle.generate.remote(too_long))
    mapped = from_exception(info.value)
    assert isinstance(mapped, RequestError)
    assert (mapped.status_code, mapped.code) == (400, "context_length_exceeded")
    assert "exceeds the context of 4096" in mapped.message


def _scrape_all_nodes() -> str:
    texts = []
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                texts.append(resp.read().decode())
        except OSError:
            pass
    return "\n".join(texts)


def test_custom_metrics_reach_prometheus_endpoints(app, client):
    """After some traffic, every hetserve metric is exported with deployment/accelerator/instance
    tags; the router's ones by the metrics agent of a node that hosts a router replica."""
    for _ in range(4):
        client.completions.create(model=MODEL, prompt="metrics please", max_tokens=4)
    wanted = [
        "hetserve_requests_routed",
        "hetserve_outstanding_tokens",
        "hetserve_capacity_tokens_per_s",
        "hetserve_ttft_s",
        "hetserve_tpot_s",
        "hetserve_e2e_latency_s",
        "hetserve_scheduler_decision_s",
        "hetserve_measured_output_tokens_per_s",
        "hetserve_predicted_output_tokens_per_s",
        "hetserve_kv_usage",
    ]
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        text = _scrape_all_nodes()
        if all(name in text for name in wanted):
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"not exported within 90 s: {missing}"
    routed = [line for line in text.splitlines() if "hetserve_requests_routed" in line and not line.startswith("#")]
    assert any('accelerator="A100-SXM4-80GB"' in line and 'deployment="A100-SXM4-80GB-tp1"' in line for line in routed)
    assert all('instance="' in line for line in routed)

    # An instance's own metrics come from the metrics agent of the node it runs on.
    rows = requests.get(f"{app['base']}/v1/hetserve/instances", timeout=10).json()["data"]
    a100 = next(r for r in rows if r["accelerator"] == "A100-SXM4-80GB")
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["NodeID"] == a100["node_id"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        on_node = resp.read().decode()
    assert any(
        "hetserve_predicted_output_tokens_per_s" in line and f'instance="{a100["instance_id"]}"' in line
        for line in on_node.splitlines()
    )


def test_a_dead_instance_is_replaced_and_requests_keep_succeeding(app, plan):
    """Kill the A100 replica (the one hetero prefers): requests sent meanwhile still succeed
    (the request router falls back to a live replica when the chosen one is gone), Serve starts a
    new replica, and the router's instance view picks it up in place of the dead one."""
    base = app["base"]
    rows = requests.get(f"{base}/v1/hetserve/instances", timeout=10).json()["data"]
    a100 = next(r for r in rows if r["accelerator"] == "A100-SXM4-80GB")
    actor = ray.get_actor(f"SERVE_REPLICA::{APP}#{a100['deployment']}#{a100['instance_id']}", namespace="serve")
    ray.kill(actor, no_restart=True)
    for i in range(6):
        r = requests.post(
            f"{base}/v1/completions", json={"model": MODEL, "prompt": f"still there {i}", "max_tokens": 4}, timeout=60
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = requests.get(f"{base}/v1/hetserve/instances", timeout=10).json()["data"]
        ids = {r["instance_id"] for r in rows if r["accelerator"] == "A100-SXM4-80GB"}
        if ids and a100["instance_id"] not in ids and all(r["kv_usage"] is not None for r in rows):
            break
        time.sleep(0.5)
    assert a100["instance_id"] not in ids and len(ids) == 1, rows
    assert len(rows) == sum(d["num_instances"] for d in plan["deployments"])
    r = requests.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "back", "max_tokens": 4}, timeout=60)
    assert r.status_code == 200
