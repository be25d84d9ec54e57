"""OpenAI answers rendered from one request's stream of engine chunks: the unary response, the
stream chunks, the server-sent events, and the JSON error answer.

The router decides where a request runs and yields its `TokenChunk`s (retries included); what
the client sees is decided here, from the request as prepared (`Prepared`: completion or chat,
logprobs, token ids, usage) and those chunks only. Plain functions, no router state.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from hetserve.engines.base import TokenChunk
from hetserve.serving.errors import RequestError
from hetserve.serving.openai_api import (
    Usage,
    chat_chunk,
    chat_logprobs,
    chat_response,
    completion_chunk,
    completion_logprobs,
    completion_response,
)
from hetserve.serving.prepare import Prepared

__all__ = ["error_response", "response_of", "sse_of", "stream_of"]


def error_response(err: RequestError) -> JSONResponse:
    """An OpenAI-style JSON error with its status and headers (Retry-After)."""
    return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers())


async def response_of(prepared: Prepared, model: str, chunks: AsyncIterator[TokenChunk]) -> dict[str, Any]:
    """The unary response: the chunks' text, token ids and logprobs joined, usage from the
    engine's counts (the preparer's prompt count until the engine reports its own)."""
    parts: list[str] = []
    ids: list[int] = []
    logprobs: list[Any] = []
    finish, num_out, num_prompt = None, 0, prepared.num_prompt_tokens
    prompt_ids = prepared.request.prompt_token_ids
    async for chunk in chunks:
        parts.append(prepared.text_of(chunk))
        ids.extend(chunk.token_ids)
        logprobs.extend(chunk.logprobs or ())
        finish, num_out = chunk.finish_reason or finish, chunk.num_output_tokens
        num_prompt = chunk.num_prompt_tokens or num_prompt  # the engine's count
        prompt_ids = chunk.prompt_token_ids or prompt_ids
    usage = Usage.of(num_prompt, num_out)
    wants_lp = prepared.request.logprobs is not None
    extra = choice_extra = None
    if prepared.return_token_ids:
        extra = {"prompt_token_ids": list(prompt_ids) if prompt_ids is not None else None}
        choice_extra = {"token_ids": ids}
    rid, text = prepared.request.request_id, "".join(parts)
    if prepared.kind == "completion":
        lp = completion_logprobs(logprobs) if wants_lp else None
        return completion_response(rid, model, text, finish, usage, prepared.created, lp, extra, choice_extra)
    lp = chat_logprobs(logprobs) if wants_lp else None
    return chat_response(rid, model, text, finish, usage, prepared.created, lp, extra, choice_extra)


async def stream_of(
    prepared: Prepared, model: str, chunks: AsyncIterator[TokenChunk]
) -> AsyncGenerator[dict[str, Any], None]:
    """OpenAI stream chunks; a chat stream carries the assistant role in its first chunk, and
    the usage chunk comes last when the client asked for it."""
    rid, created = prepared.request.request_id, prepared.created
    num_out, num_prompt, first, offset = 0, prepared.num_prompt_tokens, True, 0
    wants_lp = prepared.request.logprobs is not None
    async for chunk in chunks:
        num_out = chunk.num_output_tokens
        num_prompt = chunk.num_prompt_tokens or num_prompt  # the engine's count
        text = prepared.text_of(chunk)
        items = list(chunk.logprobs or ())
        if prepared.kind == "completion":
            lp = completion_logprobs(items, offset) if wants_lp else None
            yield completion_chunk(rid, model, created, text, chunk.finish_reason, logprobs=lp)
        else:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            lp = chat_logprobs(items) if wants_lp else None
            yield chat_chunk(rid, model, created, delta, chunk.finish_reason, logprobs=lp)
        offset += len(text)
        first = False
    if prepared.include_usage:
        usage = Usage.of(num_prompt, num_out)
        if prepared.kind == "completion":
            yield completion_chunk(rid, model, created, "", None, usage=usage, with_choice=False)
        else:
            yield chat_chunk(rid, model, created, {}, None, usage=usage, with_choice=False)


async def sse_of(chunks: AsyncGenerator[dict[str, Any], None]) -> StreamingResponse | JSONResponse:
    """Server-sent events. The first chunk is awaited before answering, so refusals and
    placement failures still get their HTTP status; later failures end the stream with an
    error event."""
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except RequestError as err:
        return error_response(err)

    async def events() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield f"data: {json.dumps(first)}\n\n"
            async for item in chunks:
                yield f"data: {json.dumps(item)}\n\n"
        except RequestError as err:
            yield f"data: {json.dumps(err.body())}\n\n"
        finally:
            await chunks.aclose()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
