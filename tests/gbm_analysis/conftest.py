"""Fixtures of the GBM tests: synthetic bars, a Cassandra session and a Spark session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from schemas.settings import CassandraSettings

BAR = 5.0


def gbm_closes(
    n: int, *, sigma_per_s: float, s0: float = 100.0, mu_per_s: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Closes of an exact GBM sampled every BAR seconds (first close is s0 moved one step)."""
    rng = np.random.default_rng(seed)
    steps = (mu_per_s - 0.5 * sigma_per_s**2) * BAR + sigma_per_s * np.sqrt(BAR) * (
        rng.standard_normal(n)
    )
    return s0 * np.exp(np.cumsum(steps))


def tick_closes(s0: float, *, zero_share: float, n_minutes: int, seed: int = 0) -> np.ndarray:
    """Two-decimal closes of 5-second bars that move by one cent, up or down, only at a minute
    boundary, and stay put on a ``zero_share`` of the minutes (a quiet, tick-bound market); the last
    close is ``s0``."""
    rng = np.random.default_rng(seed)
    up = (1.0 - zero_share) / 2.0
    cents = np.cumsum(rng.choice([0, 1, -1], size=n_minutes, p=[zero_share, up, up]))
    per_minute = np.round(s0 + 0.01 * (cents - cents[-1]), 2)  # the last close is s0
    return np.repeat(per_minute, int(60 / BAR))


@pytest.fixture(scope="module")
def cassandra_session(test_keyspace: CassandraSettings) -> Iterator[Any]:
    from schemas.runtime.cassandra import connect

    cluster, session = connect(test_keyspace, keyspace=test_keyspace.keyspace)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="module")
def spark(test_keyspace: CassandraSettings) -> Iterator[Any]:
    from schemas.runtime.spark import build_session

    session = build_session("gbm_analysis_test", test_keyspace)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def insert_bars(cassandra_session: Any) -> Callable[[str, list[datetime], np.ndarray], None]:
    """Write 5-second bars (close only matters to the model; OHLC are set to the close)."""
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = cassandra_session.prepare(
        "INSERT INTO trades_agg_5s (symbol, day, window_start, window_end, open, high, low, close,"
        " volume, vwap, trade_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )

    def insert(symbol: str, starts: list[datetime], closes: np.ndarray) -> None:
        params = [
            (
                symbol,
                ws.astimezone(UTC).date(),
                ws,
                ws + timedelta(seconds=BAR),
                float(c),
                float(c),
                float(c),
                float(c),
                1.0,
                float(c),
                1,
            )
            for ws, c in zip(starts, closes, strict=True)
        ]
        execute_concurrent_with_args(cassandra_session, stmt, params, concurrency=32)

    return insert
