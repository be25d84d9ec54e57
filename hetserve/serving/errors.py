"""Refusals and failures with their HTTP status and OpenAI error body; one mapping for HTTP and handles.

Engine errors are typed (hetserve.engines.base) and arrive from the instance replica wrapped by
Ray; `from_exception` unwraps them and maps each class to a status code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hetserve.engines.base import EngineDeadError, EngineError, RequestTooLongError, UnsupportedParameterError
from hetserve.scheduling.base import NoInstanceError
from hetserve.serving.openai_api import ErrorBody, ErrorResponse

__all__ = ["RequestError", "from_exception", "from_validation_errors"]


class RequestError(Exception):
    """A request refused (4xx) or failed (5xx), carrying what the client needs to fix it.

    Raised by the router's Python methods as is (handle callers catch it) and rendered by the
    HTTP layer as `{"error": {"message", "type", "param", "code"}}` with `status_code`.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s  # 429 / 503: when to try again (HTTP Retry-After)

    def __reduce__(self):
        # Crosses Ray process boundaries: rebuild with every field, not only the message.
        return (RequestError, (self.status_code, self.message, self.type, self.param, self.code, self.retry_after_s))

    def body(self) -> dict[str, Any]:
        err = ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=err).model_dump()

    def headers(self) -> dict[str, str]:
        """HTTP headers of the answer: `Retry-After` (whole seconds, rounded up) on a 429 / 503."""
        return {} if self.retry_after_s is None else {"Retry-After": str(math.ceil(self.retry_after_s))}


def _root_cause(exc: BaseException) -> BaseException:
    """Unwrap Ray's RayTaskError chain down to the exception the replica raised."""
    seen = 0
    cause = getattr(exc, "cause", None)
    while seen < 10 and isinstance(cause, BaseException) and cause is not exc:
        exc, cause = cause, getattr(cause, "cause", None)
        seen += 1
    return exc


def from_exception(exc: BaseException) -> RequestError:
    """Map an engine/scheduler failure (possibly wrapped by Ray) to a RequestError."""
    if isinstance(exc, RequestError):
        return exc
    cause = _root_cause(exc)
    if isinstance(cause, RequestError):
        return cause
    if isinstance(cause, RequestTooLongError):
        return RequestError(400, str(cause), param="prompt", code="context_length_exceeded")
    if isinstance(cause, UnsupportedParameterError):
        return RequestError(400, str(cause), param=cause.param, code="unsupported_parameter")
    if isinstance(cause, NoInstanceError):
        return RequestError(503, str(cause), type="service_unavailable", code="no_instance")
    if isinstance(cause, EngineDeadError):
        return RequestError(503, f"instance unavailable: {cause}", type="service_unavailable", code="engine_dead")
    if isinstance(cause, EngineError):
        return RequestError(500, f"engine error: {cause}", type="internal_error", code="engine_error")
    return RequestError(500, f"internal error: {type(cause).__name__}: {cause}", type="internal_error")


def from_validation_errors(errors: Iterable[Mapping[str, Any]], drop_prefix: str | None = None) -> RequestError:
    """A 400 naming every invalid field by its pydantic `loc` (e.g. `body.max_tokens`) and value."""
    parts, first_param = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        path = ".".join(loc) or "(body)"
        param_loc = loc[1:] if drop_prefix is not None and loc[:1] == [drop_prefix] else loc
        if first_param is None:
            first_param = ".".join(param_loc) or None
        shown = repr(err.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        got = "" if err.get("type") == "missing" else f" (got {shown})"
        parts.append(f"{path}: {err.get('msg', 'invalid')}{got}")
    return RequestError(400, "; ".join(parts) or "invalid request", param=first_param, code="invalid_value")
