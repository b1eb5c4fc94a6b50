from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "collector.config",
    "collector.connection",
    "collector.delivery",
    "collector.encoding",
    "collector.finnhub",
    "collector.heartbeat",
    "collector.ids",
    "collector.metrics",
    "collector.models",
    "collector.producer",
    "collector.producer_confluent",
    "collector.sink",
    "collector.feed.faults",
    "collector.feed.sources",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    assert result.attempted > 0
