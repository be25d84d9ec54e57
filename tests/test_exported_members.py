"""The public API is pinned: each package's `__all__` is exactly what it imports for its users
(after httpx's tests/test_exported_members.py). A name added to a package without deciding it is
public, or an `__all__` entry left behind after a removal, fails here."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import hetserve

PACKAGES = ["hetserve"] + sorted(
    f"hetserve.{m.name}"
    for m in pkgutil.iter_modules(hetserve.__path__)
    if m.ispkg and m.name not in ("commands", "data", "serving")  # namespaces only, nothing re-exported
)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_public_members_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    public = {k for k, v in vars(module).items() if not k.startswith("_") and not isinstance(v, types.ModuleType)}
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    assert set(exported) == public


def test_packages_without_re_exports_define_nothing_public() -> None:
    for name in ("hetserve.commands", "hetserve.data", "hetserve.serving"):
        module = importlib.import_module(name)
        public = [k for k, v in vars(module).items() if not k.startswith("_") and not isinstance(v, types.ModuleType)]
        assert public == [], name


def test_top_level_api() -> None:
    assert hetserve.__all__ == [
        "Catalog",
        "Cluster",
        "ClusterSpec",
        "ConfigError",
        "DeploymentPlan",
        "InstanceConfig",
        "LatencyCoeffs",
        "ModelSpec",
        "Plan",
        "PlannedInstance",
        "RequestInfo",
        "RuntimeFailure",
        "default_catalog",
        "load_cluster",
        "load_plan",
        "ray_resource_name",
        "resolve_cluster",
        "search_plan",
    ]
