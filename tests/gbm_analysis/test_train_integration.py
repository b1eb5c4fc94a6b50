"""``train`` on Spark against the real Cassandra: 1-minute bars in, MLflow versions out."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gbm_analysis import mlp
from gbm_analysis.config import GbmSettings
from gbm_analysis.drift_job import run_drift, write_drift, write_textfile
from gbm_analysis.io import GbmStore
from gbm_analysis.leaderboard import format_leaderboard
from gbm_analysis.registry import Registry, RegistryResult
from gbm_analysis.serving import learned_forecast_rows
from gbm_analysis.train_job import read_scores, train_on_spark
from gbm_analysis.training import TrainSettings
from schemas.settings import CassandraSettings
from tests.gbm_analysis.conftest import gbm_closes
from tests.gbm_analysis.test_learned import gbm_minutes

# MLflow 3.17's SQL store uses a loader SQLAlchemy 2.1 deprecates (not our code)
NOLOAD = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")
pytestmark = [pytest.mark.integration, NOLOAD]

NOW = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)
N_MINUTES = 3_200


@pytest.fixture(scope="module")
def symbols(cassandra_session: Any) -> tuple[str, str]:
    from cassandra.concurrent import execute_concurrent_with_args

    tag = uuid.uuid4().hex[:6].upper()
    good, thin = f"T{tag}:TRAIN", f"T{tag}:THIN"
    stmt = cassandra_session.prepare(
        "INSERT INTO trades_agg_1m (symbol, day, window_start, window_end, open, high, low, close,"
        " volume, vwap, trade_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    bars = gbm_minutes(N_MINUTES, seed=21)
    start = NOW - timedelta(minutes=N_MINUTES)
    params = []
    for i, row in enumerate(bars.itertuples()):
        ws = start + timedelta(minutes=i)
        for symbol in (good,) if i < N_MINUTES - 100 else (good, thin):
            params.append(
                (
                    symbol,
                    ws.date(),
                    ws,
                    ws + timedelta(minutes=1),
                    row.open,
                    row.high,
                    row.low,
                    row.close,
                    row.volume,
                    row.close,
                    10,
                )
            )
    execute_concurrent_with_args(cassandra_session, stmt, params, concurrency=32)
    return good, thin


def test_train_on_spark_registers_and_replaces_only_a_better_model(
    spark: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: tuple[str, str],
    tmp_path: Path,
    mlflow_uri: str,
) -> None:
    good, thin = symbols
    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        symbols=symbols,
        mlp=mlp.MlpParams(max_iter=5),
    )
    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    store = GbmStore(cassandra_session, test_keyspace.keyspace)

    first = train_on_spark(spark, store, settings, registry, now=NOW)
    trained = {(o.symbol, o.model): (o, logged) for o, logged in first}
    skipped, nothing = trained[(thin, "mlp")]
    assert (skipped.status, nothing) == ("too_few_bars", None)
    outcome, v1 = trained[(good, "mlp")]
    assert outcome.ok and isinstance(v1, RegistryResult) and (v1.version, v1.promoted) == (1, True)

    # the one backtest: the trained model and the GBM family on the same test window
    rows = [r for r in read_scores(store) if r["symbol"] == good]
    assert {(r["model"], r["model_version"]) for r in rows} == {
        ("mlp", 1),
        ("gbm", None),
        ("ewma_t", None),
        ("hist_sim", None),
    }
    assert len(rows) == 4 * 60
    assert len({r["n"] for r in rows}) == 1  # every model scored on the same issue times
    board = format_leaderboard(rows)
    assert f"{good}" in board and "ewma_t" in board

    # a retrain with another seed scores v1 on the same test window and replaces it only if better
    settings2 = TrainSettings(**{**settings.__dict__, "mlp": mlp.MlpParams(max_iter=5, seed=9)})
    second = train_on_spark(spark, store, settings2, registry, now=NOW)
    (v2,) = [logged for o, logged in second if (o.symbol, o.model) == (good, "mlp")]
    assert isinstance(v2, RegistryResult) and v2.version == 2
    assert v2.incumbent_version == 1 and math.isfinite(v2.incumbent_crps)
    assert v2.promoted == (v2.crps < v2.incumbent_crps)
    assert registry.production("mlp", good)[0] == (2 if v2.promoted else 1)  # type: ignore[index]

    # the hourly job's side: the production version forecasts from the newest 1-minute bars
    (row,) = learned_forecast_rows(store, registry, [good], GbmSettings(), as_of=NOW)
    version = registry.production("mlp", good)[0]  # type: ignore[index]
    assert (row["model"], row["status"], row["model_version"]) == ("mlp", "ok", version)
    assert row["as_of"] == NOW.timestamp()
    assert len(row["percentiles"]) == 60 * 99 and row["sample"] == []
    assert 0.0 <= min(row["p_above"]) <= max(row["p_above"]) <= 1.0

    # drift: the recent bars against the production version's training window, stored and exported
    results, versions = run_drift(
        store, registry, [good], now=NOW, recent=timedelta(minutes=600), threshold=0.25
    )
    assert {(r.model, r.feature) for r in results} == {
        ("mlp", f) for f in ("return", "abs_return", "range", "log_volume")
    }
    assert all(
        r.n_recent == 599 and r.n_reference > 1_000 for r in results if r.feature == "return"
    )
    write_drift(store, results, checked_at=NOW, versions=versions)
    stored = list(cassandra_session.execute("SELECT * FROM model_drift WHERE symbol = %s", (good,)))
    assert {(r.feature, r.model_version) for r in stored} == {
        (f, version) for f in ("return", "abs_return", "range", "log_volume")
    }
    write_textfile(results, tmp_path / "metrics" / "forecast_drift.prom")
    text = (tmp_path / "metrics" / "forecast_drift.prom").read_text()
    assert f'forecast_drift_psi{{feature="return",model="mlp",symbol="{good}"}}' in text


def test_hourly_run_adds_the_registered_model_and_the_api_serves_it(
    spark: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: tuple[str, str],
    insert_bars: Any,
    tmp_path: Path,
    mlflow_uri: str,
) -> None:
    from fastapi.testclient import TestClient

    from gbm_analysis.api import create_app
    from gbm_analysis.job import run_forecasts
    from gbm_analysis.training import train_symbol

    good, _ = symbols
    # the GBM family reads the 5-second bars of the last hour; the mlp the 1-minute bars
    starts = [NOW - timedelta(seconds=5 * (720 - i)) for i in range(720)]
    insert_bars(good, starts, gbm_closes(720, sigma_per_s=2e-4, seed=3))
    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        mlp=mlp.MlpParams(max_iter=5),
        baselines=False,
    )
    (outcome,) = train_symbol(good, gbm_minutes(N_MINUTES, seed=21), settings)
    logged = registry.log(outcome)
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    gbm = GbmSettings(lookback_seconds=3600, n_paths=500, n_sample_paths=3, symbols=(good,))
    result = run_forecasts(
        spark, store, gbm, as_of=NOW, issued_at=NOW, seed=5, run_id="learned-run", registry=registry
    )
    assert (good, "mlp", "ok", "") in result.statuses

    body = TestClient(create_app(store, clock=lambda: NOW + timedelta(minutes=1))).get(
        f"/forecast/{good}", params={"model": "mlp"}
    )
    assert body.status_code == 200, body.text
    (model,) = body.json()["models"]
    assert (model["model_version"], model["model_run_id"]) == (logged.version, logged.run_id)
    assert [s["step"] for s in model["steps"]] == list(range(1, 61))
    gbm_rows = [r for r in store.latest_runs(good, days_back=1, now=NOW) if r["model"] == "gbm"]
    assert gbm_rows and gbm_rows[0]["model_version"] is None
