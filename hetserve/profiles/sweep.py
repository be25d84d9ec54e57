"""`hetserve profile`'s library part: drive one engine through a short sweep, fit, write a profile file.

The sweep sends, for each prompt length and batch size, that many requests at once and waits for
them (each decodes `output_tokens` tokens), so the engine's steps cover prefill-heavy and
decode-only steps over a range of batch sizes and context lengths. The engine's own step records
(`InstanceStats.steps`, the same ones the router's online fit reads) are then fitted with the same
code (`OnlineFit` without a prior and without forgetting, i.e. `model.latency.fit_nonneg` on the
steps' sufficient statistics). The attention term q_p is not identifiable from step records and
is kept from the prior (the latency model's coefficients for the type).

A profile file is JSON `{"profiles": [LatencyProfile, ...]}`, the format of the shipped
data/profiles.json, keyed by (model, accelerator, tp) with the engine version in `engine`;
`hetserve plan --profiles FILE` and the app builder's `profiles=FILE` put its profiles ahead of
the shipped ones. No ray import.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hetserve.config import ConfigError
from hetserve.engines.base import Engine, GenerateRequest
from hetserve.model.latency import LatencyModel, load_profiles
from hetserve.model.online_fit import OnlineFit
from hetserve.records import LatencyCoeffs, LatencyProfile, StepTotals

__all__ = [
    "Sweep",
    "fit_step_totals",
    "latency_model_with",
    "load_profile_file",
    "run_sweep",
    "write_profile_file",
]


@dataclass(frozen=True)
class Sweep:
    """Which (prompt length, batch size) points to run, and how many tokens each request decodes."""

    prompt_tokens: tuple[int, ...] = (32, 128, 512)
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    output_tokens: int = 24

    def points(self, max_num_seqs: int, max_model_len: int) -> list[tuple[int, int]]:
        out = []
        for p in self.prompt_tokens:
            if p + self.output_tokens > max_model_len:
                continue
            for b in self.batch_sizes:
                out.append((p, min(b, max_num_seqs)))
        if not out:
            raise ConfigError(f"profile sweep: no prompt length fits max_model_len {max_model_len}")
        return out


def _prompt_ids(num_tokens: int, salt: int, vocab_size: int) -> tuple[int, ...]:
    return tuple((7 + 31 * (i + 1) + 97 * salt) % max(2, vocab_size - 1) + 1 for i in range(num_tokens))


async def run_sweep(engine: Engine, sweep: Sweep, max_num_seqs: int, max_model_len: int, vocab_size: int) -> StepTotals:
    """Run the sweep on a started engine; returns its step records over the sweep."""

    async def one(rid: str, prompt: tuple[int, ...]) -> None:
        req = GenerateRequest(
            rid, max_tokens=sweep.output_tokens, prompt_token_ids=prompt, num_prompt_tokens=len(prompt), ignore_eos=True
        )
        async for _ in engine.generate(req):
            pass

    k = 0
    for prompt_len, batch in sweep.points(max_num_seqs, max_model_len):
        jobs = []
        for _ in range(batch):
            k += 1
            jobs.append(one(f"profile-{k}", _prompt_ids(prompt_len, k, vocab_size)))
        await asyncio.gather(*jobs)
    steps = engine.stats().steps
    if steps is None or steps.num_steps == 0:
        raise ConfigError("profile: the engine reported no step records")
    return steps


def fit_step_totals(steps: StepTotals, prior: LatencyCoeffs) -> tuple[LatencyCoeffs, float]:
    """Coefficients from step records alone (no prior weight, no forgetting; q_p from `prior`
    scaled by the measured speed); and the fit's relative RMS step-time error."""
    fit = OnlineFit(prior, half_life_s=math.inf, prior_steps=0.0)
    fit.update(steps)
    return fit.coeffs, fit.rel_rmse


def write_profile_file(path: Path, profiles: Iterable[LatencyProfile]) -> None:
    """Write (or merge into) a profile file: profiles of the same (model, accelerator, TP,
    engine) already there are replaced."""
    held: dict[tuple, LatencyProfile] = {}
    if path.exists():
        for p in load_profile_file(path):
            held[(p.model, p.accelerator, p.tp, p.engine)] = p
    for p in profiles:
        held[(p.model, p.accelerator, p.tp, p.engine)] = p
    body = {"profiles": [p.to_dict() for p in sorted(held.values(), key=lambda p: (p.model, p.accelerator, p.tp))]}
    path.write_text(json.dumps(body, indent=2) + "\n")


def load_profile_file(path: str | Path) -> list[LatencyProfile]:
    """The profiles of a profile file; a clear error naming the file and field otherwise."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"profiles: file {str(p)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"profiles: {p}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("profiles"), list):
        raise ConfigError(f"profiles: {p}: expected an object with a 'profiles' list")
    out = []
    for i, d in enumerate(raw["profiles"]):
        try:
            out.append(LatencyProfile.from_dict(d))
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"profiles: {p}: profiles[{i}]: {exc}") from None
    return out


def latency_model_with(profile_files: Sequence[str | Path] | str | Path | None) -> LatencyModel:
    """The shipped latency model with the given profile files' profiles ahead of the shipped ones
    (a measured profile of this engine beats any older one for the same model, type and TP)."""
    if profile_files is None:
        return LatencyModel.default()
    files = [profile_files] if isinstance(profile_files, (str, Path)) else list(profile_files)
    extra = [p for f in files for p in load_profile_file(f)]
    keys = {(p.model, p.accelerator, p.tp) for p in extra}
    shipped = [p for p in load_profiles() if (p.model, p.accelerator, p.tp) not in keys]
    from hetserve.catalog import default_catalog

    return LatencyModel([*shipped, *extra], default_catalog().models)
