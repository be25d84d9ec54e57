"""The two ways `hetserve bench` talks to a running app: the OpenAI HTTP endpoint or the router's
Python handle. Both send one streamed completion per trace request and time it the same way.

A request is `prompt_token_ids` of the trace's prompt length with `max_tokens` = the trace's
output length and `ignore_eos` (the emulated engine always stops at max_tokens; vLLM is told to),
so the engines do exactly the work the trace recorded, as in the simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["BenchClient", "HandleClient", "HttpClient", "Outcome", "completion_body", "error_kind"]

# A fixed in-vocabulary token id: prompts are lengths only (the traces hold no text).
PROMPT_TOKEN_ID = 100


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it; wall times from `time.monotonic()`."""

    first_token_s: float | None
    finish_s: float | None
    num_output_tokens: int
    error: str | None = None  # kind, e.g. "429 rate_limit_exceeded", "503 instance_unavailable"


@dataclass(frozen=True, slots=True)
class InstanceCounter:
    """An instance's cumulative output tokens, as its engine counts them."""

    instance_id: str
    deployment: str
    total_output_tokens: int


def completion_body(model: str, num_prompt_tokens: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": [PROMPT_TOKEN_ID] * int(num_prompt_tokens),
        "max_tokens": int(max_tokens),
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def error_kind(exc: BaseException) -> str:
    """`<status> <code>` for hetserve's RequestError (also wrapped by Ray), else the type name."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        code = getattr(exc, "code", None) or getattr(exc, "type", None) or ""
        return f"{status} {code}".strip()
    cause = getattr(exc, "cause", None)
    if cause is not None and cause is not exc:
        return error_kind(cause)
    return type(exc).__name__


class BenchClient(Protocol):
    model: str

    async def send(self, num_prompt_tokens: int, max_tokens: int) -> Outcome: ...

    async def counters(self) -> list[InstanceCounter]: ...

    async def close(self) -> None: ...


def _usage_tokens(chunk: dict[str, Any]) -> int | None:
    usage = chunk.get("usage")
    return int(usage["completion_tokens"]) if usage else None


def _has_text(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


async def _time_stream(chunks: AsyncIterator[dict[str, Any]]) -> Outcome:
    first = None
    num_out = 0
    async for chunk in chunks:
        if "error" in chunk:  # an error event inside a started stream
            err = chunk["error"]
            return Outcome(first, None, num_out, f"stream {err.get('code') or err.get('type') or 'error'}")
        if first is None and _has_text(chunk):
            first = time.monotonic()
        n = _usage_tokens(chunk)
        if n is not None:
            num_out = n
    return Outcome(first, time.monotonic(), num_out)


class HandleClient:
    """The router's `generate_stream` handle method; fresh per-instance counters from the instance
    replicas themselves (each asked by replica id, see replica_router.TARGET_KWARG)."""

    def __init__(self, app_name: str, model: str, router_deployment: str = "router"):
        from ray import serve

        self.model = model
        self._app = app_name
        self._router = serve.get_deployment_handle(router_deployment, app_name=app_name)
        self._stream = self._router.options(stream=True)
        self._instance_handles: dict[str, Any] = {}

    async def send(self, num_prompt_tokens: int, max_tokens: int) -> Outcome:
        body = completion_body(self.model, num_prompt_tokens, max_tokens)
        try:
            return await _time_stream(self._stream.generate_stream.remote(body))
        except Exception as exc:  # refusals and failures are results here, counted by kind
            return Outcome(None, None, 0, error_kind(exc))

    async def counters(self) -> list[InstanceCounter]:
        import asyncio

        from ray import serve

        from hetserve.serving.replica_router import TARGET_KWARG

        views = await self._router.instances.remote()
        calls = []
        for v in views:
            dep = v["deployment"]
            if dep not in self._instance_handles:
                self._instance_handles[dep] = serve.get_deployment_handle(dep, app_name=self._app)
            calls.append(self._instance_handles[dep].stats.remote(**{TARGET_KWARG: v["instance_id"]}))
        fresh = await asyncio.gather(*calls, return_exceptions=True)
        out = []
        for v, f in zip(views, fresh, strict=True):
            total = v["total_output_tokens"] or 0
            if isinstance(f, dict) and f.get("instance_id") == v["instance_id"]:
                total = f["stats"]["total_output_tokens"]
            out.append(InstanceCounter(v["instance_id"], v["deployment"], int(total)))
        return out

    async def close(self) -> None:
        return None


class HttpClient:
    """The OpenAI endpoint (`POST /v1/completions`, server-sent events); counters from
    `GET /v1/hetserve/instances` (the instances' last stats reports, up to a period old)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 3600.0):
        import httpx

        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, limits=limits)

    async def send(self, num_prompt_tokens: int, max_tokens: int) -> Outcome:
        body = completion_body(self.model, num_prompt_tokens, max_tokens)
        try:
            async with self._http.stream("POST", "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    text = await resp.aread()
                    try:
                        code = json.loads(text)["error"].get("code") or ""
                    except (ValueError, KeyError, TypeError, AttributeError):
                        code = ""
                    return Outcome(None, None, 0, f"{resp.status_code} {code}".strip())
                return await _time_stream(self._events(resp))
        except Exception as exc:
            return Outcome(None, None, 0, type(exc).__name__)

    @staticmethod
    async def _events(resp) -> AsyncIterator[dict[str, Any]]:
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])

    async def counters(self) -> list[InstanceCounter]:
        resp = await self._http.get("/v1/hetserve/instances")
        resp.raise_for_status()
        return [
            InstanceCounter(v["instance_id"], v["deployment"], int(v["total_output_tokens"] or 0))
            for v in resp.json()["data"]
        ]

    async def plan(self) -> dict[str, Any]:
        resp = await self._http.get("/v1/hetserve/plan")
        resp.raise_for_status()
        return resp.json()

    async def close(self) -> None:
        await self._http.aclose()
