#!/usr/bin/env bash
# The README's test command: install as the README says, then run the whole suite with pytest.
# Soak tests (marked slow) and GPU tests are deselected by pyproject's addopts; run soaks from benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest -q -ra "$@"
