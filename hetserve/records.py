"""Frozen dataclasses used inside hetserve once the edge models have been validated.

Plain Python only (no ray, no vllm): the planner, simulator and live router all share these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# vLLM's default per-step token budget; the one default every engine, the planner and the simulator share.
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
# Window over which an engine measures its own output tokens/s, s of engine time.
DEFAULT_STATS_WINDOW_S = 10.0
# Output tokens assumed for a request before any has been observed (trackers, simulator, router).
DEFAULT_OUTPUT_TOKENS = 256
# max_tokens of a chat request that names none (router, request preparation, app args).
DEFAULT_MAX_TOKENS = 256


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

    def scaled(self, factor: float) -> LatencyCoeffs:
        """Every step `factor` times as long (a card `factor` times slower)."""
        if factor == 1.0:
            return self
        return LatencyCoeffs(
            a_p=self.a_p * factor, b_p=self.b_p * factor, a_d=self.a_d * factor,
            c_d=self.c_d * factor, b_d=self.b_d * factor, q_p=self.q_p * factor,
        )  # fmt: skip


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
class Workload:
    """Mean request shape the plan was priced for, plus the longest request an instance must hold.

    The coefficients of variation (std / mean) of prompt and output lengths matter too: a step's
    price is convex in its prompt tokens (a short chunk rides free under a memory-bound decode,
    a long one is compute-bound), so a mix of short and long prompts costs more than its mean
    (model/throughput.py). 0 = every request the mean.
    """

    mean_input_tokens: float
    mean_output_tokens: float
    max_request_tokens: int
    input_tokens_cv: float = 0.0
    output_tokens_cv: float = 0.0


@dataclass(frozen=True, slots=True)
class PlannedInstance:
    """One instance (one Serve replica) of a planned deployment: everything the simulator needs to
    run it, the emulated engine to pace it, and the router to seed its capacity.

    Built only by `DeploymentPlan.instances()`, so the simulator, the emulated engine and the live
    router can never price the same instance differently. Tests and what-if studies may build one
    directly (a fake accelerator with chosen coefficients).
    """

    instance_id: str
    deployment: str
    accelerator: str
    coeffs: LatencyCoeffs
    kv_capacity_tokens: int
    max_num_seqs: int
    predicted_tokens_per_s: float
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    tp: int = 1
    coeffs_source: str = ""
    node: str = ""
    # What-if studies (simulator only): what the instance's steps really take when the plan is
    # wrong (a throttled card, another kernel), and later speed changes (time_s, factor) applied
    # from the first stats tick at or after time_s (a mid-run slowdown is factor 2; they compound).
    # The plan's `coeffs` stay the router's prior.
    true_coeffs: LatencyCoeffs | None = None
    speed_changes: tuple[tuple[float, float], ...] = ()

    @property
    def run_coeffs(self) -> LatencyCoeffs:
        """The coefficients the instance's steps run at from the start."""
        return self.true_coeffs or self.coeffs

    @property
    def final_coeffs(self) -> LatencyCoeffs:
        """The coefficients after every speed change (what saturating it at the end measures)."""
        factor = 1.0
        for _, f in self.speed_changes:
            factor *= f
        return self.run_coeffs.scaled(factor)

    def settled(self) -> PlannedInstance:
        """This instance at its final speed from t=0 (for saturation runs)."""
        return replace(self, true_coeffs=self.final_coeffs, speed_changes=())


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    """One chosen configuration: its replicas, where they go, and every fact the planner priced
    them with (latency coefficients and their source, KV capacity, predicted throughput).

    The planner is the only place these facts are computed; the app builder, the router, the
    emulated engine and the simulator read them from here.
    """

    config: InstanceConfig
    node_names: tuple[str, ...]  # one entry per instance (a node repeats when it hosts several)
    prediction: InstancePrediction
    # Serve deployment name, unique per plan (config.deployment_name, plus the engine settings
    # when two configurations share accelerator and TP).
    name: str
    coeffs: LatencyCoeffs
    coeffs_source: str  # "profile", "rescaled from <model>", "roofline", or a profile file's source
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS

    @property
    def num_instances(self) -> int:
        return len(self.node_names)

    @property
    def kv_capacity_tokens(self) -> int:
        return self.prediction.kv_capacity_tokens

    @property
    def output_tokens_per_s(self) -> float:
        return self.num_instances * self.prediction.output_tokens_per_s

    def instances(self) -> tuple[PlannedInstance, ...]:
        """One PlannedInstance per replica, ids `<deployment>/<node>/<k>` (k counts the node's
        instances of this deployment)."""
        seen: dict[str, int] = {}
        out = []
        for node in self.node_names:
            k = seen.get(node, 0)
            seen[node] = k + 1
            out.append(
                PlannedInstance(
                    instance_id=f"{self.name}/{node}/{k}",
                    deployment=self.name,
                    accelerator=self.config.accelerator,
                    coeffs=self.coeffs,
                    kv_capacity_tokens=self.prediction.kv_capacity_tokens,
                    max_num_seqs=self.config.max_num_seqs,
                    predicted_tokens_per_s=self.prediction.output_tokens_per_s,
                    max_num_batched_tokens=self.max_num_batched_tokens,
                    tp=self.config.tp,
                    coeffs_source=self.coeffs_source,
                    node=node,
                )
            )
        return tuple(out)

    def node_demand(self) -> dict[str, int]:
        """Accelerator devices this deployment takes on each node it uses."""
        demand: dict[str, int] = {}
        for node in self.node_names:
            demand[node] = demand.get(node, 0) + self.config.tp
        return demand


