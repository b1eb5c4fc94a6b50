"""Fixtures of the GBM tests: synthetic bars, a Cassandra session and a Spark session."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
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


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with MLflow's schema migrations applied, made once a session:
    the migrations cost seconds of CPU for every new store."""
    from mlflow import MlflowClient

    import gbm_analysis.registry  # noqa: F401  (turns MLflow's telemetry off, as for the job)

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()  # creates, migrates
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, migrated_mlflow_db: Path) -> str:
    """A new MLflow store of this test alone (a copy of the migrated empty one); Registry makes
    its experiment in it as in a store it had created itself."""
    target = tmp_path / "mlflow" / "mlflow.db"
    target.parent.mkdir()
    shutil.copyfile(migrated_mlflow_db, target)
    return f"sqlite:///{target}"


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
