"""The served model's tokenizer at the router: exact prompt token counts, the chat template, and
incremental detokenization of streamed token ids. Plain Python, no ray import.

Loaded from a local directory only (HF files: tokenizer.json / tokenizer_config.json with its
chat_template): `local_files_only=True` and HF_HUB_OFFLINE=1, so serving never reaches the hub.
A completion prompt is encoded with the tokenizer's special tokens (BOS), as vLLM encodes one; a
chat is rendered by the template with its own generation prompt
(`apply_chat_template(messages, add_generation_prompt=True)`), which already holds any BOS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["IncrementalDetokenizer", "PromptTokenizer", "TokenizerError", "load_tokenizer"]

# Output vocabulary of the emulated engine: whole lower-case words that start a word, so the
# text of any sequence of them re-encodes to exactly those ids (a client counting tokens agrees).
# Read from the vocabulary's pieces, not from decoding one id alone: a word-start piece is
# "Ġword" in byte-level BPE (GPT-2, Llama 3) and "▁word" in SentencePiece (Llama 2, Mistral), and
# SentencePiece decoders drop the space of a sequence's first piece, so "▁word" alone decodes to
# "word", without the space that marks it.
_WORD_PIECE = re.compile("^[\u0120\u2581][a-z]{2,12}$")
_MAX_OUTPUT_VOCAB = 256


class TokenizerError(ValueError):
    """The tokenizer path is missing or not a loadable local tokenizer."""


class IncrementalDetokenizer:
    """Text of streamed token ids, piece by piece, as vLLM's detokenizer yields it.

    Wraps `tokenizers.decoders.DecodeStream`, which holds back bytes of a character split across
    tokens until it is whole, so concatenated pieces equal decoding all ids at once.
    """

    def __init__(self, backend: Any, skip_special_tokens: bool = True):
        from tokenizers.decoders import DecodeStream

        self._backend = backend
        self._skip_special_tokens = skip_special_tokens
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)

    def fresh(self) -> IncrementalDetokenizer:
        """A new detokenizer over the same tokenizer, for another stream (state is per stream)."""
        return IncrementalDetokenizer(self._backend, self._skip_special_tokens)

    def step(self, token_ids: Iterable[int]) -> str:
        parts = []
        for token_id in token_ids:
            piece = self._stream.step(self._backend, int(token_id))
            if piece:
                parts.append(piece)
        return "".join(parts)


@dataclass(frozen=True)
class PromptTokenizer:
    """A loaded HF tokenizer and what the router needs from it."""

    path: str
    hf: Any  # transformers.PreTrainedTokenizerBase

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        """A completion prompt's ids (special tokens included, as vLLM adds them)."""
        return list(self.hf.encode(text))

    def chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """A chat's ids: the model's chat template with its generation prompt."""
        if not getattr(self.hf, "chat_template", None):
            raise TokenizerError(f"tokenizer at {self.path!r} has no chat template")
        out = self.hf.apply_chat_template(list(messages), add_generation_prompt=True)
        ids = out["input_ids"] if not isinstance(out, list) else out
        return [int(t) for t in ids]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.hf.decode(list(token_ids), skip_special_tokens=True)

    def detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self.hf.backend_tokenizer)

    def _round_trips(self, token_ids: list[int]) -> bool:
        return self.hf.encode(self.hf.decode(token_ids), add_special_tokens=False) == token_ids

    def output_vocabulary(self, limit: int = _MAX_OUTPUT_VOCAB) -> tuple[int, ...]:
        """Token ids the emulated engine may emit: each a word-start piece of a whole word whose
        text (alone, and repeated) encodes back to those ids, so a client re-tokenizing the
        output counts exactly the emitted tokens. Deterministic (ascending ids)."""
        out: list[int] = []
        for token_id in range(self.vocab_size):
            piece = self.hf.convert_ids_to_tokens(token_id)
            if not isinstance(piece, str) or not _WORD_PIECE.match(piece):
                continue
            if not self._round_trips([token_id]) or not self._round_trips([token_id, token_id]):
                continue
            out.append(token_id)
            if len(out) >= limit:
                break
        if len(out) < 2:
            raise TokenizerError(f"tokenizer at {self.path!r}: found no whole-word tokens to emit")
        return tuple(out)


def load_tokenizer(path: str) -> PromptTokenizer:
    """The tokenizer in the local directory `path` (no hub access, ever)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not os.path.isdir(path):
        raise TokenizerError(f"tokenizer path {path!r} is not a local directory")
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/... for unloadable dirs
        raise TokenizerError(f"cannot load a tokenizer from {path!r}: {exc}") from None
    if not getattr(hf, "is_fast", False):
        raise TokenizerError(f"tokenizer at {path!r} is not a fast (tokenizers) tokenizer")
    return PromptTokenizer(path, hf)
