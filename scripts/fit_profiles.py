"""Regenerate hetserve/data/profiles.json and hetserve/data/efficiency.json from the shared data.

    python scripts/fit_profiles.py --data ../shared/data

Fits one latency profile per (model, accelerator type, TP) and data set (hetserve/profiles.py
says what each data set contributes), holding out every 5th row to measure the fit, then derives
per-type efficiency factors (eta_bw, eta_flops, step_overhead_ms) from the preferred profiles.
MI300X, which has no step data, gets the H100's factors scaled by its relative speed in argonne's
vLLM runs; other types without data get the median of the types above as a prior. Never reads
aiconfigurator/silicon_sample.csv (validation data, see benchmarks/model_accuracy.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hetserve.catalog import default_catalog
from hetserve.model.latency import ENGINE_PREFERENCE, LatencyModel, fit_efficiency, fit_profiles
from hetserve.profiles import ARGONNE_REFERENCE, collect_samples, read_argonne_relative_speed

REPO = Path(__file__).resolve().parent.parent

# Where each type's efficiency factors come from (the profiles fit_efficiency sees).
_EFFICIENCY_SOURCES = {
    "vllm-0.14": "fitted on profiles composed from aiconfigurator vLLM 0.14 kernel tables",
    "vllm-0.4": "fitted on helix-profiles (vLLM 0.4) profiles",
    "splitwise": "fitted on splitwise-perf profiles",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data directory")
    parser.add_argument("--out", type=Path, default=REPO / "hetserve" / "data", help="where the JSON files go")
    args = parser.parse_args(argv)
    if not (args.data / "helix-profiles").is_dir():
        print(f"error: --data {args.data} has no helix-profiles/ folder", file=sys.stderr)
        return 2

    catalog = default_catalog()
    samples = collect_samples(args.data, catalog)
    fitted = fit_profiles(samples, catalog.models, catalog.accelerators)
    profiles = [p for p, _ in fitted]

    # Efficiency factors from the profiles the latency model will actually use.
    used = LatencyModel(profiles, catalog.models)
    preferred = [p for p in profiles if used.profile(p.model, p.accelerator, p.tp) is p]
    types = fit_efficiency(preferred, catalog.models, catalog.accelerators)
    for name, entry in types.items():
        engines = {p.engine for p in preferred if p.accelerator == name}
        best = min(engines, key=lambda e: ENGINE_PREFERENCE.index(e) if e in ENGINE_PREFERENCE else 99)
        entry["source"] = _EFFICIENCY_SOURCES.get(best, best)
    default = {
        key: round(float(np.median([t[key] for t in types.values()])), 4)
        for key in ("eta_bw", "eta_flops", "step_overhead_ms")
    }
    default["source"] = f"median of the {len(types)} types fitted on step data"
    # Types with no step data but a relative speed in argonne's vLLM runs: the H100's factors
    # scaled by how much slower the type ran under the same vLLM build.
    reference = "H100-SXM5-80GB"
    for name, rel in read_argonne_relative_speed(args.data).items():
        if name in types or name not in catalog.accelerators or reference not in types:
            continue
        ref, ref_spec, spec = types[reference], catalog.accelerator(reference), catalog.accelerator(name)
        types[name] = {
            "eta_bw": float(
                np.clip(ref["eta_bw"] * ref_spec.mem_bw_gbps / (spec.mem_bw_gbps * rel.decode_ratio), 0.05, 1)
            ),
            "eta_flops": float(
                np.clip(ref["eta_flops"] * ref_spec.peak_tflops / (spec.peak_tflops * rel.prefill_ratio), 0.05, 1)
            ),
            "step_overhead_ms": round(ref["step_overhead_ms"] * rel.decode_ratio, 3),
            "num_profiles": 0,
            "source": (
                f"{reference} factors scaled by argonne-llm-inference-bench vLLM (2024 build) relative speed "
                f"vs {ARGONNE_REFERENCE}: decode x{rel.decode_ratio:.2f} ({rel.num_decode_pairs} pairs), "
                f"prefill x{rel.prefill_ratio:.2f} ({rel.num_prefill_pairs} pairs)"
            ),
        }

    for entry in types.values():
        for key in ("eta_bw", "eta_flops"):
            entry[key] = round(entry[key], 4)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profiles.json").write_text(
        json.dumps(
            {
                "generated_by": "scripts/fit_profiles.py",
                "note": "prefill_mape/decode_mape: mean absolute error (fraction) on held-out rows (every 5th)",
                "profiles": [p.to_dict() for p in profiles],
            },
            indent=1,
        )
        + "\n"
    )
    (args.out / "efficiency.json").write_text(
        json.dumps({"generated_by": "scripts/fit_profiles.py", "types": types, "default": default}, indent=1) + "\n"
    )
    print(f"{len(profiles)} profiles ({len(preferred)} preferred), {len(types)} fitted types -> {args.out}")
    for name, entry in sorted(types.items()):
        print(
            f"  {name:16s} eta_bw={entry['eta_bw']:.3f} eta_flops={entry['eta_flops']:.3f} "
            f"overhead={entry['step_overhead_ms']:.2f} ms  ({entry['num_profiles']} profiles)"
        )
    print(
        f"  default          eta_bw={default['eta_bw']:.3f} eta_flops={default['eta_flops']:.3f} "
        f"overhead={default['step_overhead_ms']:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