@dataclass(frozen=True, slots=True)
class PlanClasses:
    """Request classes the plan carries for class-aware routing (`hetero_classes`), from a trace.

    A class is a prompt bin, then a bin of the second length inside it (`RequestClasses`: interior
    edges, a value v in bin searchsorted(edges, v, side="right")). The second length is the
    trace's output length, which the router reads as the request's max_tokens (all it sees before
    a request runs). `requests_per_s[d][k]`: one instance of deployment `deployments[d]` saturated
    with class k alone, from the throughput model at the deployment's own coefficients (the
    planner's pricing), so the live router and the plan rate each class the same way.
    """

    source: str  # the trace the classes and proportions come from
    prompt_edges: tuple[int, ...]
    second_edges: tuple[tuple[int, ...], ...]
    proportions: tuple[float, ...]
    mean_prompt_tokens: tuple[float, ...]
    mean_output_tokens: tuple[float, ...]
    deployments: tuple[str, ...]
    requests_per_s: tuple[tuple[float, ...], ...]

    @classmethod
    def from_dict(cls, d: dict) -> PlanClasses:
        return cls(
            source=str(d["source"]),
            prompt_edges=tuple(int(x) for x in d["prompt_edges"]),
            second_edges=tuple(tuple(int(x) for x in e) for e in d["second_edges"]),
            proportions=tuple(float(x) for x in d["proportions"]),
            mean_prompt_tokens=tuple(float(x) for x in d["mean_prompt_tokens"]),
            mean_output_tokens=tuple(float(x) for x in d["mean_output_tokens"]),
            deployments=tuple(str(x) for x in d["deployments"]),
            requests_per_s=tuple(tuple(float(x) for x in row) for row in d["requests_per_s"]),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer: deployments, the predicted total, and the runners-up with why they lost.

    `to_dict`/`from_dict` round-trip exactly, so `hetserve plan --json > plan.json` followed by
    `serve run hetserve.app:build plan=plan.json` serves the plan that was inspected.
    """

    cluster: str
    model: str
    objective: str
    deployments: tuple[DeploymentPlan, ...]
    workload: Workload
    runners_up: tuple[RunnerUp, ...] = field(default=())
    infeasible: tuple[str, ...] = field(default=())  # nodes left idle and why
    price_per_hour: float = 0.0  # used nodes x their accelerators x catalog price (a node is paid whole)
    notes: tuple[str, ...] = field(default=())  # caveats of the search (e.g. optimality not proven)
    classes: PlanClasses | None = None  # request classes for hetero_classes (`hetserve plan --trace`)

    @property
    def output_tokens_per_s(self) -> float:
        return sum(d.output_tokens_per_s for d in self.deployments)

    @property
    def requests_per_s(self) -> float:
        return sum(d.num_instances * d.prediction.requests_per_s for d in self.deployments)

    @property
    def num_accelerators(self) -> int:
        return sum(d.config.tp * d.num_instances for d in self.deployments)

    @property
    def max_model_len(self) -> int:
        """The longest request (prompt + output) every instance's KV cache was sized for."""
        return self.workload.max_request_tokens

    def instances(self) -> tuple[PlannedInstance, ...]:
        return tuple(i for d in self.deployments for i in d.instances())

    def deployment(self, name: str) -> DeploymentPlan:
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(f"no deployment {name!r} in the plan; planned: {', '.join(d.name for d in self.deployments)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """The inverse of `to_dict` (extra keys, such as the totals `plan_to_json` adds, are ignored)."""
        deployments = tuple(
            DeploymentPlan(
                config=InstanceConfig(**dp["config"]),
                node_names=tuple(dp["node_names"]),
                prediction=InstancePrediction(**dp["prediction"]),
                name=dp["name"],
                coeffs=LatencyCoeffs(**dp["coeffs"]),
                coeffs_source=dp["coeffs_source"],
                max_num_batched_tokens=int(dp["max_num_batched_tokens"]),
            )
            for dp in d["deployments"]
        )
        return cls(
            cluster=d["cluster"],
            model=d["model"],
            objective=d["objective"],
            deployments=deployments,
            workload=Workload(**d["workload"]),
            runners_up=tuple(RunnerUp(**r) for r in d.get("runners_up", ())),
            infeasible=tuple(d.get("infeasible", ())),
            price_per_hour=float(d.get("price_per_hour", 0.0)),
            notes=tuple(d.get("notes", ())),
            classes=PlanClasses.from_dict(d["classes"]) if d.get("classes") else None,
        )


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
