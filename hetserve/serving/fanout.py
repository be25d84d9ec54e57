"""`n` > 1: one OpenAI request, n choices, served as n child generations placed together.

Where the fan-out happens, and why here. vLLM v1 itself splits a request with `n` > 1 into n
child requests (`vllm/v1/engine/parallel_sampling.py`, `ParentRequest`: child i is request
`f"{i}_{parent}"` with n=1 and, when the parent has a seed, seed + i) and merges their outputs
by `index`. hetserve does the same split one level up, at the router:
- Both engines serve it unchanged: the emulated engine and the vLLM engine each see n ordinary
  n=1 requests, so every engine behind the router supports `n` (the emulated engine still
  refuses, by name, the sampling fields it cannot honour, on every child).
- The scheduler's view stays one sequence per request: the tracker's outstanding work, the
  admission queue's slots and KV demand, and the engines' running counts all count the n
  children as n requests (an n=8 request is 8 requests' work, and is admitted or refused as 8).
- The children are placed together, on the instance the policy picks for the first
  (`AdmissionQueue.offer_group`): there the shared prompt is computed once and its KV blocks
  are reused by the other n-1 from vLLM's prefix cache, as they would be inside one vLLM
  engine. Spreading them would prefill the prompt n times on n instances.
- Each child then streams, retries and finishes on its own: a child whose instance fails is
  retried elsewhere (it loses the shared prefix, nothing else), and `finish_reason`, logprobs
  and token ids are per choice.

The merged answer is OpenAI's: `choices[i].index = i`, stream chunks each carry one choice's
index, `usage.prompt_tokens` counts the prompt once (the engine's count, from child 0) and
`completion_tokens` sums the children's. Plain asyncio, no ray import.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from hetserve.serving.errors import RequestError
from hetserve.serving.openai_api import INT64_MAX, Usage

if TYPE_CHECKING:
    from hetserve.serving.prepare import Prepared

__all__ = ["check_choices", "child_requests", "complete_choices", "stream_choices"]

# vLLM's greedy threshold (sampling_params._SAMPLING_EPS): below it sampling is argmax.
GREEDY_TEMPERATURE = 1e-5

BindChildren = Callable[[Sequence["Prepared"]], Awaitable[list[str]]]
CompleteOne = Callable[["Prepared", str], Awaitable[dict[str, Any]]]
StreamOne = Callable[["Prepared", str], AsyncIterator[dict[str, Any]]]
Abandon = Callable[[str, str], None]


def check_choices(n: int, temperature: float, seed: int | None) -> None:
    """Refuse `n` > 1 where vLLM refuses it (greedy sampling: n identical choices) and where
    the children's seeds (seed + i, as vLLM seeds them) would leave int64."""
    if n > 1 and temperature < GREEDY_TEMPERATURE:
        raise RequestError(
            400,
            f"n={n} needs temperature > 0: greedy sampling gives {n} identical choices (vLLM refuses it too)",
            param="n",
            code="invalid_value",
        )
    if seed is not None and seed + n - 1 > INT64_MAX:
        raise RequestError(
            400,
            f"seed={seed} + n-1 = {seed + n - 1} is beyond int64: choice i is seeded seed + i",
            param="seed",
            code="invalid_value",
        )


def child_requests(prepared: Prepared) -> list[Prepared]:
    """The n children of an n > 1 request: ids `{parent}-{i}`, seed + i when seeded, each with
    its own detokenizer (incremental detokenization is per stream) and with usage reported to
    the merge (which sums it)."""
    req = prepared.request
    out = []
    for i in range(prepared.n):
        child = dataclasses.replace(
            req,
            request_id=f"{req.request_id}-{i}",
            seed=req.seed + i if req.seed is not None else None,
        )
        detok = prepared.detokenizer.fresh() if prepared.detokenizer is not None else None
        out.append(dataclasses.replace(prepared, request=child, n=1, detokenizer=detok, include_usage=True))
    return out


