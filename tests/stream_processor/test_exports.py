"""The public surface of the stream processor package is pinned."""

from __future__ import annotations

import importlib

import pytest

import stream_processor
from stream_processor import exceptions


def test_package_exports() -> None:
    assert sorted(stream_processor.__all__, key=str.lower) == [
        "CassandraSinkError",
        "ConfigError",
        "DeadLetterSinkError",
        "QUERY_NAMES",
        "SinkError",
        "StreamProcessorError",
        "StreamSettings",
    ]


@pytest.mark.parametrize(
    "module",
    ["config", "exceptions", "transforms", "sinks", "metrics", "queries", "jobs.pipeline"],
)
def test_every_module_declares_all(module: str) -> None:
    mod = importlib.import_module(f"stream_processor.{module}")
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_every_error_is_in_the_package_tree() -> None:
    """A new error class joins StreamProcessorError and the tree drawn in the module's docstring."""
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.StreamProcessorError), name
        assert name in (exceptions.__doc__ or ""), name


def test_main_reports_bad_config_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from stream_processor.jobs.pipeline import main

    monkeypatch.setenv("BARS_WATERMARK", "soon")
    assert main([]) == 2
    assert "BARS_WATERMARK='soon'" in caplog.text
    assert "Traceback" not in caplog.text
