"""Request preparation at the router: validate an OpenAI body and turn it into a GenerateRequest.

Checks the model name, token ids and that prompt + max_tokens fit the context the plan sized KV
caches for; refusals are RequestErrors carrying their HTTP status. Kept apart from the router so
it is plain Python (no ray import) and testable without a cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hetserve.engines.base import GenerateRequest
from hetserve.serving.errors import RequestError, from_validation_errors
from hetserve.serving.openai_api import ChatCompletionRequest, CompletionRequest, new_request_id

__all__ = ["Prepared", "RequestPreparer", "count_text_tokens"]


def count_text_tokens(text: str) -> int:
    """Prompt tokens of a text prompt at the router: the engines' 4-characters rule
    (`Engine.count_prompt_tokens`), passed down so engine and scheduler agree."""
    return max(1, len(text) // 4)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated request, ready to place."""

    kind: str  # "completion" | "chat"
    request: GenerateRequest
    num_prompt_tokens: int
    include_usage: bool
    created: int


@dataclass(frozen=True, slots=True)
class RequestPreparer:
    """What the served model accepts, and the preparation of each kind of request against it."""

    model: str
    max_model_len: int  # longest request (prompt + output)
    vocab_size: int
    default_max_tokens: int = 256  # a chat request's max_tokens when it names none

    def completion(self, body: CompletionRequest) -> Prepared:
        self._check_model(body.model)
        rid = new_request_id("cmpl")
        if isinstance(body.prompt, list):
            too_big = [t for t in body.prompt if t >= self.vocab_size]
            if too_big:
                raise RequestError(
                    400,
                    f"prompt: token id {too_big[0]} is outside the vocabulary (size {self.vocab_size})",
                    param="prompt",
                    code="invalid_value",
                )
            num_prompt = len(body.prompt)
            text, ids = None, tuple(body.prompt)
        else:
            num_prompt = count_text_tokens(body.prompt)
            text, ids = body.prompt, None
        self._check_length(num_prompt, body.max_tokens)
        return _prepared("completion", body, rid, body.max_tokens, num_prompt, text, ids)

    def chat(self, body: ChatCompletionRequest) -> Prepared:
        self._check_model(body.model)
        prompt = body.render_prompt()
        num_prompt = count_text_tokens(prompt)
        max_tokens = body.requested_max_tokens()
        if max_tokens is None:
            max_tokens = max(1, min(self.default_max_tokens, self.max_model_len - num_prompt))
        self._check_length(num_prompt, max_tokens)
        return _prepared("chat", body, new_request_id("chatcmpl"), max_tokens, num_prompt, prompt, None)

    def from_dict(self, request: dict[str, Any]) -> Prepared:
        """A handle call's dict: a chat request if it has `messages`, else a completion."""
        if not isinstance(request, dict):
            raise RequestError(400, f"request must be a dict of OpenAI fields (got {type(request).__name__})")
        try:
            if "messages" in request:
                return self.chat(ChatCompletionRequest.model_validate(request))
            return self.completion(CompletionRequest.model_validate(request))
        except ValidationError as err:
            raise from_validation_errors(err.errors()) from None

    def _check_model(self, model: str) -> None:
        if model != self.model:
            raise RequestError(
                404,
                f"model {model!r} is not served here; served: {self.model!r}",
                param="model",
                code="model_not_found",
            )

    def _check_length(self, num_prompt_tokens: int, max_tokens: int) -> None:
        limit = self.max_model_len
        if max_tokens > limit:
            raise RequestError(
                400,
                f"max_tokens={max_tokens} is out of range: the context holds {limit} tokens (prompt + output)",
                param="max_tokens",
                code="invalid_value",
            )
        if num_prompt_tokens + max_tokens > limit:
            raise RequestError(
                400,
                f"prompt of {num_prompt_tokens} tokens + max_tokens {max_tokens} = "
                f"{num_prompt_tokens + max_tokens} tokens is longer than the context of {limit} tokens",
                param="prompt",
                code="context_length_exceeded",
            )


def _prepared(
    kind: str,
    body: CompletionRequest | ChatCompletionRequest,
    request_id: str,
    max_tokens: int,
    num_prompt_tokens: int,
    prompt: str | None,
    prompt_token_ids: tuple[int, ...] | None,
) -> Prepared:
    """The GenerateRequest both kinds share: the prompt, plus the sampling fields of the body."""
    req = GenerateRequest(
        request_id=request_id,
        max_tokens=max_tokens,
        prompt=prompt,
        prompt_token_ids=prompt_token_ids,
        num_prompt_tokens=num_prompt_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_strings,
        ignore_eos=body.ignore_eos,
    )
    return Prepared(kind, req, num_prompt_tokens, body.include_usage, int(time.time()))
