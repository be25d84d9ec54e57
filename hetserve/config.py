"""Pydantic edge models: every input that crosses a boundary (cluster YAML, CLI, `serve run` args).

Inside the package these are converted once into the frozen dataclasses of `records.py`.
This module must not import ray or vllm.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hetserve.errors import ConfigError
from hetserve.records import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_TOKENS, DEFAULT_STATS_WINDOW_S
from hetserve.scheduling.base import policy_names
from hetserve.strict_yaml import LoadedYaml, field_path, load_strict_yaml

DType = Literal["float32", "bfloat16", "float16", "fp8", "int8", "int4"]
DTYPE_BYTES: dict[str, float] = {
    "float32": 4.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}


class _Edge(BaseModel):
    """Base of every edge model: unknown keys are errors, so a typo never passes silently, and
    values are taken strictly (no "8" for 8, no true for 1, no 2.5 for an int): a file's value
    is used as written or refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AcceleratorSpec(_Edge):
    """One accelerator type of the catalog (per device, peak datasheet values)."""

    name: str = Field(
        description="Type name, spelled exactly as the Ray custom resource that labels it.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    vendor: str = Field(default="", description="Vendor name (NVIDIA, AMD, Huawei, ...).")
    memory_gib: float = Field(gt=0, description="Device memory in GiB.")
    mem_bw_gbps: float = Field(gt=0, description="Peak memory bandwidth, GB/s.")
    peak_tflops: float = Field(gt=0, description="Dense BF16/FP16 tensor peak, TFLOP/s.")
    interconnect_gbps: float = Field(
        default=32.0, gt=0, description="Per-device GPU-to-GPU bandwidth per direction, GB/s."
    )
    price_per_hour: float = Field(
        default=1.0, ge=0, description="Hourly price of one device, USD (indicative; used by cost objective)."
    )
    eta_bw: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Achieved fraction of peak bandwidth in decode (fitted from measured data where it exists).",
    )
    eta_flops: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Achieved fraction of peak FLOP/s in prefill (fitted from measured data where it exists).",
    )
    step_overhead_ms: float = Field(
        default=3.0, ge=0, description="Fixed per-step overhead of the engine (scheduling, sampling), ms."
    )
    source: str = Field(default="", description="Where the numbers came from.")


