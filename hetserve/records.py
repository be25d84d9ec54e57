"""Frozen dataclasses used inside hetserve once the edge models have been validated.

Plain Python only (no ray, no vllm): the planner, simulator and live router all share these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class LatencyCoeffs:
    """Step-time model of one (model, accelerator type, TP) in seconds.

    prefill of N prompt tokens:       T_p(N)   = a_p*N + q_p*N**2 + b_p
    one decode step, B seqs, S ctx:   T_d(B,S) = a_d*B + c_d*S + b_d
    """

    a_p: float
    b_p: float
    a_d: float
    c_d: float
    b_d: float
    q_p: float = 0.0

    def prefill_s(self, num_tokens: float) -> float:
        if num_tokens <= 0:
            return 0.0
        return self.a_p * num_tokens + self.q_p * num_tokens * num_tokens + self.b_p

    def prefill_batch_s(self, num_tokens: float, sum_sq_prompt_tokens: float) -> float:
        """Prefill of several prompts in one step: the attention term is per sequence
        (q_p * sum of l_i**2), not q_p * (sum of l_i)**2, which would overcount a batch."""
        if num_tokens <= 0:
            return 0.0
        return self.a_p * num_tokens + self.q_p * sum_sq_prompt_tokens + self.b_p

    def decode_s(self, num_seqs: float, num_context_tokens: float) -> float:
        if num_seqs <= 0:
            return 0.0
        return self.a_d * num_seqs + self.c_d * num_context_tokens + self.b_d


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Fitted coefficients with their provenance (which data, how many rows, held-out error)."""

    model: str
    accelerator: str
    tp: int
    coeffs: LatencyCoeffs
    source: str
    engine: str = "vllm"
    num_samples: int = 0
    prefill_mape: float | None = None
    decode_mape: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyProfile:
        d = dict(d)
        d["coeffs"] = LatencyCoeffs(**d["coeffs"])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Node:
    """One concrete node after expanding `num_nodes` and applying overrides."""

    name: str
    accelerator: str
    count: int
    max_num_seqs: int
    gpu_memory_utilization: float
    tp_degrees: tuple[int, ...] | None = None
    num_cpus: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """A configuration: accelerator type x TP x engine settings. One Serve deployment each."""

    accelerator: str
    tp: int
    max_num_seqs: int
    gpu_memory_utilization: float

    @property
    def deployment_name(self) -> str:
        name = f"{self.accelerator}-tp{self.tp}"
        return name.replace(".", "_")


@dataclass(frozen=True, slots=True)
class InstancePrediction:
    """What the throughput model predicts for one instance of a configuration on a workload."""

    feasible: bool
    reason: str
    kv_capacity_tokens: int
    batch_size: int
    output_tokens_per_s: float
    requests_per_s: float
    total_tokens_per_s: float
    ttft_s: float
    tpot_s: float


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    """One chosen configuration: its replicas and where they go."""

    config: InstanceConfig
    node_names: tuple[str, ...]  # one entry per instance (a node repeats when it hosts several)
    prediction: InstancePrediction
    # Serve deployment name; the planner sets it unique per plan (config.deployment_name, plus the
    # engine settings when two configurations share accelerator and TP).
    name: str = ""

    @property
    def num_instances(self) -> int:
        return len(self.node_names)

    @property
    def output_tokens_per_s(self) -> float:
        return self.num_instances * self.prediction.output_tokens_per_s


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer: deployments, the predicted total, and the runners-up with why they lost."""

    cluster: str
    model: str
    objective: str
    deployments: tuple[DeploymentPlan, ...]
    runners_up: tuple[RunnerUp, ...] = field(default=())
    infeasible: tuple[str, ...] = field(default=())  # nodes left idle and why
    price_per_hour: float = 0.0  # used nodes x their accelerators x catalog price (a node is paid whole)
    notes: tuple[str, ...] = field(default=())  # caveats of the search (e.g. optimality not proven)

    @property
    def output_tokens_per_s(self) -> float:
        return sum(d.output_tokens_per_s for d in self.deployments)

    @property
    def requests_per_s(self) -> float:
        return sum(d.num_instances * d.prediction.requests_per_s for d in self.deployments)

    @property
    def num_accelerators(self) -> int:
        return sum(d.config.tp * d.num_instances for d in self.deployments)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RunnerUp:
    """A plan that lost, with its total and the reason."""

    description: str
    output_tokens_per_s: float
    why: str
    price_per_hour: float = 0.0  # set for cost-objective alternatives


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a router knows about a request when it must place it (never its true output length)."""

    request_id: str
    num_prompt_tokens: int
    max_tokens: int
    arrival_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StepTotals:
    """Sufficient statistics of every engine step since the engine started (cumulative, so a
    report that is lost or late loses nothing: the reader differences consecutive reports).

    Each step is a row x = (prefill tokens, 1 if any prefill, decode sequences, context tokens
    held, 1 if any decode) with its wall duration y (engine time); rows are weighted 1/y (relative
    error, as the planner's fits). `gram` is the upper triangle (row-major) of sum (x/y)(x/y)^T,
    `moment` sum x/y, `sum_sq` sum (y/y)^2 (= steps). See hetserve/model/online_fit.py.
    """

    num_steps: int = 0
    busy_s: float = 0.0  # engine-time seconds spent stepping
    gram: tuple[float, ...] = ()
    moment: tuple[float, ...] = ()
    sum_sq: float = 0.0
    prefill_tokens: int = 0
    decode_tokens: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> StepTotals:
        return cls(**{**d, "gram": tuple(d.get("gram", ())), "moment": tuple(d.get("moment", ()))})


@dataclass(slots=True)
class InstanceStats:
    """What an instance reports about itself (engine-measured), for routing and dashboards.

    `steps`: what the engine's steps did (the online capacity fit reads it); `request_ids`: the
    requests the engine holds (running or waiting) when the report was taken, so the router's
    load tracker can tell a finished request from one that is still running whatever the delay
    of the report.
    """

    num_running: int = 0
    num_waiting: int = 0
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 0
    output_tokens_per_s: float = 0.0  # measured over a recent window
    total_output_tokens: int = 0
    healthy: bool = True
    steps: StepTotals | None = None
    request_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, dict):  # from asdict() through Serve's routing stats
            self.steps = StepTotals.from_dict(self.steps)
        if self.request_ids is not None and not isinstance(self.request_ids, tuple):
            self.request_ids = tuple(self.request_ids)

    @property
    def kv_usage(self) -> float:
        return self.kv_used_tokens / self.kv_capacity_tokens if self.kv_capacity_tokens else 0.0
