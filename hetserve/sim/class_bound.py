"""The class-aware fluid bound, measured in the simulator and checked there.

Per configuration (deployment) and request class, one instance is saturated in the simulator with
that class alone (`sim.fluid.saturated_capacity`, the same measurement as the mix-average bound),
giving mu[j, k] in requests/s; the LP of `model.classes.solve_class_lp` then splits the classes
over the configurations. Because the LP assumes an instance serving a mix delivers its
time-weighted pure-class rates, the bound is validated too: each configuration is saturated with
the class mix the LP gives it, and the validated bound is the rate those measured instances serve
in the workload's proportions. The model-derived figures (the planner's `steady_state` per class)
sit beside them. Plain Python, no ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hetserve.model.classes import ClassLP, RequestClasses, model_class_rates, same_mix_rate, solve_class_lp
from hetserve.records import PlannedInstance
from hetserve.scheduling.hetero_classes import ClassTable
from hetserve.sim.fluid import fluid_bound, saturated_capacity
from hetserve.sim.workload import SimRequests

__all__ = ["ClassBound", "class_bound", "class_table", "config_groups", "mix_sample"]

# Requests per saturation run (an even sample of the class, or of the LP's mix).
SAMPLE_REQUESTS: int | None = None  # None: every request (sampling is ~3% noisy on heavy tails)
# Requests in a validation run (the LP's mix drawn from the classes).
MIX_REQUESTS = 8000


def config_groups(instances: Sequence[PlannedInstance]) -> tuple[list[str], list[PlannedInstance], np.ndarray]:
    """Deployments in first-seen order, a representative instance of each, instance counts."""
    names: list[str] = []
    reps: list[PlannedInstance] = []
    counts: list[int] = []
    for s in instances:
        if s.deployment not in names:
            names.append(s.deployment)
            reps.append(s)
            counts.append(0)
        counts[names.index(s.deployment)] += 1
    return names, reps, np.asarray(counts, dtype=float)


def mix_sample(requests: SimRequests, labels: np.ndarray, mix: np.ndarray, size: int, seed: int = 0) -> SimRequests:
    """`size` requests whose classes follow `mix` (request fractions), drawn without bias from
    each class's own requests (cycled when a class has fewer), in a seeded random order."""
    idx: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for k, q in enumerate(mix):
        m = int(round(q * size))
        pool = np.flatnonzero(labels == k)
        if m <= 0 or len(pool) == 0:
            continue
        idx.append(np.resize(rng.permutation(pool), m))
    take = rng.permutation(np.concatenate(idx))
    sub = requests.take(take)
    return SimRequests(sub.name, np.zeros(len(sub)), sub.num_prompt_tokens, sub.num_output_tokens, sub.max_tokens)


@dataclass(frozen=True)
class ClassBound:
    """Every figure of one cluster x workload, in requests/s of the workload's mix (multiply by
    `mean_output_tokens` for output tokens/s)."""

    configs: list[str]
    counts: np.ndarray
    classes: RequestClasses
    proportions: np.ndarray  # p_k
    class_mean_prompt: np.ndarray
    class_mean_output: np.ndarray
    mean_output_tokens: float
    mu_sim: np.ndarray  # [config, class] saturated requests/s, simulator
    mu_model: np.ndarray  # the same from the throughput model
    mix_measured: float  # sim/fluid.py's bound (all instances on the whole mix), requests/s
    mix_sim: float  # same-mix time-sharing on mu_sim
    mix_model: float  # same-mix time-sharing on mu_model
    lp_sim: ClassLP
    lp_model: ClassLP
    validated: float  # lp_sim's mixes saturated in the simulator, served in the workload mix
    validated_per_config: np.ndarray  # requests/s per instance of each config under its LP mix
    mix_resampled: float  # every config saturated with the workload mix drawn like the LP mixes

    @property
    def headroom_resampled(self) -> float:
        """Validated class-aware bound over the mix-average bound measured the same way (same
        sample size and drawing), so the two share their sampling noise's sources."""
        return self.validated / self.mix_resampled - 1.0

    @property
    def headroom(self) -> float:
        """Validated class-aware bound over the measured mix-average bound, minus 1."""
        return self.validated / self.mix_measured - 1.0

    @property
    def headroom_lp(self) -> float:
        """The LP's own figure: class-aware over same-mix, both in the time-sharing model (sim mu)."""
        return self.lp_sim.requests_per_s / self.mix_sim - 1.0

    @property
    def headroom_model(self) -> float:
        return self.lp_model.requests_per_s / self.mix_model - 1.0

    @property
    def bound_requests_per_s(self) -> float:
        """The class-aware bound used for loads and fractions: the validated figure."""
        return self.validated

    def to_dict(self) -> dict:
        out = self.mean_output_tokens
        return {
            "configs": self.configs,
            "counts": self.counts.tolist(),
            "classes": [self.classes.label(k) for k in range(self.classes.num_classes)],
            "proportions": self.proportions.tolist(),
            "mix_measured_out_tok_s": self.mix_measured * out,
            "mix_sim_out_tok_s": self.mix_sim * out,
            "mix_model_out_tok_s": self.mix_model * out,
            "lp_sim_out_tok_s": self.lp_sim.requests_per_s * out,
            "lp_model_out_tok_s": self.lp_model.requests_per_s * out,
            "validated_out_tok_s": self.validated * out,
            "mix_resampled_out_tok_s": self.mix_resampled * out,
            "headroom": self.headroom,
            "headroom_resampled": self.headroom_resampled,
            "headroom_lp": self.headroom_lp,
            "headroom_model": self.headroom_model,
            "share": self.lp_sim.share.tolist(),
        }


