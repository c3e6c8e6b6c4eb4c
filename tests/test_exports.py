"""Each package's public surface: `__all__` names exist and stay in sync."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ("sigproc", "model", "ingest", "storage", "dashboard")


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exist(package: str) -> None:
    module = importlib.import_module(package)
    names = list(getattr(module, "__all__", []))
    assert len(names) == len(set(names)), f"{package}.__all__ repeats a name"
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_submodule_exports_reach_the_package(package: str) -> None:
    """Every name a public submodule exports is re-exported by its package."""
    module = importlib.import_module(package)
    exported = set(getattr(module, "__all__", []))
    for info in pkgutil.iter_modules(module.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        sub = importlib.import_module(f"{package}.{info.name}")
        missing = set(getattr(sub, "__all__", [])) - exported
        assert not missing, f"{package}.{info.name} exports {sorted(missing)} that {package} does not"
