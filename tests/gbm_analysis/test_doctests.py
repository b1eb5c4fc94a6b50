"""The docstring examples of the package run."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "config",
        "model",
        "forecast",
        "backtest",
        "io",
        "job",
        "learned",
        "training",
        "drift",
        "registry",
    ],
)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"gbm_analysis.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0
