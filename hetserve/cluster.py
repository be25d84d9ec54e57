"""Turn a validated ClusterSpec into concrete nodes, model and workload, checking cross-references.

Errors name the field path (`nodes[2].accelerator`) and the value, as pydantic does for shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hetserve.catalog import Catalog, default_catalog
from hetserve.config import ClusterSpec, ConfigError, EngineSettings, ModelSpec, SLOSpec, load_cluster_spec
from hetserve.model.throughput import Workload
from hetserve.records import Node
from hetserve.traces import load_trace

__all__ = ["Cluster", "load_cluster", "resolve_cluster"]


@dataclass(frozen=True)
class Cluster:
    """Everything the planner and the app builder need, resolved and cross-checked."""

    name: str
    nodes: tuple[Node, ...]
    model: ModelSpec
    workload: Workload
    slo: SLOSpec | None
    engine: EngineSettings
    catalog: Catalog

    @property
    def accelerator_types(self) -> list[str]:
        return sorted({n.accelerator for n in self.nodes})


def resolve_cluster(spec: ClusterSpec, catalog: Catalog | None = None, source: str = "cluster") -> Cluster:
    catalog = (catalog or default_catalog()).with_accelerators(spec.accelerators)
    if isinstance(spec.model, ModelSpec):
        model = spec.model
        catalog = catalog.with_models([model])
    else:
        try:
            model = catalog.model(spec.model)
        except ConfigError as exc:
            raise ConfigError(f"{source}: model: {exc} (got {spec.model!r})") from None

    nodes: list[Node] = []
    for i, ns in enumerate(spec.nodes):
        if ns.accelerator not in catalog.accelerators:
            known = ", ".join(sorted(catalog.accelerators))
            raise ConfigError(
                f"{source}: nodes[{i}].accelerator: unknown accelerator type (got {ns.accelerator!r}); "
                f"known: {known}; or add it under `accelerators:`"
            )
        tps = ns.overrides.tp_degrees
        if tps is not None:
            for tp in tps:
                if tp < 1 or ns.count % tp:
                    raise ConfigError(
                        f"{source}: nodes[{i}].overrides.tp_degrees: {tp} does not divide count={ns.count} "
                        f"(got {tps!r})"
                    )
        for k in range(ns.num_nodes):
            nodes.append(
                Node(
                    name=ns.name if ns.num_nodes == 1 else f"{ns.name}-{k}",
                    accelerator=ns.accelerator,
                    count=ns.count,
                    max_num_seqs=ns.overrides.max_num_seqs or spec.engine.max_num_seqs,
                    gpu_memory_utilization=ns.overrides.gpu_memory_utilization or spec.engine.gpu_memory_utilization,
                    tp_degrees=tuple(tps) if tps is not None else None,
                    num_cpus=ns.overrides.num_cpus,
                )
            )

    wl = spec.workload
    cv_in, cv_out = wl.input_tokens_cv or 0.0, wl.output_tokens_cv or 0.0
    if wl.mean_input_tokens is not None and wl.mean_output_tokens is not None:
        l_in, l_out = wl.mean_input_tokens, wl.mean_output_tokens
    else:
        assert wl.trace is not None  # WorkloadSpec requires the means or a trace
        trace_path = Path(wl.trace)
        if not trace_path.is_absolute() and source != "cluster":
            trace_path = Path(source).parent / trace_path
        try:
            trace = load_trace(trace_path)
        except ConfigError as exc:
            raise ConfigError(f"{source}: workload.trace: {exc}") from None
        l_in = wl.mean_input_tokens or trace.mean_input_tokens
        l_out = wl.mean_output_tokens or trace.mean_output_tokens
        if wl.input_tokens_cv is None:
            cv_in = float(trace.input_tokens.std() / max(trace.input_tokens.mean(), 1e-9))
        if wl.output_tokens_cv is None:
            cv_out = float(trace.output_tokens.std() / max(trace.output_tokens.mean(), 1e-9))
    max_req = wl.max_request_tokens or model.max_model_len
    if max_req > model.max_model_len:
        raise ConfigError(
            f"{source}: workload.max_request_tokens: {max_req} exceeds the model's max_model_len {model.max_model_len}"
        )
    return Cluster(
        spec.name, tuple(nodes), model, Workload(l_in, l_out, max_req, cv_in, cv_out), spec.slo, spec.engine, catalog
    )


def load_cluster(path: str | Path) -> Cluster:
    """Load, validate and resolve a cluster YAML; any refusal is a ConfigError naming the field."""
    return resolve_cluster(load_cluster_spec(path), source=str(path))
