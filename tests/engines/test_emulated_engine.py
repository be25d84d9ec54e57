"""The emulated engine: throughput emerges from the batching loop, paced by the latency model.

Plain asyncio, no Ray. Step times are short (time_scale < 1) so each test takes well under a second.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hetserve.catalog import default_catalog
from hetserve.config import ConfigError
from hetserve.engines import EngineSpec, create_engine
from hetserve.engines.base import EngineDeadError, EngineError, GenerateRequest, RequestTooLongError
from hetserve.engines.emulated import EmulatedEngine
from hetserve.model import LatencyModel, Workload, predict_instance
from hetserve.planner.single import plan_single_configuration
from hetserve.records import LatencyCoeffs

# A 10 ms decode step whatever the batch, no prefill cost: throughput = batch / 10 ms exactly.
FLAT_STEP = LatencyCoeffs(a_p=0.0, b_p=0.0, a_d=0.0, c_d=0.0, b_d=0.010)


def make_engine(**kw) -> EmulatedEngine:
    args = dict(coeffs=FLAT_STEP, kv_capacity_tokens=100_000, max_num_seqs=8, max_model_len=4096)
    args.update(kw)
    return EmulatedEngine(**args)


async def drain(engine, request: GenerateRequest):
    chunks = [c async for c in engine.generate(request)]
    return chunks


def run(coro):
    return asyncio.run(coro)


def test_output_is_max_tokens_of_deterministic_text():
    """Emulation ignores EOS: exactly max_tokens tokens; the same prompt gives the same text."""

    async def main():
        engine = make_engine(time_scale=0.1)
        await engine.start()
        a = await drain(engine, GenerateRequest("a", 12, prompt="hello world"))
        b = await drain(engine, GenerateRequest("b", 12, prompt="hello world"))
        c = await drain(engine, GenerateRequest("c", 12, prompt="something else"))
        await engine.shutdown()
        return a, b, c

    a, b, c = run(main())
    assert a[-1].num_output_tokens == 12 and a[-1].finish_reason == "length"
    assert all(ch.finish_reason is None for ch in a[:-1])
    assert sum(len(ch.token_ids) for ch in a) == 12
    text_a = "".join(ch.text for ch in a)
    assert len(text_a.split()) == 12
    assert text_a == "".join(ch.text for ch in b)
    assert text_a != "".join(ch.text for ch in c)


def test_token_id_prompt_counts_its_tokens():
    """A token-id prompt costs len(ids) prompt tokens; a text prompt the 4-chars rule."""

    async def main():
        engine = make_engine(time_scale=0.1)
        await engine.start()
        ids = await drain(engine, GenerateRequest("ids", 3, prompt_token_ids=tuple(range(50))))
        text = await drain(engine, GenerateRequest("txt", 3, prompt="x" * 400))
        await engine.shutdown()
        return ids, text

    ids, text = run(main())
    assert ids[-1].num_prompt_tokens == 50
    assert text[-1].num_prompt_tokens == 100


def test_throughput_comes_from_the_batch_not_per_request_pacing():
    """With max_num_seqs=4, 16 requests take ~4x as long as 4: requests share steps of one loop.

    A per-request sleep would finish all 16 in the time of 4.
    """

    async def timed(n: int) -> float:
        # 20 ms wall per step: a few ms of event-loop jitter per step (a loaded 2-core CI
        # machine) must not read as a batching effect (at 5 ms steps it measured 5.5x once).
        engine = make_engine(max_num_seqs=4, time_scale=2.0)
        await engine.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(drain(engine, GenerateRequest(f"r{i}", 20, prompt="p")) for i in range(n)))
        elapsed = time.perf_counter() - t0
        await engine.shutdown()
        return elapsed

    t4 = run(timed(4))  # 20 steps of 20 ms wall = 0.4 s
    t16 = run(timed(16))  # four waves: 1.6 s
    assert t4 == pytest.approx(0.4, rel=0.35)
    assert t16 / t4 == pytest.approx(4.0, rel=0.25)


def test_saturated_throughput_matches_the_throughput_model():
    """An emulated A100 and L4 at full batch deliver what predict_instance says (within 10%),
    and report it in accelerator time whatever the time scale.

    The model's steady state has staggered requests (each finish admits one new request, one
    prefill per step), so 8 closed-loop clients start an eighth of a request's time apart.
    """
    catalog = default_catalog()
    model = catalog.model("llama-3.1-8b")
    workload = Workload(mean_input_tokens=128, mean_output_tokens=32, max_request_tokens=4096)
    num_seqs = 8

    async def measure(accel_name: str, time_scale: float, request_s: float) -> tuple[float, float]:
        accel = catalog.accelerator(accel_name)
        engine = create_engine(
            "emulated",
            EngineSpec(
                model,
                plan_single_configuration(model, accel, workload, max_num_seqs=num_seqs).deployments[0],
                4096,
                time_scale=time_scale,
                stats_window_s=4 * request_s,
            ),
        )
        await engine.start()
        stop = asyncio.Event()

        async def client(i: int) -> None:
            await asyncio.sleep(i * request_s * time_scale / num_seqs)
            n = 0
            while not stop.is_set():
                await drain(engine, GenerateRequest(f"c{i}-{n}", 32, prompt="x" * 512))
                n += 1

        tasks = [asyncio.create_task(client(i)) for i in range(num_seqs)]
        await asyncio.sleep(2 * request_s * time_scale)
        before = engine.stats().total_output_tokens
        await asyncio.sleep(4 * request_s * time_scale)
        stats = engine.stats()
        stop.set()
        await asyncio.gather(*tasks)
        await engine.shutdown()
        return (stats.total_output_tokens - before) / (4 * request_s), stats.output_tokens_per_s

    for accel_name, scale in (("A100-SXM4-80GB", 0.2), ("L4", 0.05)):
        accel = catalog.accelerator(accel_name)
        coeffs = LatencyModel.default().coeffs(model, accel, 1)
        pred = predict_instance(model, accel, coeffs, 1, num_seqs, 0.9, 1.5, workload)
        measured, reported = run(measure(accel_name, scale, pred.batch_size / pred.requests_per_s))
        assert measured == pytest.approx(pred.output_tokens_per_s, rel=0.10), accel_name
        assert reported == pytest.approx(measured, rel=0.10), accel_name


def test_stats_show_running_waiting_and_kv_under_load():
    """While saturated: running = max_num_seqs, the rest wait, KV holds prompts + outputs."""

    async def main():
        engine = make_engine(max_num_seqs=2, time_scale=1.0)
        await engine.start()
        tasks = [asyncio.create_task(drain(engine, GenerateRequest(f"r{i}", 30, prompt="x" * 40))) for i in range(5)]
        await asyncio.sleep(0.055)  # about 5 steps in
        mid = engine.stats()
        await asyncio.gather(*tasks)
        end = engine.stats()
        await engine.shutdown()
        return mid, end

    mid, end = run(main())
    assert (mid.num_running, mid.num_waiting) == (2, 3)
    assert 2 * 10 < mid.kv_used_tokens <= 2 * (10 + 30)
    assert mid.output_tokens_per_s > 0
    assert (end.num_running, end.num_waiting, end.kv_used_tokens) == (0, 0, 0)
    assert end.total_output_tokens == 5 * 30


def test_abort_and_client_disconnect_free_the_kv_cache():
    """abort() ends the stream with finish_reason 'abort'; a consumer that stops reading frees
    its sequence too."""

    async def main():
        engine = make_engine(time_scale=1.0)
        await engine.start()
        gen = engine.generate(GenerateRequest("left", 1000, prompt="x" * 40))
        await gen.__anext__()
        await gen.aclose()
        after_close = engine.stats()

        async def consume():
            return await drain(engine, GenerateRequest("ab", 1000, prompt="x" * 40))

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.03)
        await engine.abort("ab")
        chunks = await task
        after_abort = engine.stats()
        await engine.shutdown()
        return after_close, chunks, after_abort

    after_close, chunks, after_abort = run(main())
    assert (after_close.num_running, after_close.kv_used_tokens) == (0, 0)
    assert chunks[-1].finish_reason == "abort" and chunks[-1].num_output_tokens < 1000
    assert (after_abort.num_running, after_abort.kv_used_tokens) == (0, 0)


def test_requests_that_cannot_fit_raise_typed_errors():
    """Prompt + max_tokens beyond the context, or a prompt beyond the KV cache: RequestTooLongError."""

    async def main():
        engine = make_engine(max_model_len=256, kv_capacity_tokens=128)
        await engine.start()
        errors = []
        for req in (
            GenerateRequest("ctx", 200, prompt_token_ids=tuple(range(100))),
            GenerateRequest("kv", 10, prompt_token_ids=tuple(range(200))),
        ):
            with pytest.raises(RequestTooLongError) as info:
                await drain(engine, req)
            errors.append(str(info.value))
        ok = await drain(engine, GenerateRequest("ok", 4, prompt_token_ids=(1, 2, 3)))
        await engine.shutdown()
        return errors, ok

    errors, ok = run(main())
    assert "exceeds the context of 256" in errors[0]
    assert "KV cache of 128" in errors[1]
    assert ok[-1].num_output_tokens == 4


def test_dead_engine_refuses_work_and_reports_unhealthy():
    async def main():
        engine = make_engine()
        with pytest.raises(EngineDeadError):
            await drain(engine, GenerateRequest("early", 1, prompt="x"))
        await engine.start()
        await engine.check_health()
        await engine.shutdown()
        with pytest.raises(EngineDeadError):
            await engine.check_health()
        with pytest.raises(EngineDeadError):
            await drain(engine, GenerateRequest("late", 1, prompt="x"))
        return engine.stats()

    assert run(main()).healthy is False


def test_engine_factory_by_name():
    """Unknown names list the known ones; vllm without local weights is refused before importing vllm."""
    catalog = default_catalog()
    model = catalog.model("llama-3.1-8b")
    wl = Workload(mean_input_tokens=128, mean_output_tokens=32, max_request_tokens=4096)
    plan = plan_single_configuration(model, catalog.accelerator("L4"), wl, max_num_seqs=8)
    spec = EngineSpec(model, plan.deployments[0], 4096)
    assert isinstance(create_engine("emulated", spec), EmulatedEngine)
    with pytest.raises(ValueError, match="known: emulated, vllm"):
        create_engine("tensorrt", spec)
    with pytest.raises(EngineError, match="needs local weights"):
        create_engine("vllm", spec)
    with pytest.raises(ConfigError, match="weights need"):
        plan_single_configuration(catalog.model("llama-3.1-70b"), catalog.accelerator("L4"), wl, max_num_seqs=8)


def test_speed_changes_slow_the_steps_from_their_time_after_the_first_step():
    """speed_changes=((t, 2),): steps take twice as long from t seconds of emulated time after the
    first step (a card throttling mid-run), in the wall time and in the reported step records."""

    async def timed() -> tuple[float, float, float]:
        engine = make_engine(max_num_seqs=1, time_scale=0.5, speed_changes=((0.2, 2.0),))
        await engine.start()
        t0 = time.perf_counter()
        await drain(engine, GenerateRequest("a", 20, prompt="p"))  # 20 steps of 10 ms: 0.2 s
        t1 = time.perf_counter()
        await drain(engine, GenerateRequest("b", 20, prompt="p"))  # now 20 ms each
        t2 = time.perf_counter()
        busy = engine.stats().steps.busy_s
        await engine.shutdown()
        return t1 - t0, t2 - t1, busy

    first, second, busy = run(timed())
    assert second / first == pytest.approx(2.0, rel=0.25)
    assert busy == pytest.approx(0.2 + 0.4, rel=0.1)
