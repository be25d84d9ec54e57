"""Factories for the simulator tests: fake instances of chosen speeds and small request streams."""

from __future__ import annotations

from hetserve.records import LatencyCoeffs
from hetserve.sim import PlannedInstance, SimRequests, poisson_requests
from hetserve.sim.fluid import saturated_capacity

# A fast instance's step-time coefficients (seconds); slower instances scale every term.
FAST = LatencyCoeffs(a_p=5e-5, b_p=2e-3, a_d=2e-4, c_d=1e-8, b_d=1e-2)
MAX_MODEL_LEN = 4096


def scaled(coeffs: LatencyCoeffs, slowdown: float) -> LatencyCoeffs:
    return LatencyCoeffs(
        coeffs.a_p * slowdown,
        coeffs.b_p * slowdown,
        coeffs.a_d * slowdown,
        coeffs.c_d * slowdown,
        coeffs.b_d * slowdown,
        coeffs.q_p * slowdown,
    )


def make_instances(
    slowdowns: list[float],
    kv_capacity_tokens: int = 60_000,
    max_num_seqs: int = 32,
    predicted: list[float] | None = None,
    requests: SimRequests | None = None,
) -> list[PlannedInstance]:
    """One instance per slowdown factor (1 = FAST). Seeds C with `predicted`, else with each
    instance's measured saturated rate on `requests` (what a perfect plan would predict)."""
    specs = []
    for k, slow in enumerate(slowdowns):
        spec = PlannedInstance(
            f"i{k:02d}",
            f"dep-x{slow:g}",
            f"fake-x{slow:g}",
            scaled(FAST, slow),
            kv_capacity_tokens,
            max_num_seqs,
            predicted[k] if predicted else 1.0,
        )
        if predicted is None:
            cap = saturated_capacity(spec, requests or make_requests(1.0, 600), num_requests=600)
            spec = PlannedInstance(
                spec.instance_id,
                spec.deployment,
                spec.accelerator,
                spec.coeffs,
                spec.kv_capacity_tokens,
                spec.max_num_seqs,
                cap.output_tokens_per_s,
            )
        specs.append(spec)
    return specs


def make_requests(
    rate_per_s: float,
    num_requests: int,
    seed: int = 0,
    mean_prompt_tokens: float = 300,
    mean_output_tokens: float = 60,
    lengths: str = "lognormal",
) -> SimRequests:
    return poisson_requests(
        rate_per_s, num_requests, mean_prompt_tokens, mean_output_tokens, MAX_MODEL_LEN, seed=seed, lengths=lengths
    )
