"""Accelerator and model catalogs, and the one place that names a type's Ray custom resource.

Shipped data: `data/accelerators.yaml` (datasheets, built by scripts/build_catalog.py),
`data/efficiency.json` (per-type efficiency factors fitted by scripts/fit_profiles.py) and
`data/models.yaml`. A cluster YAML may add or override entries. No ray import here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pydantic import ValidationError

from hetserve.config import AcceleratorSpec, ConfigError, ModelSpec, format_validation_error
from hetserve.strict_yaml import parse_strict_yaml

__all__ = ["Catalog", "default_catalog", "ray_resource_name"]


def ray_resource_name(accelerator: str) -> str:
    """The Ray custom resource that labels one device of this type (one unit per device).

    The type name itself, so the glossary, the cluster YAML, the dashboard and `ray status` all
    spell it the same way.
    """
    return accelerator


def _read_data(name: str) -> str:
    return resources.files("hetserve.data").joinpath(name).read_text()


@dataclass(frozen=True)
class Catalog:
    """Known accelerator types and models, by name."""

    accelerators: Mapping[str, AcceleratorSpec]
    models: Mapping[str, ModelSpec]

    def accelerator(self, name: str) -> AcceleratorSpec:
        try:
            return self.accelerators[name]
        except KeyError:
            raise ConfigError(
                f"unknown accelerator type {name!r}; known: {', '.join(sorted(self.accelerators))}"
            ) from None

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(self.models))}") from None

    def with_accelerators(self, extra: Iterable[AcceleratorSpec]) -> Catalog:
        """A copy where `extra` adds types or replaces same-named ones."""
        merged = dict(self.accelerators)
        for spec in extra:
            merged[spec.name] = spec
        return Catalog(merged, self.models)

    def with_models(self, extra: Iterable[ModelSpec]) -> Catalog:
        merged = dict(self.models)
        for spec in extra:
            merged[spec.name] = spec
        return Catalog(self.accelerators, merged)


def _validated(items: list, model: type[AcceleratorSpec] | type[ModelSpec], source: str) -> dict:
    out = {}
    for i, item in enumerate(items):
        try:
            spec = model.model_validate(item)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, f"{source}: [{i}]")) from None
        out[spec.name] = spec
    return out


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The shipped catalog, with fitted efficiency factors applied where data exists."""
    acc_raw = parse_strict_yaml(_read_data("accelerators.yaml"), "accelerators.yaml").data["accelerators"]
    try:
        eff = json.loads(_read_data("efficiency.json"))
    except FileNotFoundError:
        eff = {}
    for entry in acc_raw:
        fitted = eff.get("types", {}).get(entry["name"]) or eff.get("default") or {}
        for key in ("eta_bw", "eta_flops", "step_overhead_ms"):
            if key in fitted:
                entry[key] = fitted[key]
    accelerators = _validated(acc_raw, AcceleratorSpec, "accelerators.yaml")
    models_raw = parse_strict_yaml(_read_data("models.yaml"), "models.yaml").data["models"]
    models = _validated(models_raw, ModelSpec, "models.yaml")
    return Catalog(accelerators, models)
