"""``python -m gbm_analysis drift`` as a user (or cron) runs it, against the real Cassandra and a
real MLflow store: a symbol whose recent bars moved past the PSI threshold is retrained at once,
on Spark, and the check is stored, exported and flagged; a calm symbol is not retrained."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gbm_analysis import mlp
from gbm_analysis.registry import Registry
from gbm_analysis.training import TrainSettings, train_symbol
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT
from tests.gbm_analysis.test_learned import gbm_minutes

# MLflow 3.17's SQL store uses a loader SQLAlchemy 2.1 deprecates (not our code)
NOLOAD = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")
pytestmark = [pytest.mark.integration, NOLOAD]

N_MINUTES = 3_200
RECENT = 360  # GBM_DRIFT_WINDOW=6h
WINDOWS = {"GBM_TRAIN_WINDOW": "1500m", "GBM_CALIB_WINDOW": "800m", "GBM_TEST_WINDOW": "600m"}


def _bars(start: datetime, *, seed: int, shifted: bool) -> pd.DataFrame:
    """1-minute bars ending at ``start + N_MINUTES``; ``shifted``: the last 6 hours move three
    times as much (volatility tripled), the rest is the same GBM."""
    calm = gbm_minutes(N_MINUTES, seed=seed)
    if shifted:
        wild = gbm_minutes(RECENT, seed=seed + 1, sigma_bps=24.0)
        scale = float(calm["close"].iloc[-RECENT - 1]) / 100.0
        for column in ("open", "high", "low", "close"):
            calm.loc[calm.index[-RECENT:], column] = wild[column].to_numpy() * scale
        calm.loc[calm.index[-RECENT:], "volume"] = wild["volume"].to_numpy()
    calm["t"] = int(start.timestamp()) + 60 * np.arange(N_MINUTES)
    return calm


def _credentials(settings: CassandraSettings) -> dict[str, str]:
    """The writers' role, named outright: the job's STATE_DIR is the test's, without the
    stack's credentials file."""
    return {
        "CASSANDRA_USERNAME": settings.username or "",
        "CASSANDRA_PASSWORD": settings.password.get_secret_value() if settings.password else "",
    }


def _insert(session: Any, symbol: str, bars: pd.DataFrame) -> None:
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = session.prepare(
        "INSERT INTO trades_agg_1m (symbol, day, window_start, window_end, open, high, low, close,"
        " volume, vwap, trade_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    params = []
    for t, o, h, lo, c, v in zip(
        *(bars[k] for k in ("t", "open", "high", "low", "close", "volume")), strict=True
    ):
        ws = datetime.fromtimestamp(int(t), UTC)
        params.append(
            (symbol, ws.date(), ws, ws + timedelta(minutes=1), o, h, lo, c, v, (h + lo + c) / 3, 5)
        )
    execute_concurrent_with_args(session, stmt, params, concurrency=32)


def test_drift_past_the_threshold_retrains_that_symbol_and_says_so(
    cassandra_session: Any, test_keyspace: CassandraSettings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    moved, calm = f"D{tag}:MOVED", f"D{tag}:CALM"
    # the newest bar ends at the last full minute, so `drift` (now) and the retrain see them all
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=N_MINUTES)
    frames = {
        moved: _bars(start, seed=31, shifted=True),
        calm: _bars(start, seed=41, shifted=False),
    }
    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        mlp=mlp.MlpParams(max_iter=5),
        baselines=False,
    )
    state = tmp_path / "state"
    registry = Registry(f"sqlite:///{state}/mlflow/mlflow.db", state / "mlflow" / "artifacts")
    for symbol, bars in frames.items():
        _insert(cassandra_session, symbol, bars)
        # production v1, trained before the last 6 hours (as a training a day earlier would be)
        (outcome,) = train_symbol(symbol, bars.iloc[: -RECENT - 60], settings)
        assert registry.log(outcome).version == 1

    ran = subprocess.run(
        [sys.executable, "-m", "gbm_analysis", "drift"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "STATE_DIR": str(state),
            **_credentials(test_keyspace),
            "GBM_LEARNED_MODELS": "mlp",
            "GBM_MLP_MAX_ITER": "5",
            "GBM_DRIFT_WINDOW": "6h",
            **WINDOWS,
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert f"retraining {moved} (PSI >= 0.25)" in ran.stdout
    assert calm not in ran.stdout.split("retraining", 1)[1].splitlines()[0]

    # the moved symbol has a new version, scored against v1 on the latest window
    versions = registry.client.search_model_versions(f"name='forecast_mlp_D{tag}_MOVED'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert len(registry.client.search_model_versions(f"name='forecast_mlp_D{tag}_CALM'")) == 1

    rows = {
        (r.symbol, r.feature): r
        for symbol in (moved, calm)
        for r in cassandra_session.execute("SELECT * FROM model_drift WHERE symbol = %s", (symbol,))
    }
    assert rows[(moved, "abs_return")].psi >= 0.25 and rows[(moved, "abs_return")].drifted
    assert all(r.retrain for (s, _), r in rows.items() if s == moved)
    assert not any(r.retrain for (s, _), r in rows.items() if s == calm)
    assert all(r.psi < 0.25 for (s, _), r in rows.items() if s == calm)
    assert {r.model_version for r in rows.values()} == {1}

    prom = (state / "metrics" / "forecast_drift.prom").read_text()
    assert f'forecast_drift_retrain{{symbol="{moved}"}} 1.0' in prom
    assert f'forecast_drift_retrain{{symbol="{calm}"}} 0.0' in prom

    # --no-retrain checks and stores, and trains nothing
    again = subprocess.run(
        [sys.executable, "-m", "gbm_analysis", "drift", "--no-retrain"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "STATE_DIR": str(state),
            **_credentials(test_keyspace),
            "GBM_SYMBOLS": moved,
            "GBM_DRIFT_WINDOW": "6h",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "retraining" not in again.stdout and "DRIFT (PSI: retrain)" in again.stdout
    assert len(registry.client.search_model_versions(f"name='forecast_mlp_D{tag}_MOVED'")) == 2