def class_bound(
    instances: Sequence[PlannedInstance],
    requests: SimRequests,
    classes: RequestClasses,
    labels: np.ndarray | None = None,
    sample: int | None = SAMPLE_REQUESTS,
    seed: int = 0,
) -> ClassBound:
    """Measure mu per (configuration, class), solve both LPs, validate the simulator one.

    `labels` are the requests' classes (default: `classes.assign(prompt, true output)`)."""
    if labels is None:
        labels = classes.assign(requests.num_prompt_tokens, requests.num_output_tokens)
    nk = classes.num_classes
    counts_k = np.bincount(labels, minlength=nk).astype(float)
    present = counts_k > 0
    p = counts_k / counts_k.sum()
    mean_in = np.array([requests.num_prompt_tokens[labels == k].mean() if present[k] else 1.0 for k in range(nk)])
    mean_out = np.array([requests.num_output_tokens[labels == k].mean() if present[k] else 1.0 for k in range(nk)])
    names, reps, counts = config_groups(instances)
    mu_sim = np.zeros((len(reps), nk))
    mu_model = np.zeros((len(reps), nk))
    for j, spec in enumerate(reps):
        mu_model[j] = model_class_rates(spec.coeffs, spec.kv_capacity_tokens, spec.max_num_seqs, mean_in, mean_out)
        for k in range(nk):
            if not present[k]:
                continue
            sub = requests.take(labels == k)
            cap = saturated_capacity(spec, sub, sample)
            # Requests/s from output tokens/s over the class's mean output: the token count is the
            # smooth measurement (completions in a window are a few hundred, noisy).
            used = sub.sample(sample) if sample else sub
            mu_sim[j, k] = cap.output_tokens_per_s / float(used.num_output_tokens.mean())
    keep = present
    lp_sim = _solve_present(mu_sim, counts, p, keep)
    lp_model = _solve_present(mu_model, counts, p, keep)
    mix_measured = fluid_bound(instances, requests, sample).output_tokens_per_s / requests.mean_output_tokens
    per_cfg = np.zeros(len(reps))
    served = np.zeros(nk)
    for j, spec in enumerate(reps):
        mix = lp_sim.mix_of(j)
        if mix.sum() <= 0:
            continue
        sub = mix_sample(requests, labels, mix, min(MIX_REQUESTS, max(len(requests), sample or 0)), seed + j)
        cap = saturated_capacity(spec, sub)
        per_cfg[j] = cap.output_tokens_per_s / float(sub.num_output_tokens.mean())
        served += counts[j] * per_cfg[j] * mix
    validated = float(np.min(served[keep] / p[keep]))
    mix_resampled = 0.0
    for j, spec in enumerate(reps):
        sub = mix_sample(requests, labels, p, min(MIX_REQUESTS, max(len(requests), sample or 0)), seed + 100 + j)
        mix_resampled += (
            counts[j] * saturated_capacity(spec, sub).output_tokens_per_s / float(sub.num_output_tokens.mean())
        )
    return ClassBound(
        configs=names,
        counts=counts,
        classes=classes,
        proportions=p,
        class_mean_prompt=mean_in,
        class_mean_output=mean_out,
        mean_output_tokens=requests.mean_output_tokens,
        mu_sim=mu_sim,
        mu_model=mu_model,
        mix_measured=mix_measured,
        mix_sim=same_mix_rate(mu_sim[:, keep], counts, p[keep]),
        mix_model=same_mix_rate(mu_model[:, keep], counts, p[keep]),
        lp_sim=lp_sim,
        lp_model=lp_model,
        validated=validated,
        validated_per_config=per_cfg,
        mix_resampled=mix_resampled,
    )


def _solve_present(mu: np.ndarray, counts: np.ndarray, p: np.ndarray, keep: np.ndarray) -> ClassLP:
    """Solve on the classes that occur; absent classes get zero rows in the result."""
    sol = solve_class_lp(mu[:, keep], counts, p[keep])
    nj, nk = mu.shape
    full = [np.zeros((nj, nk)) for _ in range(3)]
    for arr, part in zip(full, (sol.rates, sol.share, sol.busy), strict=True):
        arr[:, keep] = part
    return ClassLP(sol.requests_per_s, *full)


def class_table(bound: ClassBound) -> ClassTable:
    """The `hetero_classes` policy's table from a measured bound (its classes must be routable:
    built on prompt and max_tokens)."""
    return ClassTable(
        bound.classes,
        tuple(bound.configs),
        bound.mu_sim.copy(),
        bound.proportions.copy(),
        bound.class_mean_prompt.copy(),
        bound.class_mean_output.copy(),
    )
