"""The benchmarks' shared helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks._common import service_pid


def test_a_stale_pid_file_naming_another_process_is_no_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid file left by a stopped service can name a pid the system has since given to another
    process; its CPU must not be counted as the service's."""
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    (tmp_path / "trino").mkdir()
    (tmp_path / "trino" / "pid").write_text(f"{os.getpid()}\n")
    assert service_pid("trino") is None


def test_no_pid_file_is_no_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    assert service_pid("superset") is None
