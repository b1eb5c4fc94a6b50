"""The forecast run's as-of time: only bars closed by then are used (no Spark needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gbm_analysis.job import closed_as_of

BOUNDARY = datetime(2026, 1, 5, 12, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (BOUNDARY, BOUNDARY),  # a bar ends exactly now: it is closed
        (BOUNDARY + timedelta(microseconds=1), BOUNDARY),
        (BOUNDARY + timedelta(seconds=2, milliseconds=500), BOUNDARY),  # mid-bar
        (BOUNDARY + timedelta(seconds=4, microseconds=999_999), BOUNDARY),
        (BOUNDARY - timedelta(microseconds=1), BOUNDARY - timedelta(seconds=5)),
        (BOUNDARY.replace(tzinfo=None) + timedelta(seconds=3), BOUNDARY),  # naive is UTC
        (BOUNDARY.astimezone(timezone(timedelta(hours=-5))) + timedelta(seconds=1), BOUNDARY),
    ],
)
def test_as_of_is_floored_to_the_end_of_the_last_closed_bar(
    as_of: datetime, expected: datetime
) -> None:
    assert closed_as_of(as_of, 5) == expected


def test_a_minute_bar_grid_floors_to_the_minute() -> None:
    assert closed_as_of(BOUNDARY + timedelta(seconds=50), 60) == BOUNDARY - timedelta(seconds=5)