class ModelSpec(_Edge):
    """Shape of a decoder-only transformer, enough for memory fit and roofline latency."""

    name: str = Field(description="Model name as served (OpenAI `model` field).")
    num_layers: int = Field(gt=0, description="Transformer layers.")
    hidden_size: int = Field(gt=0, description="Model (embedding) width.")
    num_heads: int = Field(gt=0, description="Query attention heads.")
    num_kv_heads: int = Field(gt=0, description="Key/value heads (GQA); equals num_heads for MHA.")
    head_dim: int = Field(gt=0, description="Dimension of one attention head.")
    num_params_b: float = Field(gt=0, description="Parameters in billions.")
    dtype: DType = Field(default="bfloat16", description="Weight dtype.")
    kv_dtype: DType | None = Field(default=None, description="KV-cache dtype; default: the weight dtype.")
    max_model_len: int = Field(default=4096, gt=0, description="Longest sequence (prompt + output) served.")
    vocab_size: int = Field(default=32000, gt=0, description="Vocabulary size.")
    hf_path: str | None = Field(
        default=None, description="Local path of HF weights/tokenizer for the vLLM engine (no hub download)."
    )
    tokenizer: str | None = Field(
        default=None,
        description="Local path of the model's HF tokenizer for the router (exact token counts, chat "
        "template); default: the vLLM weights path when engine=vllm, none (estimated counts) otherwise.",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        return self

    @property
    def weight_bytes(self) -> float:
        return self.num_params_b * 1e9 * DTYPE_BYTES[self.dtype]

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V for every layer, all devices together."""
        kv = DTYPE_BYTES[self.kv_dtype or self.dtype]
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * kv


class WorkloadSpec(_Edge):
    """What the requests look like; means drive the steady-state throughput model."""

    mean_input_tokens: float | None = Field(default=None, gt=0, description="Mean prompt tokens.")
    mean_output_tokens: float | None = Field(default=None, gt=0, description="Mean generated tokens.")
    max_request_tokens: int | None = Field(
        default=None, gt=0, description="Longest request (prompt + output); default: the model's max_model_len."
    )
    trace: str | None = Field(
        default=None,
        description="Trace file (Azure CSV or Mooncake JSONL); its means are used when the means are not given.",
    )
    input_tokens_cv: float | None = Field(
        default=None, ge=0, description="Prompt lengths' std / mean; default: the trace's, else 0 (all alike)."
    )
    output_tokens_cv: float | None = Field(
        default=None, ge=0, description="Output lengths' std / mean; default: the trace's, else 0 (all alike)."
    )

    @model_validator(mode="after")
    def _means_or_trace(self) -> WorkloadSpec:
        has_means = self.mean_input_tokens is not None and self.mean_output_tokens is not None
        if not has_means and self.trace is None:
            raise ValueError("give mean_input_tokens and mean_output_tokens, or a trace file")
        return self


class SLOSpec(_Edge):
    """Latency objectives; the throughput model caps the batch so they hold."""

    ttft_ms: float | None = Field(default=None, gt=0, description="Time to first token cap, ms.")
    tpot_ms: float | None = Field(default=None, gt=0, description="Time per output token cap, ms.")


class EngineSettings(_Edge):
    """Engine knobs that shape memory and batching (same names as vLLM's)."""

    max_num_seqs: int = Field(default=256, ge=1, le=4096, description="Most sequences in one batch.")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of device memory the engine may use."
    )
    reserve_gib: float = Field(
        default=1.5, ge=0, description="Per-device memory kept for activations, CUDA graphs, runtime."
    )
    max_num_batched_tokens: int = Field(
        default=DEFAULT_MAX_NUM_BATCHED_TOKENS,
        ge=16,
        description="Most prompt tokens prefilled in one step (chunked prefill budget).",
    )


class NodeOverrides(_Edge):
    """Per-node changes to the cluster-wide settings."""

    max_num_seqs: int | None = Field(default=None, ge=1, description="Overrides engine.max_num_seqs.")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="Overrides engine.gpu_memory_utilization."
    )
    tp_degrees: list[int] | None = Field(
        default=None, description="Restrict the TP degrees the planner may use on this node."
    )
    num_cpus: int | None = Field(default=None, ge=1, description="Logical CPUs of the Ray node (local clusters).")


