"""The bar rebuild's command line and range arithmetic (no services)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from stream_processor.exceptions import ConfigError
from stream_processor.jobs.rebuild import day_chunks, rebuild_range
from tests.conftest import REPO_ROOT


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (_utc(2024, 8, 8, 23, 0, 2), _utc(2024, 8, 8, 23, 0, 7), ((23, 0, 0), (23, 0, 10))),
        (_utc(2024, 8, 8, 23, 0, 5), _utc(2024, 8, 8, 23, 0, 10), ((23, 0, 5), (23, 0, 10))),
        # 1 ms still needs its whole 5-s window
        (_utc(2024, 8, 8, 23, 59, 59), _utc(2024, 8, 9, 0, 0, 0, 1000), ((23, 59, 55), (0, 0, 5))),
    ],
)
def test_the_range_is_widened_to_whole_5s_windows(
    start: datetime, end: datetime, want: tuple[tuple[int, ...], tuple[int, ...]]
) -> None:
    r = rebuild_range(start, end)
    got = ((r.start.hour, r.start.minute, r.start.second), (r.end.hour, r.end.minute, r.end.second))
    assert got == want
    assert r.start.microsecond == r.end.microsecond == 0 and r.start.tzinfo == UTC


def test_chunks_are_utc_days_that_cover_the_range_once() -> None:
    chunks = day_chunks(_utc(2024, 8, 7, 22), _utc(2024, 8, 9, 0, 0, 5))
    assert chunks == [
        (_utc(2024, 8, 7, 22), _utc(2024, 8, 8)),
        (_utc(2024, 8, 8), _utc(2024, 8, 9)),
        (_utc(2024, 8, 9), _utc(2024, 8, 9, 0, 0, 5)),
    ]


@pytest.mark.parametrize(
    ("start", "end", "symbols", "message"),
    [
        (_utc(2024, 8, 9), _utc(2024, 8, 9), (), "--to: 2024-08-09T00:00:00+00:00 is not after"),
        (_utc(2024, 8, 9), _utc(2024, 8, 10), ("A", " "), "--symbols: 'A, ' has an empty"),
    ],
)
def test_bad_ranges_name_the_field_and_value(
    start: datetime, end: datetime, symbols: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        rebuild_range(start, end, symbols)


def _run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_processor.rebuild", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--from", "yesterday", "--to", "2024-08-09"], {}, "--from: 'yesterday' is not an ISO"),
        (["--from", "2024-08-09", "--to", "2024-08-09T25:00"], {}, "--to: '2024-08-09T25:00'"),
        (
            ["--from", "2024-08-09", "--to", "2024-08-09T00:00:00+02:00"],
            {},
            "--to: 2024-08-08T22:00:00+00:00 is not after --from 2024-08-09T00:00:00+00:00",
        ),
        (["--from", "2024-08-09", "--to", "2024-08-10", "--symbols", "A,"], {}, "--symbols: 'A,'"),
        (["--from", "2024-08-09", "--to", "2024-08-10"], {"CASSANDRA_PORT": "x"}, "CASSANDRA_PORT"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_before_spark_starts(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = _run_cli(*args, **env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""  # nothing started


def test_a_missing_bound_is_named_by_argparse() -> None:
    result = _run_cli("--to", "2024-08-09")
    assert result.returncode == 2
    assert "the following arguments are required: --from" in result.stderr
