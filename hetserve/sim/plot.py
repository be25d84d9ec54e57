"""PNG of a policy comparison: throughput and p99 TTFT against offered load, one line per policy.

matplotlib is an optional dependency (`hetserve[plot]`); it is imported only when plotting.
"""

from __future__ import annotations

from hetserve.sim.compare import Comparison

__all__ = ["plot_comparison"]


def plot_comparison(path: str, comparison: Comparison, title: str) -> None:
    """Write the figure to `path`. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r.policy for r in comparison.runs):
        pts = sorted(
            (
                (rep.offered_requests_per_s, rep)
                for run, rep in zip(comparison.runs, comparison.reports, strict=True)
                if run.policy == name
            ),
            key=lambda p: p[0],
        )
        xs = [x for x, _ in pts]
        ax1.plot(xs, [r.output_tokens_per_s for _, r in pts], marker="o", label=name)
        ax2.plot(xs, [r.ttft_s.p99 for _, r in pts], marker="o", label=name)
    ax1.axhline(comparison.offered.output_tokens_per_s, color="grey", linestyle="--", label="fluid bound")
    ax1.set_xlabel("offered load (window mean), requests/s")
    ax1.set_ylabel("output tokens/s (window)")
    ax2.set_xlabel("offered load (window mean), requests/s")
    ax2.set_ylabel("p99 TTFT, s")
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title(f"{title}: throughput")
    ax2.set_title(f"{title}: p99 time to first token")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
