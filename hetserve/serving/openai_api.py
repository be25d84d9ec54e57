"""OpenAI-compatible request and response bodies (pydantic: they cross the HTTP boundary).

Only what hetserve serves: one choice per request (n=1), text or token-id prompts, no logprobs.
Fields of the OpenAI API that do not change what an instance computes (penalties, user) are
accepted and ignored; anything unknown is refused with the field named. No ray import here.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ErrorBody",
    "ErrorResponse",
    "StreamOptions",
    "Usage",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "model_list",
    "new_request_id",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = Field(default=False, description="Send a last chunk with token usage.")


class _Sampling(_Body):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str = Field(description="Served model name (see /v1/models).")
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: Literal[1] = Field(default=1, description="Choices per request; hetserve serves one.")
    stream: bool = Field(default=False, description="Server-sent events, one per chunk, then `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None, description="Stop strings (a real engine only).")
    seed: int | None = None
    ignore_eos: bool = Field(default=False, description="Generate exactly max_tokens (vLLM extension).")
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    user: str | None = None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Sampling):
    """POST /v1/completions. `prompt` is text or a list of token ids (one prompt)."""

    prompt: str | list[int] = Field(description="Prompt text, or the prompt as token ids.")
    max_tokens: int = Field(default=16, ge=1, description="Output tokens to generate at most.")
    echo: Literal[False] = False
    logprobs: None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty_ids(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("a token-id prompt needs at least one token")
            bad = [t for t in value if t < 0]
            if bad:
                raise ValueError(f"token ids must be >= 0 (got {bad[0]})")
        return value


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated OpenAI name of max_completion_tokens.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: Literal[False] | None = None

    def render_prompt(self) -> str:
        """One text prompt: a plain role-tagged transcript ending with the assistant's turn.

        The emulated engine only counts its tokens; a vLLM engine receives it as text.
        """
        lines = [f"<|{m.role}|>\n{m.text}\n" for m in self.messages]
        return "".join(lines) + "<|assistant|>\n"

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorBody


# One random draw per process, then a counter: unique across router replicas and restarts, without
# a uuid4 (an os.urandom call) per request, which was 1.7% of the router's CPU under load.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def completion_response(
    request_id: str, model: str, text: str, finish_reason: str | None, usage: Usage, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage.model_dump(),
    }


def completion_chunk(
    request_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None,
    usage: Usage | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
    choices = [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}]
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices if with_choice else [],
        "usage": usage.model_dump() if usage is not None else None,
    }


def chat_response(
    request_id: str, model: str, text: str, finish_reason: str | None, usage: Usage, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage.model_dump(),
    }


def chat_chunk(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    usage: Usage | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices if with_choice else [],
        "usage": usage.model_dump() if usage is not None else None,
    }


def model_list(model: str, created: int, max_model_len: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": created, "owned_by": "hetserve", "max_model_len": max_model_len}
        ],
    }
