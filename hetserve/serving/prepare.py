"""Request preparation at the router: validate an OpenAI body and turn it into a GenerateRequest.

Checks the model name, token ids and that prompt + max_tokens fit the context the plan sized KV
caches for; refusals are RequestErrors carrying their HTTP status. Kept apart from the router so
it is plain Python (no ray import) and testable without a cluster.

With the served model's tokenizer (serving/tokenizer.py) every prompt is turned into token ids
here: a text prompt is encoded, a chat is rendered by the model's chat template, so the count the
scheduler places by, the context check and what the instance runs are one and the same. Without
one (pure emulation) text prompts keep the 4-characters-per-token estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hetserve.engines.base import GenerateRequest, TokenChunk
from hetserve.records import DEFAULT_MAX_TOKENS, RequestInfo
from hetserve.serving.errors import RequestError, from_validation_errors
from hetserve.serving.fanout import check_choices
from hetserve.serving.openai_api import ChatCompletionRequest, CompletionRequest, new_request_id
from hetserve.serving.tokenizer import IncrementalDetokenizer, PromptTokenizer, TokenizerError

__all__ = ["Prepared", "RequestPreparer", "count_text_tokens", "placement_info"]


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
    detokenizer: IncrementalDetokenizer | None = None  # set when the engine streams ids only
    return_token_ids: bool = False
    n: int = 1  # choices; above 1 the router fans out n child generations (serving/fanout.py)

    def text_of(self, chunk: TokenChunk) -> str:
        """A chunk's new text: the engine's, or the router's incremental detokenization."""
        if self.detokenizer is None:
            return chunk.text
        return self.detokenizer.step(chunk.token_ids)


def placement_info(prepared: Prepared, now_s: float) -> RequestInfo:
    """What the scheduler places by: the prompt's tokens as prepared (exact with a tokenizer,
    whether the client sent text or ids) and max_tokens."""
    req = prepared.request
    return RequestInfo(req.request_id, prepared.num_prompt_tokens, req.max_tokens, arrival_s=now_s)


@dataclass(frozen=True, slots=True)
class RequestPreparer:
    """What the served model accepts, and the preparation of each kind of request against it."""

    model: str
    max_model_len: int  # longest request (prompt + output)
    vocab_size: int
    default_max_tokens: int = DEFAULT_MAX_TOKENS  # a chat request's max_tokens when it names none
    tokenizer: PromptTokenizer | None = None
    detokenize: bool = False  # the engine streams token ids without text (emulated + tokenizer)

    def completion(self, body: CompletionRequest) -> Prepared:
        self._check_model(body.model)
        rid = new_request_id("cmpl")
        if isinstance(body.prompt, list):
            self._check_ids(body.prompt, "prompt")
            num_prompt = len(body.prompt)
            text, ids = None, tuple(body.prompt)
        elif self.tokenizer is not None:
            text, ids = None, tuple(self.tokenizer.encode(body.prompt))
            num_prompt = len(ids)
        else:
            num_prompt = count_text_tokens(body.prompt)
            text, ids = body.prompt, None
        self._check_sampling(body, body.max_tokens)
        self._check_length(num_prompt, body.max_tokens)
        return self._prepared("completion", body, rid, body.max_tokens, num_prompt, text, ids)

    def chat(self, body: ChatCompletionRequest) -> Prepared:
        self._check_model(body.model)
        prompt: str | None
        ids: tuple[int, ...] | None
        if self.tokenizer is not None:
            try:
                chat_ids = tuple(self.tokenizer.chat(body.message_dicts()))
            except TokenizerError as exc:
                raise RequestError(400, f"messages: {exc}", param="messages", code="invalid_value") from None
            except Exception as exc:  # a template may raise on messages it does not accept
                raise RequestError(
                    400, f"messages: the model's chat template refused them: {exc}", param="messages"
                ) from None
            prompt, ids, num_prompt = None, chat_ids, len(chat_ids)
        else:
            prompt, ids = body.render_prompt(), None
            num_prompt = count_text_tokens(prompt)
        max_tokens = body.requested_max_tokens()
        if max_tokens is None:
            max_tokens = max(1, min(self.default_max_tokens, self.max_model_len - num_prompt))
        self._check_sampling(body, max_tokens)
        self._check_length(num_prompt, max_tokens)
        return self._prepared("chat", body, new_request_id("chatcmpl"), max_tokens, num_prompt, prompt, ids)

    def _prepared(
        self,
        kind: str,
        body: CompletionRequest | ChatCompletionRequest,
        request_id: str,
        max_tokens: int,
        num_prompt_tokens: int,
        prompt: str | None,
        prompt_token_ids: tuple[int, ...] | None,
    ) -> Prepared:
        """The GenerateRequest both kinds share: the prompt, plus the sampling fields of the body;
        with a detokenizer when the instances stream ids only."""
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
            stop_token_ids=tuple(body.stop_token_ids or ()),
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            min_tokens=body.min_tokens,
            allowed_token_ids=tuple(body.allowed_token_ids or ()),
            logprobs=body.num_logprobs,
        )
        detok = self.tokenizer.detokenizer() if self.detokenize and self.tokenizer is not None else None
        return Prepared(
            kind, req, num_prompt_tokens, body.include_usage, int(time.time()), detok, body.return_token_ids, body.n
        )

    def _check_ids(self, ids: list[int], param: str) -> None:
        too_big = [t for t in ids if t >= self.vocab_size]
        if too_big:
            raise RequestError(
                400,
                f"{param}: token id {too_big[0]} is outside the vocabulary (size {self.vocab_size})",
                param=param,
                code="invalid_value",
            )

    def _check_sampling(self, body: CompletionRequest | ChatCompletionRequest, max_tokens: int) -> None:
        if body.stop_token_ids:
            self._check_ids(body.stop_token_ids, "stop_token_ids")
        if body.allowed_token_ids:
            self._check_ids(body.allowed_token_ids, "allowed_token_ids")
        if body.n > 1:
            check_choices(body.n, body.temperature, body.seed)
        if body.min_tokens > max_tokens:
            raise RequestError(
                400,
                f"min_tokens={body.min_tokens} must be <= max_tokens={max_tokens}",
                param="min_tokens",
                code="invalid_value",
            )

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
