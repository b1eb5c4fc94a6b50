"""The backtest and the API on rows written straight into the real Cassandra: rows another tool,
an older version, a partial write or a killed run left behind. No Spark: the forecast rows are
inserted with CQL, as a run writes them."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from schemas.gbm_tables import (
    PATH_PRICES,
    PATH_PRICES_BEFORE_010,
    PERCENTILES,
    PERCENTILES_BEFORE_010,
)
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT
from tests.gbm_analysis.conftest import BAR

pytestmark = pytest.mark.integration

AS_OF = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def test_keyspace(module_keyspace: CassandraSettings) -> CassandraSettings:
    """This module's own keyspace: the backtest scores every forecast in its keyspace."""
    return module_keyspace


def backtest_cli(keyspace: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gbm_analysis", "backtest"],
        cwd=REPO_ROOT,
        env={**os.environ, "CASSANDRA_KEYSPACE": keyspace},
        capture_output=True,
        text=True,
        timeout=300,
    )


def insert_forecast(
    session: Any,
    symbol: str,
    *,
    run_id: str,
    issued_at: datetime,
    as_of: datetime = AS_OF,
    n_steps: int = 3,
    step_seconds: int = 60,
    last_price: float = 100.0,
    models: tuple[str, ...] = ("gbm",),
    complete: bool = True,
    percentiles_column: str = PERCENTILES,
) -> None:
    """The rows a run writes for one symbol: per-model run rows, per-step forecasts (percentiles
    1..99 spread +-1% around the last price, in ``percentiles_column``: a run before migration 010
    wrote ``percentiles``), and, when ``complete``, the ``gbm_runs`` row that a run writes last."""
    day = issued_at.date()
    pct = [last_price * (1 + (k - 50) / 5000) for k in range(1, 100)]
    for model in models:
        session.execute(
            "INSERT INTO gbm_forecast_runs (symbol, day, issued_at, run_id, model, status, "
            "message, as_of, last_price, sigma, sigma_annualised, n_bars, seed, n_paths, "
            "step_seconds, n_steps) VALUES (%s,%s,%s,%s,%s,'ok','',%s,%s,1e-4,0.5,720,1,100,%s,%s)",
            (symbol, day, issued_at, run_id, model, as_of, last_price, step_seconds, n_steps),
        )
        for step in range(1, n_steps + 1):
            session.execute(
                "INSERT INTO gbm_forecasts (symbol, day, issued_at, run_id, model, step, "
                "target_ts, horizon_s, as_of, last_price, q05, q25, q50, q75, q95, "
                f"{percentiles_column}) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (
                    symbol,
                    day,
                    issued_at,
                    run_id,
                    model,
                    step,
                    as_of + timedelta(seconds=step * step_seconds),
                    step * step_seconds,
                    as_of,
                    last_price,
                    pct[4],
                    pct[24],
                    pct[49],
                    pct[74],
                    pct[94],
                    pct,
                ),
            )
    if complete:
        session.execute(
            "INSERT INTO gbm_runs (day, issued_at, run_id, seed, settings, n_symbols, n_ok, "
            "n_skipped, duration_s) VALUES (%s,%s,%s,1,'{}',1,1,0,0.1)",
            (day, issued_at, run_id),
        )


def test_a_bar_row_with_null_columns_is_skipped_and_counted_by_the_backtest(
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
) -> None:
    symbol = f"NULL{uuid.uuid4().hex[:6]}:AAPL"
    starts = [AS_OF + timedelta(seconds=BAR * i) for i in range(-12, 48)]
    insert_bars(symbol, starts, np.full(len(starts), 100.0))
    # rows another tool or a partial write left: only the key and some columns
    later = AS_OF + timedelta(seconds=BAR * 48)
    cassandra_session.execute(
        "INSERT INTO trades_agg_5s (symbol, day, window_start, close) VALUES (%s,%s,%s,100.5)",
        (symbol, later.date(), later),
    )
    cassandra_session.execute(
        "INSERT INTO trades_agg_5s (symbol, day, window_start, window_end) VALUES (%s,%s,%s,%s)",
        (symbol, later.date(), later + timedelta(seconds=5), later + timedelta(seconds=10)),
    )
    insert_forecast(
        cassandra_session,
        symbol,
        run_id=f"r-{uuid.uuid4().hex[:6]}",
        issued_at=datetime.now(UTC).replace(microsecond=0),
    )
    result = backtest_cli(test_keyspace.keyspace)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "3 scored" in result.stdout
    assert "unusable 5-second bar rows skipped: 2 " in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "skipped 2 of 62" in line]
    assert len(warnings) == 1 and symbol in warnings[0]


