"""The docstring examples of every package run: each module of collector, stream_processor,
gbm_analysis, dashboards, schemas and infra whose docstrings hold an example (``>>>``) is found
by reading the source, so a new module's examples run without being listed here."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("collector", "stream_processor", "gbm_analysis", "dashboards", "schemas", "infra")


def modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if ">>> " in path.read_text(encoding="utf-8"):
                parts = path.relative_to(REPO_ROOT).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


MODULES = modules_with_examples()


def test_every_package_has_examples() -> None:
    assert {name.split(".")[0] for name in MODULES} == set(PACKAGES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0, f"{name}: no example found by doctest"
    assert result.failed == 0, name
