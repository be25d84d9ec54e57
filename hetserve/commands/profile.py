"""`hetserve profile`: measure one engine's step-time coefficients and write a profile file.

    hetserve profile --model llama-3.1-8b --accelerator L4 --out profiles.json            # emulated
    hetserve profile --engine vllm --model tiny-llama --accelerator A100-SXM4-80GB \\
        --vllm-model-path DIR --out profiles.json                                         # vLLM
    hetserve plan CLUSTER.yaml --profiles profiles.json

The sweep, the fit and the file format are in hetserve/profiles/sweep.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from hetserve.catalog import default_catalog
from hetserve.config import ConfigError
from hetserve.records import LatencyProfile

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure one engine's step times over a short sweep and write a profile file",
        description="Drive one engine through batch sizes x prompt lengths, fit the step-time model to "
        "its step records, and write (or merge into) a profile file for `hetserve plan --profiles`.",
    )
    p.add_argument("--model", required=True, help="catalog model name")
    p.add_argument("--accelerator", required=True, help="catalog accelerator type the profile is for")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--engine", choices=("emulated", "vllm"), default="emulated")
    p.add_argument("--out", type=Path, required=True, help="profile file (JSON) to write or merge into")
    p.add_argument("--max-num-seqs", type=int, default=16, dest="max_num_seqs")
    p.add_argument("--max-model-len", type=int, default=None, dest="max_model_len")
    p.add_argument("--prompt-tokens", default="32,128,512", dest="prompt_tokens", help="comma-separated")
    p.add_argument("--batch-sizes", default="1,4,16", dest="batch_sizes", help="comma-separated")
    p.add_argument("--output-tokens", type=int, default=24, dest="output_tokens")
    p.add_argument("--speed-factor", type=float, default=1.0, dest="speed_factor", help="emulated: true speed x plan")
    p.add_argument("--time-scale", type=float, default=0.01, dest="time_scale", help="emulated: wall s per engine s")
    p.add_argument("--vllm-model-path", default=None, dest="vllm_model_path")
    p.add_argument(
        "--vllm-engine-kwargs", default="{}", dest="vllm_engine_kwargs", help="JSON object of extra AsyncEngineArgs"
    )
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, dest="gpu_memory_utilization")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(func=run)


def _ints(text: str, field: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{field}: expected comma-separated integers (got {text!r})") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--{field}: expected positive integers (got {text!r})")
    return values


def run(args: argparse.Namespace) -> int:
    from hetserve.engines import EngineSpec, create_engine
    from hetserve.model import LatencyModel
    from hetserve.planner.single import plan_single_configuration
    from hetserve.profiles.sweep import Sweep, fit_step_totals, run_sweep, write_profile_file
    from hetserve.records import Workload

    catalog = default_catalog()
    model = catalog.model(args.model)
    accel = catalog.accelerator(args.accelerator)
    max_len = args.max_model_len or min(model.max_model_len, 4096)
    sweep = Sweep(
        _ints(args.prompt_tokens, "prompt-tokens"), _ints(args.batch_sizes, "batch-sizes"), args.output_tokens
    )
    try:
        engine_kwargs = json.loads(args.vllm_engine_kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--vllm-engine-kwargs: not JSON ({exc})") from None
    # The configuration priced as the planner prices it: its coefficients are the fit's prior and
    # what an emulated engine runs with (times --speed-factor).
    workload = Workload(max(sweep.prompt_tokens), args.output_tokens, max_len)
    deployment = plan_single_configuration(
        model,
        accel,
        workload,
        tp=args.tp,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_memory_utilization,
        latency_model=LatencyModel.default(),
    ).deployments[0]
    spec = EngineSpec(
        model=model,
        deployment=deployment,
        max_model_len=max_len,
        time_scale=args.time_scale,
        model_path=args.vllm_model_path,
        engine_kwargs=engine_kwargs,
        speed_factor=args.speed_factor,
    )
    prior = deployment.coeffs
    if args.engine == "vllm":
        import vllm

        engine_version = f"vllm-{vllm.__version__}"
    else:
        engine_version = "emulated"

    async def measure():
        engine = create_engine(args.engine, spec)
        await engine.start()
        try:
            return await run_sweep(engine, sweep, args.max_num_seqs, max_len, model.vocab_size)
        finally:
            await engine.shutdown()

    steps = asyncio.run(measure())
    coeffs, rel_rmse = fit_step_totals(steps, prior)
    profile = LatencyProfile(
        model=model.name,
        accelerator=accel.name,
        tp=args.tp,
        coeffs=coeffs,
        source=f"hetserve profile ({args.engine}, {steps.num_steps} steps)",
        engine=engine_version,
        num_samples=steps.num_steps,
        prefill_mape=None,
        decode_mape=rel_rmse,
    )
    write_profile_file(args.out, [profile])
    if args.json:
        json.dump(profile.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        c = coeffs
        print(
            f"{model.name} on {args.tp} x {accel.name} ({engine_version}): {steps.num_steps} steps, "
            f"fit RMS error {rel_rmse:.1%}\n"
            f"  prefill T_p(N) = {c.a_p * 1e6:.2f} us * N + {c.b_p * 1e3:.2f} ms\n"
            f"  decode  T_d(B,S) = {c.a_d * 1e6:.1f} us * B + {c.c_d * 1e9:.2f} ns * S + {c.b_d * 1e3:.2f} ms\n"
            f"  written to {args.out}"
        )
    return 0