def test_a_run_killed_mid_write_is_neither_served_nor_scored(
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
) -> None:
    """A run writes ``gbm_runs`` last; a newer run that died before it (its forecast rows are
    there, its run row is not) must not replace the complete run in the API or the backtest."""
    from fastapi.testclient import TestClient

    from gbm_analysis.api import create_app
    from gbm_analysis.evaluation import format_report, run_backtest
    from gbm_analysis.io import GbmStore

    symbol = f"KILL{uuid.uuid4().hex[:6]}:MSFT"
    starts = [AS_OF + timedelta(seconds=BAR * i) for i in range(-12, 48)]
    insert_bars(symbol, starts, np.full(len(starts), 100.0))
    issued = datetime.now(UTC).replace(microsecond=0)
    complete, killed = f"done-{uuid.uuid4().hex[:6]}", f"kill-{uuid.uuid4().hex[:6]}"
    insert_forecast(cassandra_session, symbol, run_id=complete, issued_at=issued)
    insert_forecast(
        cassandra_session,
        symbol,
        run_id=killed,
        issued_at=issued + timedelta(seconds=1),
        models=("gbm", "hist_sim"),
        complete=False,
    )

    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    client = TestClient(create_app(store))
    body = client.get(f"/forecast/{symbol}").json()
    assert body["run_id"] == complete
    assert [m["model"] for m in body["models"]] == ["gbm"]
    assert len(body["models"][0]["steps"]) == 3

    forecasts, _ = run_backtest(
        store, bar_seconds=5, max_gap_seconds=300, evaluated_at=issued, backtest_id="bt-kill"
    )
    mine = forecasts[forecasts["symbol"] == symbol]
    assert set(mine["run_id"]) == {complete} and set(mine["status"]) == {"scored"}
    assert (forecasts.attrs["incomplete_runs"], forecasts.attrs["incomplete_steps"]) == (1, 6)
    assert "incomplete runs skipped: 1 (6 forecast steps without a gbm_runs row" in (
        format_report(forecasts, _)
    )


