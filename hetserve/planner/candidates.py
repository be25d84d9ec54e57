"""Per-pool candidate configurations: which TP degrees fit a node, and how a node splits into instances.

Nodes with the same accelerator type, count and engine settings form a pool; every node of a pool
has the same options, and each (accelerator, TP, settings) is predicted once, which is what keeps
the planner fast on clusters of thousands of nodes. Plain Python: no ray import.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hetserve.cluster import Cluster
from hetserve.config import AcceleratorSpec, ModelSpec, SLOSpec
from hetserve.model import LatencyModel, predict_instance
from hetserve.model.latency import Resolved
from hetserve.records import InstanceConfig, InstancePrediction, Node, Workload

__all__ = [
    "DegreeCheck",
    "NodeOption",
    "Pool",
    "PoolCandidates",
    "PoolKey",
    "enumerate_candidates",
    "group_pools",
    "partitions",
]

MICRO_USD = 1_000_000  # prices are compared as integer micro-dollars so sums are exact


@dataclass(frozen=True, slots=True, order=True)
class PoolKey:
    """What makes two nodes interchangeable for the planner; sorts into a stable order."""

    accelerator: str
    count: int
    max_num_seqs: int
    gpu_memory_utilization: float
    tp_degrees: tuple[int, ...] = ()  # () = no override


@dataclass(frozen=True, slots=True)
class Pool:
    """Identical nodes, in cluster order (the first k are used when only k are needed)."""

    key: PoolKey
    node_names: tuple[str, ...]
    label: str

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)


@dataclass(frozen=True, slots=True)
class DegreeCheck:
    """One TP degree on a pool: its configuration, its prediction, and why it is out if it is."""

    tp: int
    config: InstanceConfig
    prediction: InstancePrediction
    reason: str  # "" when usable
    latency: Resolved  # the coefficients the prediction was priced with, and their source

    @property
    def usable(self) -> bool:
        return not self.reason


@dataclass(frozen=True, slots=True)
class NodeOption:
    """One way to split a node into instances: a multiset of TP degrees (summing to the count,
    or, with mixed partitions, leaving fewer idle accelerators than the smallest usable degree)."""

    partition: tuple[int, ...]  # TP degrees, largest first
    output_tokens_per_s: float  # the whole node
    num_idle: int = 0  # accelerators no usable degree fits (mixed partitions only)

    @property
    def num_instances(self) -> int:
        return len(self.partition)

    @property
    def label(self) -> str:
        if len(set(self.partition)) == 1:
            n = len(self.partition)
            text = f"TP{self.partition[0]}" + (f" x{n}" if n > 1 else "")
        else:
            parts = sorted(set(self.partition), reverse=True)
            text = "+".join(
                f"TP{t}" if self.partition.count(t) == 1 else f"{self.partition.count(t)}xTP{t}" for t in parts
            )
        return text + (f" ({self.num_idle} idle)" if self.num_idle else "")


@dataclass(frozen=True, slots=True)
class PoolCandidates:
    """A pool, every TP degree considered on it, and its feasible node options best first."""

    pool: Pool
    degrees: tuple[DegreeCheck, ...]
    options: tuple[NodeOption, ...]
    price_per_node_micro_usd: int

    @property
    def best(self) -> NodeOption | None:
        return self.options[0] if self.options else None

    @property
    def top(self) -> NodeOption:
        """The best option of a pool that has one (callers check `options` first)."""
        if not self.options:
            raise ValueError(f"pool {self.pool.label} has no feasible option")
        return self.options[0]

    def degree(self, tp: int) -> DegreeCheck:
        for d in self.degrees:
            if d.tp == tp:
                return d
        raise KeyError(tp)


def group_pools(nodes: Sequence[Node]) -> tuple[Pool, ...]:
    """Group nodes into pools, ordered by PoolKey; labels are unique ("L4x2", or with settings)."""
    members: dict[PoolKey, list[str]] = {}
    for n in nodes:
        key = PoolKey(n.accelerator, n.count, n.max_num_seqs, n.gpu_memory_utilization, n.tp_degrees or ())
        members.setdefault(key, []).append(n.name)
    keys = sorted(members)
    base = {k: f"{k.accelerator}x{k.count}" for k in keys}
    clash = {b for b in base.values() if sum(1 for v in base.values() if v == b) > 1}
    pools = []
    for k in keys:
        label = base[k]
        if label in clash:
            label += f" (max_num_seqs={k.max_num_seqs}, gpu_memory_utilization={k.gpu_memory_utilization:g}"
            label += f", tp_degrees={list(k.tp_degrees)})" if k.tp_degrees else ")"
        pools.append(Pool(k, tuple(members[k]), label))
    return tuple(pools)


def partitions(total: int, parts: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Maximal multisets of `parts` (largest first) fitting in `total`, in a fixed order.

    Maximal: what is left over is smaller than the smallest part, so no further instance fits.
    When the parts can fill `total` exactly these are exact partitions such as 4+2+2 of 8; when
    they cannot (usable TP 4 on a node of 6) the leftover accelerators stay idle.
    """
    desc = sorted(set(parts), reverse=True)
    if not desc:
        return
    smallest = desc[-1]

    def rec(remaining: int, i: int) -> Iterator[tuple[int, ...]]:
        if i == len(desc):
            if remaining < smallest:
                yield ()
            return
        p = desc[i]
        for k in range(remaining // p, -1, -1):
            for rest in rec(remaining - k * p, i + 1):
                yield (p,) * k + rest

    for shape in rec(total, 0):
        if shape:
            yield shape


def _option_key(opt: NodeOption) -> tuple:
    # Best first; on an exact tie, fewer instances (less per-instance overhead), then the partition.
    return (-opt.output_tokens_per_s, opt.num_instances, opt.partition)


def price_configuration(
    model: ModelSpec,
    accel: AcceleratorSpec,
    config: InstanceConfig,
    workload: Workload,
    latency_model: LatencyModel,
    *,
    reserve_gib: float,
    slo: SLOSpec | None = None,
) -> tuple[InstancePrediction, Resolved]:
    """What one instance of `config` delivers on `workload`, and the coefficients it was priced
    with: the one place a configuration's latency and memory fit are worked out."""
    latency = latency_model.resolve(model, accel, config.tp)
    pred = predict_instance(
        model,
        accel,
        latency.coeffs,
        config.tp,
        config.max_num_seqs,
        config.gpu_memory_utilization,
        reserve_gib,
        workload,
        slo,
    )
    return pred, latency


def enumerate_candidates(
    cluster: Cluster,
    latency_model: LatencyModel,
    slo: SLOSpec | None = None,
    mixed_partitions: bool = False,
) -> tuple[PoolCandidates, ...]:
    """Every pool's TP degrees (checked) and node options (feasible, best first).

    Uniform (default): degrees are the divisors t of the count; the node runs count/t instances of
    TP t. Mixed: any maximal multiset of usable degrees t <= count (dividing the heads), such as
    4+2+2 on 8, or 4 on 6 with 2 idle when only TP4 and TP5 run; the uniform options are a subset.
    A used node is priced whole (count x catalog price). A degree is usable when it fits
    memory and holds the longest request, divides the heads, is allowed by the node's
    `tp_degrees` override and (with an SLO) meets it at batch 1 or more.
    """
    model = cluster.model
    reserve_gib = cluster.engine.reserve_gib
    cache: dict[tuple[str, int, int, float], tuple[InstancePrediction, Resolved]] = {}

    def predict(key: PoolKey, tp: int) -> tuple[InstancePrediction, Resolved]:
        ck = (key.accelerator, tp, key.max_num_seqs, key.gpu_memory_utilization)
        hit = cache.get(ck)
        if hit is None:
            config = InstanceConfig(key.accelerator, tp, key.max_num_seqs, key.gpu_memory_utilization)
            accel = cluster.catalog.accelerator(key.accelerator)
            hit = cache[ck] = price_configuration(
                model, accel, config, cluster.workload, latency_model, reserve_gib=reserve_gib, slo=slo
            )
        return hit

    out = []
    for pool in group_pools(cluster.nodes):
        key = pool.key
        divisors = [t for t in range(1, key.count + 1) if key.count % t == 0]
        if mixed_partitions:
            extra = [t for t in range(1, key.count + 1) if key.count % t and model.num_heads % t == 0]
            considered = sorted(divisors + extra)
        else:
            considered = divisors
        degrees = []
        for tp in considered:
            config = InstanceConfig(key.accelerator, tp, key.max_num_seqs, key.gpu_memory_utilization)
            pred, latency = predict(key, tp)
            if key.tp_degrees and tp not in key.tp_degrees:
                reason = f"excluded by the node's tp_degrees override {list(key.tp_degrees)}"
            elif not pred.feasible:
                reason = pred.reason
            else:
                reason = ""
            degrees.append(DegreeCheck(tp, config, pred, reason, latency))
        usable = {d.tp: d.prediction.output_tokens_per_s for d in degrees if d.usable}
        if mixed_partitions:
            shapes = list(partitions(key.count, list(usable)))
        else:
            shapes = [(t,) * (key.count // t) for t in sorted(usable, reverse=True)]
        options = []
        for shape in shapes:
            # Sum as count x value per degree, in a fixed order, so equal plans give equal floats.
            value = 0.0
            for t in sorted(set(shape), reverse=True):
                value += shape.count(t) * usable[t]
            options.append(NodeOption(shape, value, key.count - sum(shape)))
        options.sort(key=_option_key)
        price = round(cluster.catalog.accelerator(key.accelerator).price_per_hour * MICRO_USD) * key.count
        out.append(PoolCandidates(pool, tuple(degrees), tuple(options), price))
    return tuple(out)
