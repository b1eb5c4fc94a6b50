"""The driver-side store on a fake session: what it does with rows it cannot use."""

from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gbm_analysis.io import GbmStore

Bar = namedtuple("Bar", "window_start window_end close")
T0 = datetime(2026, 1, 5, 12, 0)  # naive UTC, as the driver returns timestamps


class FakeSession:
    """Answers every query with the same rows (the store reads one day here)."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = list(rows)

    def execute(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.rows


def _bar(i: int, close: float | None, *, end: bool = True) -> Bar:
    start = T0 + timedelta(seconds=5 * i)
    return Bar(start, start + timedelta(seconds=5) if end else None, close)


@pytest.mark.parametrize(
    "bad",
    [
        _bar(1, 101.0, end=False),  # null window_end: another tool, an older version
        _bar(1, None),  # null close: a partial write
        _bar(1, float("nan")),
        _bar(1, 0.0),
    ],
)
def test_unusable_bar_rows_are_skipped_and_counted(
    bad: Bar, caplog: pytest.LogCaptureFixture
) -> None:
    store = GbmStore(FakeSession([_bar(0, 100.0), bad, _bar(2, 102.0)]), "ks")
    start = T0.replace(tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="gbm_analysis.io"):
        bars = store.read_bars("AAPL", start, start + timedelta(minutes=1))
    assert bars.n_unusable == 1
    assert bars.frame["close"].tolist() == [100.0, 102.0]
    assert bars.frame["window_end"].tolist() == [start.timestamp() + 5, start.timestamp() + 15]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("AAPL: skipped 1 of 3 5-second bar rows")


def test_usable_bars_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    store = GbmStore(FakeSession([_bar(0, 100.0)]), "ks")
    start = T0.replace(tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="gbm_analysis.io"):
        bars = store.read_bars("AAPL", start, start + timedelta(seconds=5))
    assert bars.n_unusable == 0 and len(bars.frame) == 1
    assert caplog.records == []
