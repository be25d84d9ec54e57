"""The router's front door: API keys and a request-body size limit, before any body is parsed.

An ASGI middleware on the router's FastAPI app (plain Python, no ray). It runs before FastAPI
reads and validates the body, so an unauthenticated or oversized request costs no parsing and
no scheduler work:

- API keys (optional): `Authorization: Bearer <key>`; anything else is 401 in OpenAI's error
  shape. The router holds only the keys' SHA-256 digests (`key_digests`), read at build time
  from an environment variable or a file (never from the config YAML), and compares digests in
  constant time. `/health` stays open (load balancers probe it without a key).
- Server-Timing: every answer carries `server-timing: router;dur=<ms>`, the time from the door
  to the first byte of the answer (the router's share of the latency).
- Body limit: a Content-Length above `max_body_bytes` is refused with 413 at once; a body sent
  without a length (chunked) is counted as it arrives and refused the same way when it passes
  the limit.
- Load shedding: a generation request (POST to `SHED_PATHS`) is refused with 429 + Retry-After
  here, before its body is read, when the router's `shed` hook says every batch slot and queue
  place is spoken for, counting the requests let in whose bodies are still arriving (reading a
  body is a round trip to Serve's proxy, slow under overload). Under overload most requests are
  refused, each at almost no cost to the router's event loop, which keeps it answering fast.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.exceptions import HTTPException

__all__ = ["BodyTooLarge", "Door", "DoorMiddleware", "Refusal", "configure", "digest", "load_api_key_digests"]

OPEN_PATHS = frozenset({"/health", "/-/healthz", "/-/routes"})
SHED_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


class Refusal(Protocol):
    """What the shed hook returns (the router's RequestError): status, OpenAI body, headers."""

    status_code: int

    def body(self) -> dict[str, Any]: ...

    def headers(self) -> dict[str, str]: ...


# The router's hook: given the requests let in whose bodies are still arriving, the refusal a new
# generation request gets now, or None to let it in.
ShedHook = Callable[[int], Refusal | None]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_api_key_digests(env_var: str | None, path: str | None) -> tuple[str, ...]:
    """Digests of the API keys in `$env_var` (comma-separated) and in the file at `path` (one
    per line, `#` comments). Raises ValueError naming the source when it is set but empty or
    unreadable: a door configured to lock must not silently open."""
    keys: list[str] = []
    if env_var:
        raw = os.environ.get(env_var)
        if not raw or not raw.strip():
            raise ValueError(f"api_key_env: environment variable {env_var!r} is not set or empty")
        keys += [k.strip() for k in raw.split(",") if k.strip()]
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"api_key_file: cannot read {path!r}: {exc.strerror or exc}") from None
        found = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise ValueError(f"api_key_file: {path!r} holds no key")
        keys += found
    return tuple(sorted({digest(k) for k in keys}))


@dataclass(slots=True)
class Door:
    """What the door checks; configured by the router replica at start (mutable holder, since the
    middleware is built with the module-level FastAPI app before any replica exists)."""

    key_digests: tuple[str, ...] = ()
    max_body_bytes: int | None = None
    open_paths: frozenset[str] = field(default=OPEN_PATHS)
    shed: ShedHook | None = None  # the router's "refuse now?" (module docstring)
    arriving: int = 0  # generation requests let in whose bodies are still being read

    def configure(self, key_digests: Iterable[str], max_body_bytes: int | None, shed: ShedHook | None = None) -> None:
        self.key_digests = tuple(key_digests)
        self.max_body_bytes = max_body_bytes
        self.shed = shed

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self.key_digests:
            return True
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = digest(token.strip())
        # Compare against every key (no early exit), each in constant time.
        ok = False
        for d in self.key_digests:
            ok |= hmac.compare_digest(presented, d)
        return ok


def _json(payload: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None):
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers + (extra or []), body


def _error(status: int, message: str, type_: str, code: str, extra: list[tuple[bytes, bytes]] | None = None):
    return _json({"error": {"message": message, "type": type_, "param": None, "code": code}}, extra)


class BodyTooLarge(HTTPException):
    """A body without Content-Length passed the limit while being read. An HTTPException so that
    FastAPI's body reader re-raises it as is (it turns other errors into a 400); the router
    renders it in OpenAI's error shape."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")
        self.limit = limit


# The door of this process. Serve pickles the ingress class *by value* together with its FastAPI
# app (middleware included), so the replica's app holds a copy of whatever object it was built
# with; this module is imported by reference, so its global is the one the replica configures.
_CURRENT = Door()


def configure(key_digests: Iterable[str], max_body_bytes: int | None, shed: ShedHook | None = None) -> None:
    """Set this process's door (the router replica calls it at start)."""
    _CURRENT.configure(key_digests, max_body_bytes, shed)


class DoorMiddleware:
    """ASGI middleware enforcing this process's door on every HTTP request (module docstring)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        door = _CURRENT
        t0 = time.perf_counter()
        inner_send = send

        async def timed_send(message: dict) -> None:
            # Server-Timing: how long the router took to start answering (its share of latency,
            # without the proxy's and the network's).
            if message.get("type") == "http.response.start":
                dur = (time.perf_counter() - t0) * 1000
                headers = list(message.get("headers") or []) + [(b"server-timing", f"router;dur={dur:.2f}".encode())]
                message = {**message, "headers": headers}
            await inner_send(message)

        send = timed_send
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        headers = dict(scope.get("headers") or [])
        if path not in door.open_paths and not door.authorized(headers):
            await _send(
                send,
                401,
                *_error(
                    401,
                    "missing or invalid API key: send `Authorization: Bearer <key>`",
                    "authentication_error",
                    "invalid_api_key",
                    [(b"www-authenticate", b"Bearer")],
                ),
            )
            return
        if door.shed is not None and path in SHED_PATHS and scope.get("method") == "POST":
            refusal = door.shed(door.arriving)
            if refusal is not None:
                await _send(send, refusal.status_code, *_refusal(refusal))
                return
            door.arriving += 1
            arrived = False
            inner_receive = receive

            async def arriving_receive() -> dict:
                nonlocal arrived
                message = await inner_receive()
                if not arrived and not (message.get("type") == "http.request" and message.get("more_body")):
                    arrived = True  # the whole body is here (or the client left)
                    door.arriving -= 1
                return message

            try:
                await self._limited(door, scope, arriving_receive, send, headers)
            finally:
                if not arrived:
                    door.arriving -= 1
            return
        await self._limited(door, scope, receive, send, headers)

    async def _limited(self, door: Door, scope: dict, receive: Any, send: Any, headers: dict[bytes, bytes]) -> None:
        """The app behind the body-size limit."""
        limit = door.max_body_bytes
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False
            if too_big:
                await _send(send, 413, *_too_large(limit))
                return
        seen = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send(send, 413, *_too_large(limit))


def _refusal(refusal: Refusal) -> tuple[list[tuple[bytes, bytes]], bytes]:
    return _json(refusal.body(), [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()])


def _too_large(limit: int):
    return _error(
        413, f"request body is larger than the limit of {limit} bytes", "invalid_request_error", "body_too_large"
    )


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