class NodeSpec(_Edge):
    """One node (or `num_nodes` identical nodes) with `count` accelerators of one type."""

    name: str = Field(description="Node name (unique in the cluster).", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    accelerator: str = Field(description="Accelerator type name from the catalog.")
    count: int = Field(ge=1, le=64, description="Accelerators on the node.")
    num_nodes: int = Field(default=1, ge=1, description="Identical copies of this node (names get -0, -1, ...).")
    overrides: NodeOverrides = Field(default_factory=NodeOverrides, description="Per-node overrides.")


class ClusterSpec(_Edge):
    """A heterogeneous cluster and what it should serve: the input of planner and app builder."""

    name: str = Field(description="Cluster name.")
    nodes: list[NodeSpec] = Field(min_length=1, description="Nodes of the cluster.")
    model: str | ModelSpec = Field(description="Catalog model name or inline model spec.")
    workload: WorkloadSpec = Field(description="Request shape used for planning.")
    slo: SLOSpec | None = Field(default=None, description="Optional latency objectives.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Engine settings.")
    accelerators: list[AcceleratorSpec] = Field(
        default_factory=list, description="Extra or overriding catalog entries for this cluster."
    )

    @model_validator(mode="after")
    def _unique_node_names(self) -> ClusterSpec:
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.name in seen:
                raise ValueError(f"nodes[{i}].name={node.name!r} is used twice")
            seen.add(node.name)
        return self


def _error_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The field path of a pydantic error without the union-member tags pydantic inserts
    (`model.str`, `model.ModelSpec.num_layers` -> `model`, `model.num_layers`)."""
    return tuple(p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or p[:1].isupper())))


_UNION_TAGS = {"str", "int", "float", "bool", "list[int]", "dict[str,any]"}


def format_validation_error(err: ValidationError, source: str, yaml_doc: LoadedYaml | None = None) -> str:
    """One line per problem: `source: line N: field.path: message (got value)`; no traceback.

    Field paths are written as everywhere else (`nodes[2].count`, see strict_yaml.field_path);
    the line is given when the data came from a YAML file.
    """
    lines = []
    for e in err.errors():
        loc = _error_loc(tuple(e["loc"]))
        value = e.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        line = yaml_doc.line_of(loc) if yaml_doc is not None else None
        where = f"line {line}: " if line is not None else ""
        lines.append(f"{source}: {where}{field_path(loc)}: {e['msg']} (got {shown})")
    return "\n".join(dict.fromkeys(lines))


def load_yaml(path: str | Path) -> object:
    """Read YAML strictly (see strict_yaml.py), refusals as ConfigError naming the file and line."""
    return load_strict_yaml(path).data


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """Load and validate a cluster YAML; every refusal names the file, line, field path and value."""
    doc = load_strict_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(doc.data).__name__}")
    try:
        return ClusterSpec.model_validate(doc.data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), doc)) from None


class AppArgs(_Edge):
    """Arguments of `serve run hetserve.app:build key=value ...` and of a Serve config's `args:`.

    With none given, the app serves the packaged laptop cluster (data/laptop.yaml) on emulated
    engines with the heterogeneity-aware policy. Not strict, unlike the file models: `serve run`
    passes every value as a string, so "0.5" must become 0.5 here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    cluster: str | None = Field(
        default=None, description="Cluster YAML path; default: the packaged laptop config (data/laptop.yaml)."
    )
    model: str | None = Field(default=None, description="Catalog model served instead of the cluster file's model.")
    plan: str | None = Field(
        default=None,
        description="A plan JSON written by `hetserve plan ... --json`: serve exactly that plan instead of "
        "planning inside build (the objective fields below are then not used).",
    )
    objective: Literal["throughput", "throughput_slo", "cost", "joint"] = Field(
        default="throughput", description="Planner objective when planning inside build (as `hetserve plan`)."
    )
    target_tokens_per_s: float | None = Field(
        default=None, gt=0, description="Output tokens/s the cost objective must reach (as --target-tokens-per-s)."
    )
    mixed_partitions: bool = Field(
        default=False, description="Let the planner split a node into instances of different TP (as `hetserve plan`)."
    )
    policy: str = Field(default="hetero", description="Scheduling policy by name (see hetserve.scheduling).")
    engine: Literal["emulated", "vllm"] = Field(
        default="emulated", description="Engine in every instance: emulated (no GPU) or vllm."
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="Emulated engine: wall seconds per emulated accelerator second (< 1 runs faster than life).",
    )
    router_replicas: int = Field(default=1, ge=1, le=64, description="Replicas of the router (ingress) deployment.")
    stats_period_s: float = Field(
        default=1.0, gt=0, le=60, description="How often instances report stats and the router reconciles, s."
    )
    stats_window_s: float = Field(
        default=DEFAULT_STATS_WINDOW_S,
        gt=0,
        description="Window of an instance's measured output tokens/s, s of engine time.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the scheduling policy's tie-breaks.")
    stream_interval_s: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Instances send streamed tokens at most this often (the first one at once), wall s.",
    )
    default_max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS,
        ge=1,
        description="max_tokens of chat requests that set neither max_tokens nor max_completion_tokens.",
    )
    max_ongoing_requests: int = Field(
        default=4096,
        ge=1,
        description="Requests one router replica or one instance accepts at once (engines queue internally).",
    )
    instance_num_cpus: float = Field(default=0.1, ge=0, description="Logical CPUs reserved per emulated instance.")
    router_num_cpus: float = Field(default=0.1, ge=0, description="Logical CPUs reserved per router replica.")
    vllm_model_path: str | None = Field(
        default=None, description="vLLM engine: local weights/tokenizer path (default: the model's hf_path)."
    )
    tokenizer: str | None = Field(
        default=None,
        description="Local HF tokenizer directory for the router (overrides the model's `tokenizer`); "
        "'none' serves without one (estimated prompt lengths).",
    )
    vllm_engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="vLLM engine: extra AsyncEngineArgs, passed through (a JSON object string is accepted).",
    )
    vllm_gpus_per_device: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="vLLM engine: Ray GPUs reserved per accelerator device; 0 for the vLLM CPU tier.",
    )
    profiles: str | None = Field(
        default=None,
        description="Profile file (from `hetserve profile`) whose profiles the plan and the router's priors use "
        "ahead of the shipped ones.",
    )
    learn_capacity: bool = Field(
        default=True,
        description="Fit each instance's step-time model online from its engine's step records (False: C stays "
        "at the plan's prediction).",
    )
    emulated_speed: dict[str, float] = Field(
        default_factory=dict,
        description="Emulated engine: true step-time factor per deployment name or accelerator type (2 = twice as "
        "slow as the plan believes; a JSON object string is accepted).",
    )
    emulated_speed_changes: dict[str, list[tuple[float, float]]] = Field(
        default_factory=dict,
        description="Emulated engine: mid-run speed changes per deployment name or accelerator type, as "
        "[seconds of emulated time after the engine's first step, factor] pairs (factor 2: steps take twice as long "
        "from then on; a JSON object string is accepted).",
    )

    # ---- reliability: admission, retries, failure detection, the door (serving/router.py) ----
    max_queue_requests: int = Field(
        default=256,
        ge=0,
        description="Requests one router replica holds in its queue waiting for an instance with room; "
        "beyond it requests are refused at once with 429 and Retry-After.",
    )
    max_queue_work_tokens: float | None = Field(
        default=None,
        gt=0,
        description="Bound on the queued requests' total estimated work (output-token equivalents); None: count only.",
    )
    late_binding: bool = Field(
        default=True,
        description="Bind a request to an instance when one has room (router-side queue); "
        "False: place at arrival, queue in the engines (the bound still applies).",
    )
    bind_slots_factor: float = Field(
        default=1.0,
        gt=0,
        le=16,
        description="An instance has room while its outstanding requests are below this times its max_num_seqs.",
    )
    queue_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest wait in the router's queue before a 503, s."
    )
    max_tries: int = Field(
        default=3, ge=1, le=10, description="Tries of a request whose instance fails (each on another instance)."
    )
    retry_backoff_s: float = Field(
        default=0.05, ge=0, le=10, description="Wait before the first retry, doubled for each further one, s."
    )
    instance_timeout_s: float = Field(
        default=60.0, gt=0, description="An instance that sends no chunk for this long has failed the request, s."
    )
    report_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="An instance whose stats reports stop for this long leaves routing, s; "
        "default max(1.5, 1.5 x stats_period_s).",
    )
    breaker_failures: int = Field(
        default=3, ge=1, description="Consecutive failed calls that open an instance's circuit breaker."
    )
    breaker_open_s: float = Field(
        default=5.0, gt=0, description="How long an open breaker stays open before one probe request, s."
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the API key(s), comma-separated; "
        "read when the app is built. Requests then need `Authorization: Bearer <key>`.",
    )
    api_key_file: str | None = Field(
        default=None, description="File holding API keys, one per line (with or instead of api_key_env)."
    )
    max_body_bytes: int | None = Field(
        default=2 * 1024**2, ge=1024, description="Largest request body accepted (413 beyond); None: no limit."
    )

    @property
    def effective_report_timeout_s(self) -> float:
        if self.report_timeout_s is not None:
            return self.report_timeout_s
        return max(1.5, 1.5 * self.stats_period_s)

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        names = policy_names()
        if value not in names:
            raise ValueError(f"unknown scheduling policy {value!r}; known: {', '.join(names)}")
        return value

    @field_validator("emulated_speed")
    @classmethod
    def _positive_speeds(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v > 0]
        if bad:
            raise ValueError(f"speed factors must be > 0 (got {', '.join(f'{k}={value[k]}' for k in bad)})")
        return value

    @field_validator("emulated_speed_changes")
    @classmethod
    def _positive_changes(cls, value: dict[str, list[tuple[float, float]]]) -> dict[str, list[tuple[float, float]]]:
        bad = [k for k, changes in value.items() if any(not f > 0 or t < 0 for t, f in changes)]
        if bad:
            raise ValueError(f"speed changes need times >= 0 and factors > 0 (bad: {', '.join(bad)})")
        return value

    @field_validator("vllm_engine_kwargs", "emulated_speed", "emulated_speed_changes", mode="before")
    @classmethod
    def _kwargs_from_json(cls, value: Any) -> Any:
        # `serve run ... key=value` passes strings; a JSON object is the only way to give a dict there.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc}") from None
        return value

    @property
    def cluster_path(self) -> Path:
        if self.cluster is not None:
            return Path(self.cluster)
        return Path(str(resources.files("hetserve.data").joinpath("laptop.yaml")))