def _merged_usage(usages: Sequence[dict[str, Any] | None], fallback_prompt_tokens: int) -> Usage:
    first = usages[0] if usages else None
    prompt = int(first["prompt_tokens"]) if first else fallback_prompt_tokens
    return Usage.of(prompt, sum(int(u["completion_tokens"]) for u in usages if u))


class _Children:
    """Runs one coroutine per child as a task, and on exit cancels those still running and
    abandons (in the router's books) those that never started: a child is dispatched before its
    task runs, and a task cancelled before its first step never reaches the code that would
    complete it."""

    def __init__(self, children: Sequence[Prepared], instance_ids: Sequence[str], abandon: Abandon):
        self.children = list(children)
        self.instance_ids = list(instance_ids)
        self._abandon = abandon
        self._started = [False] * len(self.children)
        self.tasks: list[asyncio.Task] = []

    def start(self, body: Callable[[int], Awaitable[Any]]) -> None:
        async def run(i: int) -> Any:
            self._started[i] = True
            return await body(i)

        self.tasks = [asyncio.get_running_loop().create_task(run(i)) for i in range(len(self.children))]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for i, started in enumerate(self._started):
            if not started:
                self._abandon(self.children[i].request.request_id, self.instance_ids[i])


async def complete_choices(
    prepared: Prepared, bind: BindChildren, complete_one: CompleteOne, abandon: Abandon
) -> dict[str, Any]:
    """Unary: the n children's responses merged into one with n choices. The first child that
    fails fails the request (the others are cancelled and their KV freed)."""
    children = child_requests(prepared)
    instance_ids = await bind(children)
    run = _Children(children, instance_ids, abandon)
    try:
        run.start(lambda i: complete_one(children[i], instance_ids[i]))
        done, _ = await asyncio.wait(run.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in run.tasks:
            failure = task.exception() if task in done else None
            if failure is not None:
                raise failure
        responses = [task.result() for task in run.tasks]
    finally:
        await run.close()
    merged = dict(responses[0])
    merged["id"] = prepared.request.request_id
    merged["created"] = prepared.created
    merged["choices"] = [{**r["choices"][0], "index": i} for i, r in enumerate(responses)]
    merged["usage"] = _merged_usage([r["usage"] for r in responses], prepared.num_prompt_tokens).model_dump()
    return merged


_DONE = object()


async def stream_choices(
    prepared: Prepared, bind: BindChildren, stream_one: StreamOne, abandon: Abandon
) -> AsyncGenerator[dict[str, Any], None]:
    """Streaming: the children's chunks as they come, each carrying its choice's index under the
    parent's id; then (with include_usage) one usage chunk for all n. A child's failure ends
    the stream with its error (the others are cancelled)."""
    children = child_requests(prepared)
    instance_ids = await bind(children)
    rid, created = prepared.request.request_id, prepared.created
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    usages: list[dict[str, Any] | None] = [None] * len(children)

    async def pump(i: int) -> None:
        try:
            async with aclosing(stream_one(children[i], instance_ids[i])) as chunks:  # type: ignore[type-var]
                async for item in chunks:
                    await queue.put((i, item))
            await queue.put((i, _DONE))
        except Exception as exc:  # handed to the merge, which raises it to the client
            await queue.put((i, exc))

    run = _Children(children, instance_ids, abandon)
    template: dict[str, Any] | None = None
    try:
        run.start(pump)
        left = len(children)
        while left:
            i, item = await queue.get()
            if item is _DONE:
                left -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            if not item["choices"]:  # the child's usage chunk: summed below
                usages[i] = item["usage"]
                template = item
                continue
            item["id"], item["created"] = rid, created
            item["choices"][0]["index"] = i
            yield item
    finally:
        await run.close()
    if prepared.include_usage and template is not None:
        usage = _merged_usage(usages, prepared.num_prompt_tokens)
        yield {**template, "id": rid, "created": created, "usage": usage.model_dump()}