def test_forecasts_stored_before_migration_010_are_scored_and_shown_as_after_it(
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
) -> None:
    """Migration 010 moved the percentiles and the paths' prices to frozen columns; a run stored
    before it (multi-cell ``percentiles`` and ``prices``) reads as one stored after it, in the
    backtest and on the explorer's page."""
    from dashboards.forecasts import ForecastReader, RunKey
    from gbm_analysis.backtest import score_forecasts
    from gbm_analysis.evaluation import run_backtest
    from gbm_analysis.io import GbmStore

    symbol = f"OLD{uuid.uuid4().hex[:6]}:IBM"
    starts = [AS_OF + timedelta(seconds=BAR * i) for i in range(-12, 48)]
    insert_bars(symbol, starts, 100.0 + 0.01 * np.arange(len(starts)))
    issued = datetime.now(UTC).replace(microsecond=0)
    runs = {
        column: f"{column}-{uuid.uuid4().hex[:6]}"
        for column in (PERCENTILES, PERCENTILES_BEFORE_010)
    }
    for i, (column, run_id) in enumerate(runs.items()):
        insert_forecast(
            cassandra_session,
            symbol,
            run_id=run_id,
            issued_at=issued + timedelta(seconds=i),
            percentiles_column=column,
        )
        for path, prices_column in enumerate((PATH_PRICES, PATH_PRICES_BEFORE_010)):
            cassandra_session.execute(
                "INSERT INTO gbm_paths (symbol, day, issued_at, run_id, model, path, as_of, "
                f"step_seconds, {prices_column}) VALUES (%s,%s,%s,%s,'gbm',%s,%s,60,%s)",
                (
                    symbol,
                    issued.date(),
                    issued + timedelta(seconds=i),
                    run_id,
                    path,
                    AS_OF,
                    [100.0 + path, 101.0, 102.0],
                ),
            )

    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    forecasts, _ = run_backtest(
        store, bar_seconds=5, max_gap_seconds=300, evaluated_at=issued, backtest_id="bt-010"
    )
    mine = score_forecasts(forecasts[forecasts["symbol"] == symbol].sort_values("step"))
    assert set(mine["status"]) == {"scored"} and mine["crps_bps"].notna().all()
    new, old = (mine[mine["run_id"] == runs[c]] for c in (PERCENTILES, PERCENTILES_BEFORE_010))
    assert new["crps_bps"].tolist() == old["crps_bps"].tolist()

    reader = ForecastReader(cassandra_session, test_keyspace.keyspace)
    shown = {}
    for i, (column, run_id) in enumerate(runs.items()):
        key = RunKey(day=issued.date(), issued_at=issued + timedelta(seconds=i), run_id=run_id)
        steps, paths = reader.forecasts(symbol, key), reader.paths(symbol, key)
        assert PERCENTILES not in steps and PATH_PRICES not in paths
        shown[column] = (steps["percentiles"].tolist(), paths["prices"].tolist())
    assert shown[PERCENTILES] == shown[PERCENTILES_BEFORE_010]
    assert len(shown[PERCENTILES][0]) == 3 and len(shown[PERCENTILES][0][0]) == 99
    assert shown[PERCENTILES][1] == [[100.0, 101.0, 102.0], [101.0, 101.0, 102.0]]


def test_steps_no_bar_follows_expire_and_are_counted_apart(
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
) -> None:
    """A stock's last bar ends at the close (AS_OF): the run issued then forecasts targets no bar
    will ever follow that day; an hour later they are final (expired), counted apart, not scored,
    while the run issued ten minutes before the close is scored."""
    from gbm_analysis.evaluation import format_report, run_backtest
    from gbm_analysis.io import GbmStore

    symbol = f"CLOSE{uuid.uuid4().hex[:6]}:AMZN"
    starts = [AS_OF + timedelta(seconds=BAR * i) for i in range(-240, 0)]  # 20 minutes to AS_OF
    insert_bars(symbol, starts, np.full(len(starts), 100.0))
    issued = datetime.now(UTC).replace(microsecond=0)
    before, after = f"open-{uuid.uuid4().hex[:6]}", f"shut-{uuid.uuid4().hex[:6]}"
    insert_forecast(
        cassandra_session,
        symbol,
        run_id=before,
        issued_at=issued - timedelta(seconds=1),
        as_of=AS_OF - timedelta(minutes=10),
    )
    insert_forecast(cassandra_session, symbol, run_id=after, issued_at=issued)
    store = GbmStore(cassandra_session, test_keyspace.keyspace)

    soon = AS_OF + timedelta(minutes=30)  # inside GBM_PENDING_MAX (1 h): still waiting
    forecasts, _ = run_backtest(
        store, bar_seconds=5, max_gap_seconds=300, evaluated_at=soon, backtest_id="bt-soon"
    )
    mine = forecasts[forecasts["symbol"] == symbol].set_index("run_id")
    assert set(mine.loc[after, "status"]) == {"pending"}

    later = AS_OF + timedelta(hours=2)
    forecasts, summary = run_backtest(
        store, bar_seconds=5, max_gap_seconds=300, evaluated_at=later, backtest_id="bt-later"
    )
    mine = forecasts[forecasts["symbol"] == symbol].set_index("run_id")
    assert set(mine.loc[before, "status"]) == {"scored"}
    assert set(mine.loc[after, "status"]) == {"expired"}
    assert mine.loc[after, "realised"].isna().all()
    assert "3 expired (no bar followed the target in time)" in format_report(forecasts, summary)

    stored = store.latest_backtest(symbol, days_back=1, now=later)
    assert {(r["step"], r["n"], r["n_pending"], r["n_gap"], r["n_expired"]) for r in stored} == {
        (step, 1, 0, 0, 1) for step in (1, 2, 3)
    }


