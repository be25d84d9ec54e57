"""Draw the dashboard's panels (panels.py) from Prometheus samples, where no Grafana runs.

`scrape` reads every Ray node's metrics endpoint of a local cluster (its `hetserve cluster` state
file names the ports) every few seconds into a JSONL file; `render` evaluates each panel's
queries on those samples with a small evaluator for the four PromQL shapes panels.py uses
(`agg by (...) (gauge)`, `sum by (...) (rate(counter[1m]))`, `histogram_quantile(q, sum by (le,
...) (rate(hist_bucket[1m])))`, `sum(gauge)`; dashboard variables match everything) and draws
them in the dashboard's layout with matplotlib.

    python dashboards/render.py scrape STATE.json samples.jsonl --duration-s 600
    python dashboards/render.py render samples.jsonl dashboards/screenshot.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panels import PANELS  # noqa: E402

KEEP = ("ray_hetserve_", "ray_serve_num_http_error_requests")
RATE_WINDOW_S = 60.0
_META_KEEP = tuple(f"# {kind} {k}" for kind in ("HELP", "TYPE") for k in KEEP)


def _ports(state_file: Path) -> list[int]:
    d = json.loads(state_file.read_text())
    return [n["metrics_export_port"] for n in [d["head"], *d["workers"]]]


def scrape(state_file: Path, out: Path, duration_s: float, interval_s: float) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    ports = _ports(state_file)
    deadline = time.time() + duration_s
    with out.open("a") as f:
        while time.time() < deadline:
            t = time.time()
            rows = []
            for port in ports:
                try:
                    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                except OSError:
                    continue
                # Parse only hetserve's and Serve's error lines (a node exports thousands).
                text = "\n".join(ln for ln in text.splitlines() if ln.startswith(KEEP) or ln.startswith(_META_KEEP))
                for fam in text_string_to_metric_families(text + "\n"):
                    for s in fam.samples:
                        if s.name.startswith(KEEP):
                            rows.append([s.name, dict(s.labels), s.value])
            f.write(json.dumps({"t": t, "samples": rows}) + "\n")
            f.flush()
            time.sleep(max(0.0, interval_s - (time.time() - t)))


# ---- a tiny evaluator for panels.py's query shapes -------------------------------------------
_BY = r"(?:by \(([^)]*)\) )?"
_RE_QUANT = re.compile(
    r"histogram_quantile\(([\d.]+), sum by \(([^)]*)\) \(rate\((\w+)_bucket(?:\{[^}]*\})?\[1m\]\)\)\)"
)
_RE_RATE = re.compile(r"sum " + _BY + r"\(rate\((\w+)(?:\{[^}]*\})?\[1m\]\)\)")
_RE_AGG = re.compile(r"(sum|avg|max|min) " + _BY + r"\((\w+)(?:\{[^}]*\})?\)")
_RE_PLAIN = re.compile(r"(sum|avg|max|min)\((\w+)\)")
_AGG = {"sum": sum, "max": max, "min": min, "avg": lambda v: sum(v) / len(v)}


def _series(snaps, name):
    """time -> [(labels, value)] for one metric name."""
    return [(s["t"], [(lab, v) for n, lab, v in s["samples"] if n == name]) for s in snaps]


def _key(labels: dict, by: list[str]) -> tuple:
    return tuple(labels.get(b, "") for b in by)


def _legend(fmt: str, by: list[str], key: tuple) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(dict(zip(by, key, strict=True)).get(m.group(1), "")), fmt)


def _counter_sums(series, by):
    """per time: group -> summed counter (each source series summed first)."""
    out = []
    for t, rows in series:
        g: dict[tuple, float] = defaultdict(float)
        for lab, v in rows:
            g[_key(lab, by)] += v
        out.append((t, g))
    return out


def _rates(sums):
    out = []
    for i, (t, g) in enumerate(sums):
        j = i
        while j > 0 and t - sums[j - 1][0] <= RATE_WINDOW_S:
            j -= 1
        if j == i:
            continue
        t0, g0 = sums[j]
        out.append((t, {k: max(0.0, (v - g0.get(k, 0.0)) / (t - t0)) for k, v in g.items()}))
    return out


def evaluate(expr: str, legend: str, snaps) -> dict[str, tuple[list[float], list[float]]]:
    """legend -> (times, values)."""
    lines: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    if m := _RE_QUANT.match(expr):
        q, by, name = float(m.group(1)), [b.strip() for b in m.group(2).split(",")], m.group(3)
        rest = [b for b in by if b != "le"]
        rates = _rates(_counter_sums(_series(snaps, name + "_bucket"), by))
        for t, g in rates:
            groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
            for k, v in g.items():
                d = dict(zip(by, k, strict=True))
                groups[_key(d, rest)].append((float(d["le"]), v))
            for gk, buckets in groups.items():
                val = _quantile(q, sorted(buckets))
                if val is not None:
                    xs, ys = lines[_legend(legend, rest, gk)]
                    xs.append(t)
                    ys.append(val)
        return lines
    if m := _RE_RATE.match(expr):
        by = [b.strip() for b in (m.group(1) or "").split(",") if b.strip()]
        for t, g in _rates(_counter_sums(_series(snaps, m.group(2)), by)):
            for k, v in g.items():
                xs, ys = lines[_legend(legend, by, k)]
                xs.append(t)
                ys.append(v)
        return lines
    m = _RE_AGG.match(expr) or _RE_PLAIN.match(expr)
    if m:
        agg = _AGG[m.group(1)]
        by = [b.strip() for b in (m.group(2) or "").split(",") if b.strip()] if m.re is _RE_AGG else []
        name = m.group(3) if m.re is _RE_AGG else m.group(2)
        for t, rows in _series(snaps, name):
            g: dict[tuple, list[float]] = defaultdict(list)
            for lab, v in rows:
                g[_key(lab, by)].append(v)
            for k, vs in g.items():
                xs, ys = lines[_legend(legend, by, k)]
                xs.append(t)
                ys.append(agg(vs))
        return lines
    raise ValueError(f"render.py cannot evaluate {expr!r}")


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile on cumulative (le, rate) pairs."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0.0)
        prev_le, prev_c = le, c
    return prev_le


def render(samples: Path, png: Path, title: str = "hetserve", from_s: float = 0.0, to_s: float = math.inf) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    if not snaps:
        raise SystemExit(f"{samples}: no samples")
    t0 = snaps[0]["t"]
    # Keep a minute before the range: rates and quantiles need the earlier counters.
    snaps = [s for s in snaps if from_s - RATE_WINDOW_S <= s["t"] - t0 <= to_s]
    rows: list[list] = [[]]
    width = 0
    for p in PANELS:
        if width + p.width > 24:
            rows.append([])
            width = 0
        rows[-1].append(p)
        width += p.width
    fig = plt.figure(figsize=(20, 4.0 * len(rows)))
    grid = fig.add_gridspec(len(rows), 24)
    for r, row in enumerate(rows):
        x = 0
        for p in row:
            ax = fig.add_subplot(grid[r, x : x + p.width])
            x += p.width
            n = 0
            for tgt in p.targets:
                for label, (xs, ys) in sorted(evaluate(tgt.expr, tgt.legend, snaps).items()):
                    keep = [(t - t0, y) for t, y in zip(xs, ys, strict=True) if t - t0 >= from_s]
                    ax.plot([k[0] for k in keep], [k[1] for k in keep], label=label, linewidth=1.2)
                    n += 1
            ax.set_title(p.title + ("" if p.emitted else "  [partly not emitted yet]"), fontsize=10)
            ax.set_xlabel("s", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if p.unit == "percentunit":
                ax.set_ylim(0, 1.05)
            if n:
                ax.legend(fontsize=6, ncol=2 if n > 6 else 1, loc="upper left")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    print(f"wrote {png}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scrape")
    s.add_argument("state_file", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--duration-s", type=float, default=600.0)
    s.add_argument("--interval-s", type=float, default=5.0)
    r = sub.add_parser("render")
    r.add_argument("samples", type=Path)
    r.add_argument("png", type=Path)
    r.add_argument("--title", default="hetserve")
    r.add_argument("--from-s", type=float, default=0.0, help="seconds after the first sample")
    r.add_argument("--to-s", type=float, default=math.inf)
    a = p.parse_args(argv)
    if a.cmd == "scrape":
        scrape(a.state_file, a.out, a.duration_s, a.interval_s)
    else:
        render(a.samples, a.png, a.title, a.from_s, a.to_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
