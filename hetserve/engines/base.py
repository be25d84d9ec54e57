"""The engine boundary: one ABC that the emulated and the vLLM engines implement.

A Serve replica holds one `Engine` chosen by name and never branches on which it is.
No ray or vllm import here.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hetserve.records import InstanceStats

__all__ = [
    "Engine",
    "EngineDeadError",
    "EngineError",
    "GenerateRequest",
    "RequestTooLongError",
    "TokenChunk",
    "TokenLogprob",
    "UnsupportedParameterError",
]


class EngineError(RuntimeError):
    """Base of typed engine errors; the router maps them to HTTP status codes."""


class RequestTooLongError(EngineError):
    """The prompt (plus max_tokens) does not fit the model's context or the KV cache (HTTP 400)."""


class EngineDeadError(EngineError):
    """The engine failed and cannot serve (HTTP 503)."""


class UnsupportedParameterError(EngineError):
    """The request sets a field this engine cannot honour (HTTP 400 naming `param`)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param

    def __reduce__(self):  # crosses Ray process boundaries with its field
        return (UnsupportedParameterError, (self.param, str(self)))


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation request as the engine sees it (already validated by the router).

    Exactly one of `prompt` (text) or `prompt_token_ids` is set. `ignore_eos` forces exactly
    max_tokens output tokens (trace replay); the emulated engine always behaves so.
    """

    request_id: str
    max_tokens: int
    prompt: str | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    num_prompt_tokens: int | None = None  # known to the router (tokenizer or token ids)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = field(default=())
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    allowed_token_ids: tuple[int, ...] = field(default=())
    logprobs: int | None = None  # top alternatives per output token (0: the sampled one only)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One output token's log-probability and its top alternatives (id, text, logprob)."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """Newly generated output since the previous chunk of the same request."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    num_prompt_tokens: int
    num_output_tokens: int  # cumulative
    finish_reason: str | None = None  # "stop" | "length" | "abort" when finished
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per token id, when requested
    prompt_token_ids: tuple[int, ...] | None = None  # what the engine ran, in the first chunk


class Engine(abc.ABC):
    """An LLM engine inside one instance (Serve replica)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load weights / start the loop. Called once before any generate()."""

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenChunk]:
        """Stream output chunks; the last one carries finish_reason. Raises EngineError subclasses."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a request (client went away); frees its KV."""

    @abc.abstractmethod
    def stats(self) -> InstanceStats:
        """Engine-measured running/waiting/KV usage and delivered output tokens/s."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise EngineDeadError if the engine cannot serve."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Release the engine's resources."""

    def count_prompt_tokens(self, prompt: str) -> int:
        """Tokens of a text prompt, for admission checks at the router. Engines with a real
        tokenizer override this; the default is the 4-characters-per-token rule of thumb."""
        return max(1, len(prompt) // 4)