@pytest.mark.parametrize(
    ("exchange", "seconds_per_year", "label"),
    [("", 252 * 6.5 * 3600, "252 d x 6.5 h"), ("BINANCE:", 365 * 86_400, "365 d x 24 h")],
)
def test_the_api_shows_sigma_annualised_by_the_markets_convention_and_names_it(
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    exchange: str,
    seconds_per_year: float,
    label: str,
) -> None:
    """The row is written as runs before the convention wrote it (calendar seconds, no label):
    the API shows the figure of the symbol's market whichever run wrote it."""
    from fastapi.testclient import TestClient

    from gbm_analysis.api import create_app
    from gbm_analysis.io import GbmStore

    symbol = f"{exchange}SIG{uuid.uuid4().hex[:6].upper()}"
    insert_forecast(
        cassandra_session,
        symbol,
        run_id="r-sigma",
        issued_at=datetime.now(UTC).replace(microsecond=0),
    )
    client = TestClient(create_app(GbmStore(cassandra_session, test_keyspace.keyspace)))
    (model,) = client.get(f"/forecast/{symbol}").json()["models"]
    assert model["sigma"] == 1e-4
    assert model["sigma_annualised"] == pytest.approx(1e-4 * math.sqrt(seconds_per_year))
    assert model["annualisation"] == label


def test_the_run_reads_the_closed_bars_with_a_close_as_numpy_columns(
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    insert_bars: Callable[[str, list[datetime], np.ndarray], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The forecast run's read: bars over midnight (two partitions), a NaN close kept for the
    model to count, a row without a close or a window_end left out, and the bar still open at
    the end left out; the numpy columns and the driver's rows give the same arrays."""
    from gbm_analysis.io import GbmStore

    symbol = f"COLS{uuid.uuid4().hex[:6]}:AAPL"
    midnight = datetime(2026, 1, 6, tzinfo=UTC)
    starts = [midnight + timedelta(seconds=BAR * i) for i in range(-6, 6)]
    closes = 100.0 + np.arange(len(starts), dtype=np.float64)
    closes[2] = math.nan
    insert_bars(symbol, starts, closes)
    late = midnight + timedelta(seconds=BAR * 6)
    cassandra_session.execute(
        "INSERT INTO trades_agg_5s (symbol, day, window_start, close) VALUES (%s,%s,%s,1.5)",
        (symbol, late.date(), late),
    )
    cassandra_session.execute(
        "INSERT INTO trades_agg_5s (symbol, day, window_start, window_end) VALUES (%s,%s,%s,%s)",
        (symbol, late.date(), late + timedelta(seconds=5), late + timedelta(seconds=10)),
    )
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    partitions = [(symbol, midnight.date() - timedelta(days=1)), (symbol, midnight.date())]
    end = starts[-1] + timedelta(seconds=2)  # the last bar is still open then
    start = starts[0]

    got = store.read_closes(partitions, start, end)
    assert store._column_session() is not None  # the driver has its numpy parser

    with monkeypatch.context() as patch:
        patch.setattr(GbmStore, "_column_session", lambda self: None)
        rows = store.read_closes(partitions, start, end)
    expected = np.array([s.timestamp() for s in starts[:-1]]), closes[:-1]
    for read in (got, rows):
        order = np.argsort(read[symbol][0])
        assert np.array_equal(read[symbol][0][order], expected[0])
        assert np.array_equal(read[symbol][1][order], expected[1], equal_nan=True)
        assert read[symbol][0].dtype == read[symbol][1].dtype == np.float64
