"""Simulated request streams: trace replay with a rate multiplier, or a seeded Poisson process.

Each request carries its true output length (known only to the simulated engine, as
`Sequence.num_target_tokens`) and the `max_tokens` a realistic client would send (all the router
sees). Plain Python, no ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hetserve.traces import ArrivalSpan, Trace

__all__ = ["MaxTokensRule", "SimRequests", "poisson_requests", "requests_from_trace"]

MaxTokensRule = Literal["cap", "pow2"]
# The client's max_tokens under the "cap" rule: a fixed generous limit, as chat front-ends send.
DEFAULT_MAX_TOKENS_CAP = 2048


@dataclass(frozen=True)
class SimRequests(ArrivalSpan):
    """Requests sorted by arrival (seconds from 0), as parallel integer arrays."""

    name: str
    arrival_s: np.ndarray
    num_prompt_tokens: np.ndarray
    num_output_tokens: np.ndarray  # true length: the engine stops here (EOS)
    max_tokens: np.ndarray  # what the client asked for; >= num_output_tokens
    clipped: np.ndarray | None = None  # per request: was its prompt shortened to fit max_model_len

    @property
    def num_clipped(self) -> int:
        return int(np.count_nonzero(self.clipped)) if self.clipped is not None else 0

    def take(self, index: np.ndarray | slice) -> SimRequests:
        """The requests at `index` (a mask, indices or a slice), every array alike."""
        return SimRequests(
            self.name,
            self.arrival_s[index],
            self.num_prompt_tokens[index],
            self.num_output_tokens[index],
            self.max_tokens[index],
            None if self.clipped is None else self.clipped[index],
        )

    @property
    def requests_per_s(self) -> float:
        """Mean offered rate over the arrival span."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else float("inf")

    @property
    def mean_prompt_tokens(self) -> float:
        return float(self.num_prompt_tokens.mean())

    @property
    def mean_output_tokens(self) -> float:
        return float(self.num_output_tokens.mean())

    def scaled(self, rate_scale: float) -> SimRequests:
        """The same requests offered `rate_scale` times faster (arrival times divided)."""
        if rate_scale <= 0:
            raise ValueError(f"rate_scale must be > 0 (got {rate_scale})")
        return SimRequests(
            self.name,
            self.arrival_s / rate_scale,
            self.num_prompt_tokens,
            self.num_output_tokens,
            self.max_tokens,
            self.clipped,
        )

    def shuffled_lengths(self, seed: int = 0) -> SimRequests:
        """The same arrival times with the (prompt, output, max_tokens) triples permuted (seeded).

        A trace's request mix drifts over its hour (the Azure conv trace's mean output per
        5-minute bin moves by +-14%), and a saturated instance's output tokens/s moves with it, so
        a throughput window, and the backlog that shifts which requests it serves, would measure
        the drift more than the policy. Shuffling keeps the real arrival pattern and the real
        length distribution but makes the mix stationary."""
        perm = np.random.default_rng(seed).permutation(len(self))
        shuffled = self.take(perm)
        return SimRequests(
            self.name,
            self.arrival_s,
            shuffled.num_prompt_tokens,
            shuffled.num_output_tokens,
            shuffled.max_tokens,
            shuffled.clipped,
        )

    def tiled(self, copies: int) -> SimRequests:
        """The stream repeated back to back `copies` times (each copy starts one mean gap after the
        previous ends), for runs long enough to reach steady state on a short trace."""
        if copies < 1:
            raise ValueError(f"copies must be >= 1 (got {copies})")
        if copies == 1:
            return self
        period = self.duration_s + (self.duration_s / max(len(self) - 1, 1))
        arrival = np.concatenate([self.arrival_s + k * period for k in range(copies)])
        rep = lambda a: np.tile(a, copies)  # noqa: E731
        return SimRequests(
            self.name,
            arrival,
            rep(self.num_prompt_tokens),
            rep(self.num_output_tokens),
            rep(self.max_tokens),
            None if self.clipped is None else rep(self.clipped),
        )

    def head(self, num_requests: int) -> SimRequests:
        return self.take(slice(0, num_requests))

    def sample(self, num_requests: int) -> SimRequests:
        """`num_requests` requests spread evenly over the whole stream (keeps its length mix)."""
        if num_requests >= len(self):
            return self
        return self.take(np.unique(np.linspace(0, len(self) - 1, num_requests).round().astype(np.int64)))


