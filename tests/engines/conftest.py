"""Engine test fixtures: the tiny random-weight Llama, built once per session for the vLLM tier.

Building needs transformers/tokenizers/torch, which only the vLLM tier installs; without them the
fixture skips, so the rest of the suite never pays for (or depends on) the tier.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKE_TINY_MODEL = REPO_ROOT / "scripts" / "make_tiny_model.py"


@pytest.fixture(scope="session")
def make_tiny_model_script():
    """scripts/make_tiny_model.py as a module (scripts/ is not a package; it imports torch and
    transformers only inside its functions)."""
    spec = importlib.util.spec_from_file_location("hetserve_make_tiny_model", MAKE_TINY_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, make_tiny_model_script) -> Path:
    """Directory holding the tiny Llama (config, bfloat16 safetensors, tokenizer, chat template)."""
    for name in ("torch", "transformers", "tokenizers"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (vLLM tier: scripts/install_vllm_cpu.sh)")
    out = tmp_path_factory.mktemp("tiny-llama")
    return make_tiny_model_script.make_tiny_model(out)
