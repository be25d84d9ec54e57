"""OpenAI-compatible request and response bodies (pydantic: they cross the HTTP boundary).

Only what hetserve serves: text or token-id prompts, `n` choices per request (1..128, OpenAI's
documented bound; the router fans them out, serving/fanout.py). Sampling fields pass through to
the engine, bounded as vLLM bounds them (logprobs/top_logprobs 0..20, vLLM's default
max_logprobs); an engine that cannot honour one refuses it with the field named.
`user` is accepted and ignored; anything unknown is refused with the field named. No ray import.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ErrorBody",
    "ErrorResponse",
    "StreamOptions",
    "Usage",
    "chat_chunk",
    "chat_logprobs",
    "chat_response",
    "completion_chunk",
    "completion_logprobs",
    "completion_response",
    "model_list",
    "new_request_id",
]


MAX_LOGPROBS = 20  # vLLM's default max_logprobs: the most alternatives per token it returns
# Choices per request: OpenAI documents n <= 128 (vLLM's own bound, VLLM_MAX_N_SEQUENCES, is 16384);
# each choice is a full generation, so the smaller bound also bounds one request's fan-out.
MAX_N = 128
# Bounds on what one request may carry (vLLM's server refuses a seed beyond int64 too); the
# router's body-size limit bounds the rest.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 1024
MAX_MESSAGES = 4096
MAX_CONTENT_PARTS = 256
StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = Field(default=False, description="Send a last chunk with token usage.")


class _Sampling(_Body):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str = Field(description="Served model name (see /v1/models).")
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=MAX_N, description=f"Choices per request (1-{MAX_N}), each a full generation.")
    stream: bool = Field(default=False, description="Server-sent events, one per chunk, then `data: [DONE]`.")
    stream_options: StreamOptions | None = None
    stop: StopString | list[StopString] | None = Field(
        default=None,
        max_length=MAX_STOP_STRINGS,
        description=f"Stop strings (a real engine only): at most {MAX_STOP_STRINGS}, each 1-{MAX_STOP_CHARS} chars.",
    )
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX, description="Sampling seed (int64).")
    ignore_eos: bool = Field(default=False, description="Generate exactly max_tokens (vLLM extension).")
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    stop_token_ids: list[int] | None = Field(default=None, description="Token ids that end the output (vLLM).")
    min_tokens: int = Field(default=0, ge=0, description="Output tokens before EOS/stop may end it (vLLM).")
    allowed_token_ids: list[int] | None = Field(
        default=None, min_length=1, description="Sample only these token ids (vLLM extension)."
    )
    return_token_ids: bool = Field(
        default=False, description="Also return the prompt's and the output's token ids (vLLM extension)."
    )
    user: str | None = None

    @field_validator("stop_token_ids", "allowed_token_ids")
    @classmethod
    def _non_negative_stop_ids(cls, value: list[int] | None) -> list[int] | None:
        bad = [t for t in value or () if t < 0]
        if bad:
            raise ValueError(f"token ids must be >= 0 (got {bad[0]})")
        return value

    @field_validator("stream_options")
    @classmethod
    def _stream_options_need_stream(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream", False):
            raise ValueError("only allowed when stream is true")
        return value

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

    prompt: Annotated[str, StringConstraints(min_length=1)] | list[int] = Field(
        description="Prompt text (not empty), or the prompt as token ids."
    )
    max_tokens: int = Field(default=16, ge=1, description="Output tokens to generate at most.")
    echo: Literal[False] = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS, description="Top alternatives per token.")

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

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
    content: str | Annotated[list[TextPart], Field(max_length=MAX_CONTENT_PARTS)] = Field(
        description="Text, or a list of text parts (null is refused, as vLLM does)."
    )
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

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated OpenAI name of max_completion_tokens.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = Field(default=None, description="Return each output token's log-probability.")
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS, description="Alternatives per token.")

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def message_dicts(self) -> list[dict[str, Any]]:
        """The messages as a chat template reads them (content as one text)."""
        out = []
        for m in self.messages:
            d: dict[str, Any] = {"role": m.role, "content": m.text}
            if m.name is not None:
                d["name"] = m.name
            out.append(d)
        return out

    def render_prompt(self) -> str:
        """The fallback without a tokenizer (pure emulation): a plain role-tagged transcript
        ending with the assistant's turn, whose tokens are estimated. With a tokenizer the
        router renders the model's chat template instead (serving/tokenizer.py)."""
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


def completion_logprobs(items: list[Any], text_offset: int = 0) -> dict[str, Any]:
    """OpenAI completions `logprobs` for TokenLogprob items (text offsets from `text_offset`)."""
    offsets, pos = [], text_offset
    for t in items:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{tok: lp for _, tok, lp in t.top} for t in items],
        "text_offset": offsets,
    }


def chat_logprobs(items: list[Any]) -> dict[str, Any]:
    """OpenAI chat `logprobs` for TokenLogprob items."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {
        "content": [
            {**entry(t.token, t.logprob), "top_logprobs": [entry(tok, lp) for _, tok, lp in t.top]} for t in items
        ]
    }


def completion_response(
    request_id: str,
    model: str,
    text: str,
    finish_reason: str | None,
    usage: Usage,
    created: int | None = None,
    logprobs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    choice_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs, **(choice_extra or {})}
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage.model_dump(),
        **(extra or {}),
    }


def completion_chunk(
    request_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None,
    usage: Usage | None = None,
    with_choice: bool = True,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices = [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}]
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices if with_choice else [],
        "usage": usage.model_dump() if usage is not None else None,
    }


def chat_response(
    request_id: str,
    model: str,
    text: str,
    finish_reason: str | None,
    usage: Usage,
    created: int | None = None,
    logprobs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    choice_extra: dict[str, Any] | None = None,
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
                "logprobs": logprobs,
                **(choice_extra or {}),
            }
        ],
        "usage": usage.model_dump(),
        **(extra or {}),
    }


def chat_chunk(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    usage: Usage | None = None,
    with_choice: bool = True,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}]
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
