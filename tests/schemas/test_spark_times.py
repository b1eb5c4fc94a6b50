"""Timestamps collected from Spark are the same instant whatever the host's time zone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pyspark.sql.types import TimestampType

from schemas.runtime.spark import collected_utc
from stream_processor.rollups import naive_utc


@pytest.fixture
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The process's local zone set to ``request.param`` (what ``TZ=...`` does at start-up)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def _micros(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize("host_zone", ["UTC", "America/New_York", "Asia/Kolkata"], indirect=True)
@pytest.mark.parametrize(
    "instant",
    [
        datetime(2024, 8, 8, 23, 59, 55, 123_000, tzinfo=UTC),  # the last 5-s bar of a UTC day
        datetime(2024, 8, 9, 0, 0, tzinfo=UTC),
        # New York's clocks go back at 06:00 UTC: 05:30 and 06:30 UTC are both 01:30 local
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
        datetime(2024, 11, 3, 6, 30, tzinfo=UTC),
        # and forward at 07:00 UTC on 10 March (02:00-03:00 local does not exist)
        datetime(2024, 3, 10, 7, 0, 5, tzinfo=UTC),
    ],
)
def test_collected_timestamps_are_the_same_utc_instant_in_any_zone(
    host_zone: str, instant: datetime
) -> None:
    collected = TimestampType().fromInternal(_micros(instant))  # what collect() hands out
    assert collected.tzinfo is None
    assert collected_utc(collected) == instant.replace(tzinfo=None)


@pytest.mark.parametrize("host_zone", ["Asia/Kolkata"], indirect=True)
def test_naive_local_times_are_off_by_the_host_offset(host_zone: str) -> None:
    """What went wrong before: the collected value taken for UTC is 5 h 30 min late."""
    instant = datetime(2024, 8, 9, 0, 0, tzinfo=UTC)
    collected = TimestampType().fromInternal(_micros(instant))
    assert collected - instant.replace(tzinfo=None) == timedelta(hours=5, minutes=30)


def test_aware_times_are_converted_and_naive_utc_kept() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    assert naive_utc(datetime(2024, 8, 9, 5, 30, tzinfo=ist)) == datetime(2024, 8, 9)
    assert naive_utc(datetime(2024, 8, 9, 5, 30)) == datetime(2024, 8, 9, 5, 30)
    assert collected_utc(datetime(2024, 8, 9, 5, 30, tzinfo=ist)) == datetime(2024, 8, 9)
