#!/usr/bin/env bash
# Lint, format check and type check of the package, as CI runs them (after scripts/install.sh).
# Findings fail the run; fix them rather than silencing them.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m ruff check hetserve
.venv/bin/python -m ruff format --check hetserve
.venv/bin/python -m mypy
