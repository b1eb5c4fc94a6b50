"""``python -m gbm_analysis`` as a user runs it, against the real Cassandra, and on real trades."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gbm_analysis.config import GbmSettings
from gbm_analysis.evaluation import run_backtest
from gbm_analysis.io import GbmStore
from gbm_analysis.job import run_forecasts
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT
from tests.gbm_analysis.conftest import BAR, gbm_closes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def test_keyspace(module_keyspace: CassandraSettings) -> CassandraSettings:
    """This module's own keyspace: `backtest` scores every forecast in its keyspace, so the runs
    other modules leave in the session's keyspace (the dashboard tests write two) changed its
    counts."""
    return module_keyspace


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gbm_analysis", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_run_once_then_backtest_on_demo_sized_data(
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
) -> None:
    """A few minutes of bars (like `make demo`): run --once forecasts, backtest scores."""
    symbol = f"DEMO{uuid.uuid4().hex[:6]}:BTC"
    now = datetime.now(UTC).replace(microsecond=0)
    n = 48  # four minutes of 5-second bars, ending now
    starts = [now - timedelta(seconds=BAR * (n - i)) for i in range(n)]
    insert_bars(symbol, starts, gbm_closes(n, sigma_per_s=1e-4, seed=4))
    env = {
        "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
        "GBM_SYMBOLS": symbol,
        "GBM_PATHS": "500",
        "GBM_STEP": "10s",
        "GBM_STEPS": "3",
        "GBM_SEED": "77",
    }
    # as-of one minute before the last bar, so the three 10 s steps are realised already
    as_of = (now - timedelta(seconds=60)).isoformat()
    ran = _cli(["run", "--once", "--as-of", as_of], env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "seed 77, 3 forecasts written, 0 skipped" in ran.stdout

    scored = _cli(["backtest"], env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "9 scored, 0 not yet realised" in scored.stdout
    assert "rows written to gbm_backtest" in scored.stdout

    bad = _cli(["run", "--once"], {**env, "GBM_STEP": "7s"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: step_seconds=7 must be a multiple of bar_seconds=5"
    assert "Traceback" not in bad.stderr


def _real_bars(csv: Path, symbol: str) -> pd.DataFrame:
    """5-second bars of real trades, recomputed offline (last trade of each slot = close)."""
    trades = pd.read_csv(csv)
    trades = trades[trades["symbol"] == symbol].sort_values(["t_ms", "trade_id"])
    slot = trades["t_ms"] // 5000 * 5
    bars = trades.groupby(slot)["price"].last().rename("close").rename_axis("start")
    return bars.reset_index()


def test_real_btc_trades_forecast_backtest_and_api(
    shared_data: Path,
    spark: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
) -> None:
    from fastapi.testclient import TestClient

    from gbm_analysis.api import create_app

    bars = _real_bars(shared_data / "binance_futures_btcusdt_20200222.csv", "BINANCE:BTCUSDT-PERP")
    symbol = f"REAL{uuid.uuid4().hex[:6]}:BTCUSDT-PERP"
    starts = [datetime.fromtimestamp(int(s), UTC) for s in bars["start"]]
    insert_bars(symbol, starts, bars["close"].to_numpy())
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    settings = GbmSettings(
        lookback_seconds=3600, n_paths=2_000, n_steps=30, n_sample_paths=5, symbols=(symbol,)
    )
    as_of = datetime(2020, 2, 22, 1, 0, tzinfo=UTC)
    for minutes in (0, 10, 20):  # three runs, like three scheduled ones
        at = as_of + timedelta(minutes=minutes)
        result = run_forecasts(
            spark, store, settings, as_of=at, issued_at=datetime.now(UTC), seed=minutes
        )
        assert {st for *_, st, _ in result.statuses} == {"ok"}, result.statuses
    forecasts, summary = run_backtest(
        store,
        bar_seconds=5,
        max_gap_seconds=300,
        evaluated_at=datetime.now(UTC),
        backtest_id=f"real-{uuid.uuid4().hex[:6]}",
    )
    mine = forecasts[forecasts["symbol"] == symbol]
    assert (mine["status"] == "scored").all()  # the file runs to 02:05, the last target is 01:50
    assert len(mine) == 3 * 3 * 30

    client = TestClient(create_app(store))
    body = client.get(f"/forecast/{symbol}").json()
    gbm = next(m for m in body["models"] if m["model"] == "gbm")
    assert gbm["status"] == "ok" and 0.05 < gbm["sigma_annualised"] < 5.0
    first = gbm["steps"][0]
    assert first["q05"] < gbm["last_price"] < first["q95"]
    # BTC traded near 9,600-9,700 USDT that night
    assert 9_000 < gbm["last_price"] < 10_500
    pooled = client.get("/backtest/*").json()
    assert {r["model"] for r in pooled["rows"]} == {"gbm", "ewma_t", "hist_sim"}
    assert all(0 <= r["cover90"] <= 1 for r in pooled["rows"])
