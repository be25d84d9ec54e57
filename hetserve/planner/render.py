"""A Plan as JSON-ready data and as rich tables (deployments, runners-up, idle nodes). No ray import."""

from __future__ import annotations

from rich.console import Console, JustifyMethod
from rich.table import Table

from hetserve.records import Plan

__all__ = ["print_plan"]

# Node names shown per deployment row before the table abbreviates (the JSON has them all).
MAX_NODE_NAMES_SHOWN = 4


def _node_summary(names: tuple[str, ...]) -> str:
    unique = list(dict.fromkeys(names))
    if len(unique) <= MAX_NODE_NAMES_SHOWN:
        return ", ".join(unique)
    return f"{', '.join(unique[:2])}, ... {unique[-1]} ({len(unique)} nodes)"


def print_plan(plan: Plan, console: Console | None = None) -> None:
    """Deployments table, totals line, runners-up table, idle nodes and notes."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
            console = Console(width=160)
    title = f"Plan for {plan.model} on {plan.cluster} (objective: {plan.objective})"
    table = Table(title=title, title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [
        ("deployment", "left"),
        ("accelerator", "left"),
        ("TP", "right"),
        ("instances", "right"),
        ("nodes", "left"),
        ("batch", "right"),
        ("KV tokens", "right"),
        ("tok/s per inst", "right"),
        ("tok/s total", "right"),
        ("TTFT/TPOT ms", "right"),
    ]
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for d in plan.deployments:
        p = d.prediction
        table.add_row(
            d.name,
            d.config.accelerator,
            str(d.config.tp),
            str(d.num_instances),
            _node_summary(d.node_names),
            str(p.batch_size),
            f"{p.kv_capacity_tokens:,}",
            f"{p.output_tokens_per_s:,.0f}",
            f"{d.output_tokens_per_s:,.0f}",
            f"{p.ttft_s * 1e3:,.0f} / {p.tpot_s * 1e3:,.1f}",
        )
    console.print(table)
    num_instances = sum(d.num_instances for d in plan.deployments)
    console.print(
        f"total: {plan.output_tokens_per_s:,.0f} output tok/s, {plan.requests_per_s:,.2f} req/s, "
        f"{num_instances} instances on {plan.num_accelerators} accelerators, ${plan.price_per_hour:,.2f}/h"
    )
    if plan.runners_up:
        ru = Table(title="Runners-up (why they lost)", title_justify="left")
        ru.add_column("alternative")
        ru.add_column("tok/s", justify="right")
        ru.add_column("why")
        for r in plan.runners_up:
            ru.add_row(r.description, f"{r.output_tokens_per_s:,.0f}" if r.output_tokens_per_s else "-", r.why)
        console.print(ru)
    for line in plan.infeasible:
        console.print(f"idle: {line}", highlight=False)
    for line in plan.notes:
        console.print(f"note: {line}", highlight=False)