def _client_max_tokens(
    outputs: np.ndarray, prompts: np.ndarray, rule: MaxTokensRule, cap: int, max_model_len: int
) -> np.ndarray:
    """max_tokens a client sends. "cap": min(cap, room left in the context); "pow2": the true
    output rounded up to a power of two (a client that knows its task roughly). Never below the
    true output (the engine stops at EOS, never at max_tokens)."""
    if rule == "cap":
        asked = np.minimum(cap, max_model_len - prompts)
    elif rule == "pow2":
        asked = np.left_shift(1, np.ceil(np.log2(np.maximum(outputs, 1))).astype(np.int64))
        asked = np.minimum(asked, max_model_len - prompts)
    else:
        raise ValueError(f"unknown max_tokens rule {rule!r}; known: cap, pow2")
    return np.maximum(asked, outputs).astype(np.int64)


def _fit_context(
    prompts: np.ndarray, outputs: np.ndarray, max_model_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip prompts so prompt + output <= max_model_len (a client truncating its context rather
    than being refused; the Azure traces hold prompts up to 14k tokens). Returns the clipped mask."""
    outputs = np.minimum(outputs, max_model_len - 1)
    limit = max_model_len - outputs
    clipped = prompts > limit
    return np.maximum(1, np.minimum(prompts, limit)), outputs, clipped


def requests_from_trace(
    trace: Trace,
    max_model_len: int,
    rate_scale: float = 1.0,
    max_tokens_rule: MaxTokensRule = "cap",
    max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
) -> SimRequests:
    """Replay a trace: its arrival pattern (compressed by `rate_scale`) and token counts."""
    prompts, outputs, clipped = _fit_context(
        trace.input_tokens.astype(np.int64), trace.output_tokens.astype(np.int64), max_model_len
    )
    max_tokens = _client_max_tokens(outputs, prompts, max_tokens_rule, max_tokens_cap, max_model_len)
    reqs = SimRequests(trace.name, trace.arrival_s.astype(float), prompts, outputs, max_tokens, clipped)
    return reqs.scaled(rate_scale) if rate_scale != 1.0 else reqs


def poisson_requests(
    rate_per_s: float,
    num_requests: int,
    mean_prompt_tokens: float,
    mean_output_tokens: float,
    max_model_len: int,
    seed: int = 0,
    lengths: Literal["fixed", "exponential", "lognormal"] = "lognormal",
    max_tokens_rule: MaxTokensRule = "cap",
    max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
) -> SimRequests:
    """A seeded Poisson process with a length distribution of the given means: "fixed" (every
    request the same), "exponential", or "lognormal" (sigma 1, heavy-tailed like the traces)."""
    if rate_per_s <= 0 or num_requests <= 0:
        raise ValueError(f"need rate_per_s > 0 and num_requests > 0 (got {rate_per_s}, {num_requests})")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_per_s, num_requests)
    arrival = np.cumsum(gaps) - gaps[0]

    def draw(mean: float) -> np.ndarray:
        if lengths == "fixed":
            x = np.full(num_requests, mean)
        elif lengths == "exponential":
            x = rng.exponential(mean, num_requests)
        elif lengths == "lognormal":
            sigma = 1.0
            x = rng.lognormal(np.log(mean) - sigma * sigma / 2.0, sigma, num_requests)
        else:
            raise ValueError(f"unknown length distribution {lengths!r}; known: fixed, exponential, lognormal")
        return np.maximum(1, np.round(x)).astype(np.int64)

    prompts, outputs, clipped = _fit_context(draw(mean_prompt_tokens), draw(mean_output_tokens), max_model_len)
    max_tokens = _client_max_tokens(outputs, prompts, max_tokens_rule, max_tokens_cap, max_model_len)
    return SimRequests(f"poisson-{rate_per_s:g}rps", arrival, prompts, outputs, max_tokens, clipped)
