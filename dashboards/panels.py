"""hetserve's dashboard panels, described once: the Grafana dashboard JSON (`hetserve.json`) is
generated from this list, and `render.py` draws the same panels from scraped Prometheus samples
(a PNG where no Grafana runs). Metric names are as Ray exports hetserve's `ray.util.metrics`
(hetserve/serving/metrics.py) with its `ray_` prefix.

    python dashboards/panels.py        # rewrites dashboards/hetserve.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Filters every per-instance query by the dashboard's variables.
SEL = 'deployment=~"$deployment", instance=~"$instance"'


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]
    description: str = ""
    emitted: bool = True  # False: the metric is planned (see the README's dashboard section)
    kind: str = "timeseries"
    width: int = 8
    extra: dict = field(default_factory=dict)


def _q(q: float, metric: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[1m])))"


PANELS: tuple[Panel, ...] = (
    Panel(
        "Capacity C vs predicted vs measured, per instance",
        "short",
        (
            Target(f"avg by (instance, deployment) (ray_hetserve_capacity_tokens_per_s{{{SEL}}})", "C {{instance}}"),
            Target(
                f"max by (instance, deployment) (ray_hetserve_predicted_output_tokens_per_s{{{SEL}}})",
                "predicted {{instance}}",
            ),
            Target(
                f"max by (instance, deployment) (ray_hetserve_measured_output_tokens_per_s{{{SEL}}})",
                "measured {{instance}}",
            ),
        ),
        "Output tokens/s: the scheduler's capacity estimate C (router), the plan's prediction and what the "
        "engine delivered over its recent window (instance).",
        width=12,
    ),
    Panel(
        "Outstanding work Q, per instance",
        "short",
        (Target(f"sum by (instance) (ray_hetserve_outstanding_tokens{{{SEL}}})", "{{instance}}"),),
        "Output-token equivalents in flight as the routers see them (summed over router replicas).",
        width=12,
    ),
    Panel(
        "KV cache use, per instance",
        "percentunit",
        (Target(f"max by (instance) (ray_hetserve_kv_usage{{{SEL}}})", "{{instance}}"),),
    ),
    Panel(
        "Routed requests/s, per instance",
        "reqps",
        (Target(f"sum by (instance) (rate(ray_hetserve_requests_routed_total{{{SEL}}}[1m]))", "{{instance}}"),),
    ),
    Panel(
        "Running and waiting sequences, per instance",
        "short",
        (
            Target(f"max by (instance) (ray_hetserve_running_requests{{{SEL}}})", "running {{instance}}"),
            Target(f"max by (instance) (ray_hetserve_waiting_requests{{{SEL}}})", "waiting {{instance}}"),
        ),
    ),
    Panel(
        "TTFT p50 / p99",
        "s",
        (
            Target(_q(0.5, "ray_hetserve_ttft_s"), "p50"),
            Target(_q(0.99, "ray_hetserve_ttft_s"), "p99"),
        ),
        "Time to first token at the router.",
    ),
    Panel(
        "TPOT p50 / p99",
        "s",
        (
            Target(_q(0.5, "ray_hetserve_tpot_s"), "p50"),
            Target(_q(0.99, "ray_hetserve_tpot_s"), "p99"),
        ),
    ),
    Panel(
        "E2E latency p50 / p99",
        "s",
        (
            Target(_q(0.5, "ray_hetserve_e2e_latency_s"), "p50"),
            Target(_q(0.99, "ray_hetserve_e2e_latency_s"), "p99"),
        ),
    ),
    Panel(
        "Scheduler decision time p50 / p99",
        "s",
        (
            Target(
                "histogram_quantile(0.5, sum by (le, policy) (rate(ray_hetserve_scheduler_decision_s_bucket[1m])))",
                "p50 {{policy}}",
            ),
            Target(
                "histogram_quantile(0.99, sum by (le, policy) (rate(ray_hetserve_scheduler_decision_s_bucket[1m])))",
                "p99 {{policy}}",
            ),
        ),
    ),
    Panel(
        "Output tokens/s, cluster: measured vs predicted",
        "short",
        (
            Target("sum(ray_hetserve_measured_output_tokens_per_s)", "measured"),
            Target("sum(ray_hetserve_predicted_output_tokens_per_s)", "predicted (plan)"),
        ),
    ),
    Panel(
        "Refused requests/s (429 and other 4xx/5xx)",
        "reqps",
        (
            Target(
                'sum by (error_code) (rate(ray_serve_num_http_error_requests_total{error_code=~"4..|5.."}[1m]))',
                "HTTP {{error_code}} (Serve)",
            ),  # fmt: skip
            Target("sum by (reason) (rate(ray_hetserve_requests_rejected_total[1m]))", "hetserve {{reason}}"),
        ),
        "Serve's own HTTP error counter (exists today) and hetserve's admission refusals by reason "
        "(`hetserve_requests_rejected`, emitted once the admission queue lands).",
        emitted=False,
    ),
)


def grafana_dashboard() -> dict:
    panels = []
    x = y = 0
    row_h = 8
    for i, p in enumerate(PANELS):
        if x + p.width > 24:
            x, y = 0, y + row_h
        panels.append(
            {
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "description": p.description,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": x, "y": y, "w": p.width, "h": row_h},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + k), "expr": t.expr, "legendFormat": t.legend}
                    for k, t in enumerate(p.targets)
                ],
            }
        )
        x += p.width
    var = lambda name, q: {  # noqa: E731
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": q, "refId": name},
        "definition": q,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }
    return {
        "title": "hetserve",
        "uid": "hetserve",
        "description": "hetserve: per-instance capacity, load and KV; latency; scheduler decision time; refusals.",
        "tags": ["hetserve", "ray", "serve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
                var("deployment", "label_values(ray_hetserve_predicted_output_tokens_per_s, deployment)"),
                var("instance", 'label_values(ray_hetserve_kv_usage{deployment=~"$deployment"}, instance)'),
            ]
        },
        "panels": panels,
    }


def main() -> None:
    (HERE / "hetserve.json").write_text(json.dumps(grafana_dashboard(), indent=2) + "\n")
    print(f"wrote {HERE / 'hetserve.json'}")


if __name__ == "__main__":
    main()
