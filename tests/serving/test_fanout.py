"""`n` > 1 without Ray: the request body's bound, the refusals named by field, the n children
(ids, seeds, detokenizers) and the merge of their answers (choices by index, usage summed with
the prompt counted once), over a real emulated engine. The router's own path (admission,
placement together, HTTP) is in test_serving_app.py and, on vLLM, test_serving_vllm.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import ValidationError

from hetserve.engines.emulated import EmulatedEngine
from hetserve.records import LatencyCoeffs
from hetserve.serving.errors import RequestError
from hetserve.serving.fanout import child_requests, complete_choices, stream_choices
from hetserve.serving.openai_api import (
    MAX_N,
    ChatCompletionRequest,
    CompletionRequest,
    Usage,
    completion_chunk,
    completion_response,
)
from hetserve.serving.prepare import Prepared, RequestPreparer

MODEL = "m"
CHAT = [{"role": "user", "content": "hi"}]


def test_n_is_bounded_as_openai_documents_it():
    assert CompletionRequest(model=MODEL, prompt="x", n=MAX_N).n == MAX_N == 128
    assert ChatCompletionRequest(model=MODEL, messages=CHAT, n=3).n == 3
    for bad in (0, MAX_N + 1, 10_000):
        with pytest.raises(ValidationError) as info:
            CompletionRequest.model_validate({"model": MODEL, "prompt": "x", "n": bad})
        assert info.value.errors()[0]["loc"] == ("n",)


@pytest.mark.parametrize(
    ("param", "body"),
    [
        ("best_of", {"prompt": "x", "n": 3, "best_of": 5}),  # vLLM v1 has no best_of
        ("use_beam_search", {"prompt": "x", "n": 3, "use_beam_search": True}),
        ("n", {"prompt": "x", "n": 3, "temperature": 0}),  # greedy: n identical choices (vLLM refuses)
        ("n", {"messages": CHAT, "n": 2, "temperature": 0.0}),
        ("seed", {"prompt": "x", "n": 3, "seed": 2**63 - 2}),  # choice i is seeded seed + i
        ("n", {"prompt": "x", "n": MAX_N + 1}),
    ],
)
def test_unsupported_n_combinations_are_refused_by_name(param, body):
    with pytest.raises(RequestError) as err:
        RequestPreparer(MODEL, 8192, 2048).from_dict({"model": MODEL, **body})
    assert err.value.status_code == 400 and err.value.param == param, err.value.message


def test_children_are_seeded_distinctly_as_vllm_seeds_them():
    p = RequestPreparer(MODEL, 8192, 2048)
    prepared = p.from_dict({"model": MODEL, "prompt": "x", "n": 3, "seed": 7, "max_tokens": 5})
    kids = child_requests(prepared)
    assert prepared.n == 3 and [k.n for k in kids] == [1, 1, 1]
    assert [k.request.request_id for k in kids] == [f"{prepared.request.request_id}-{i}" for i in range(3)]
    assert [k.request.seed for k in kids] == [7, 8, 9]
    assert all(k.request.max_tokens == 5 and k.include_usage for k in kids)
    unseeded = child_requests(p.from_dict({"model": MODEL, "prompt": "x", "n": 2}))
    assert [k.request.seed for k in unseeded] == [None, None]


def _engine() -> EmulatedEngine:
    return EmulatedEngine(
        coeffs=LatencyCoeffs(a_p=0.0, b_p=0.0, a_d=0.0, c_d=0.0, b_d=0.002),
        kv_capacity_tokens=100_000,
        max_num_seqs=8,
        max_model_len=8192,
    )


class _Books:
    """What the router would do around the merge: bind every child to one instance, stream or
    complete each from the engine with the OpenAI builders, and remember abandonments."""

    def __init__(self, engine: EmulatedEngine):
        self.engine = engine
        self.bound: list[str] = []
        self.abandoned: list[str] = []
        self.closed: list[str] = []

    async def bind(self, children: list[Prepared]) -> list[str]:
        self.bound = [c.request.request_id for c in children]
        return ["inst-0"] * len(children)

    def abandon(self, request_id: str, instance_id: str) -> None:
        self.abandoned.append(request_id)

    async def stream_one(self, child: Prepared, instance_id: str):
        rid = child.request.request_id
        num_prompt = num_out = 0
        try:
            async for c in self.engine.generate(child.request):
                num_prompt, num_out = c.num_prompt_tokens, c.num_output_tokens
                yield completion_chunk(rid, MODEL, child.created, c.text, c.finish_reason)
            if child.include_usage:
                yield completion_chunk(rid, MODEL, child.created, "", None, Usage.of(num_prompt, num_out), False)
        finally:
            self.closed.append(rid)

    async def complete_one(self, child: Prepared, instance_id: str) -> dict[str, Any]:
        chunks = [c async for c in self.engine.generate(child.request)]
        text = "".join(c.text for c in chunks)
        usage = Usage.of(chunks[-1].num_prompt_tokens, chunks[-1].num_output_tokens)
        return completion_response(child.request.request_id, MODEL, text, chunks[-1].finish_reason, usage)


def _prepared(**body) -> Prepared:
    return RequestPreparer(MODEL, 8192, 2048).from_dict({"model": MODEL, "prompt": "x" * 400, **body})


def test_unary_n3_merges_three_choices_and_sums_usage():
    prepared = _prepared(n=3, seed=1, max_tokens=6)

    async def main():
        books = _Books(_engine())
        await books.engine.start()
        try:
            return await complete_choices(prepared, books.bind, books.complete_one, books.abandon), books
        finally:
            await books.engine.shutdown()

    out, books = asyncio.run(main())
    assert out["id"] == prepared.request.request_id and len(books.bound) == 3
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] == "length" and len(c["text"].split()) == 6 for c in out["choices"])
    assert len({c["text"] for c in out["choices"]}) == 3  # seeds 1, 2, 3: three different samples
    assert out["usage"] == {"prompt_tokens": 100, "completion_tokens": 18, "total_tokens": 118}  # prompt once


def test_streamed_n3_chunks_carry_their_choice_index_then_one_usage():
    prepared = _prepared(n=3, seed=1, max_tokens=5, stream=True, stream_options={"include_usage": True})

    async def main():
        books = _Books(_engine())
        await books.engine.start()
        try:
            return [c async for c in stream_choices(prepared, books.bind, books.stream_one, books.abandon)]
        finally:
            await books.engine.shutdown()

    chunks = asyncio.run(main())
    assert all(c["id"] == prepared.request.request_id for c in chunks)
    body, last = chunks[:-1], chunks[-1]
    assert {c["choices"][0]["index"] for c in body} == {0, 1, 2}
    for i in range(3):
        mine = [c["choices"][0] for c in body if c["choices"][0]["index"] == i]
        assert len("".join(m["text"] for m in mine).split()) == 5
        assert [m["finish_reason"] for m in mine][-1] == "length"
    assert last["choices"] == [] and last["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 15,
        "total_tokens": 115,
    }


def test_a_client_leaving_mid_stream_closes_every_child():
    """The consumer stops after the first chunk: each child's stream is closed (its request
    aborted on the engine); none is left running or unaccounted."""
    prepared = _prepared(n=3, seed=1, max_tokens=2000, stream=True)

    async def main():
        books = _Books(_engine())
        await books.engine.start()
        try:
            async with asyncio.timeout(30):
                gen = stream_choices(prepared, books.bind, books.stream_one, books.abandon)
                first = await gen.__anext__()
                await gen.aclose()
                t0 = time.monotonic()
                while books.engine.stats().num_running and time.monotonic() - t0 < 5:
                    await asyncio.sleep(0.01)
                return first, books, books.engine.stats()
        finally:
            await books.engine.shutdown()

    first, books, stats = asyncio.run(main())
    assert first["choices"][0]["text"]
    assert stats.num_running == 0 and stats.num_waiting == 0
    assert len(books.closed) + len(books.abandoned) == 3
