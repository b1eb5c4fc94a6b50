"""The explorer's model views against the real Cassandra, on what the real jobs wrote: a forecast
run with a registered learned model beside the GBM family (two fans side by side), the
walk-forward leaderboard (``model_scores``) and the newest drift check (``model_drift``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from gbm_analysis import mlp
from gbm_analysis.drift_job import DriftCheck, check_and_retrain
from gbm_analysis.io import GbmStore
from gbm_analysis.registry import Registry
from gbm_analysis.train_job import score_table_rows, write_scores
from gbm_analysis.training import TrainSettings, train_symbol
from infra.cassandra import CassandraService
from infra.config import InfraConfig
from infra.streamlit import APP
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT
from tests.dashboards.test_streamlit_app import decode, figures, ok, panel, traces, widget
from tests.gbm_analysis.test_learned import gbm_minutes

# MLflow 3.17's SQL store uses a loader SQLAlchemy 2.1 deprecates (not our code)
NOLOAD = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")
pytestmark = [pytest.mark.integration, NOLOAD]

AS_OF = (datetime.now(UTC) - timedelta(minutes=20)).replace(second=0, microsecond=0)
N_STEPS = 10


@pytest.fixture(scope="module")
def session(test_keyspace: CassandraSettings) -> Iterator[Any]:
    from schemas.runtime.cassandra import connect

    cluster, session = connect(test_keyspace, keyspace=test_keyspace.keyspace)
    yield session
    cluster.shutdown()


def _credentials(settings: CassandraSettings) -> dict[str, str]:
    """The writers' role, named outright: the job's STATE_DIR is the test's, without the
    stack's credentials file."""
    return {
        "CASSANDRA_USERNAME": settings.username or "",
        "CASSANDRA_PASSWORD": settings.password.get_secret_value() if settings.password else "",
    }


def _insert(session: Any, table: str, symbol: str, frame: pd.DataFrame, width: int) -> None:
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = session.prepare(
        f"INSERT INTO {table} (symbol, day, window_start, window_end, open, high, low, close,"
        " volume, vwap, trade_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    params = []
    for t, o, h, lo, c, v in zip(
        *(frame[k] for k in ("t", "open", "high", "low", "close", "volume")), strict=True
    ):
        ws = datetime.fromtimestamp(int(t), UTC)
        end = ws + timedelta(seconds=width)
        params.append((symbol, ws.date(), ws, end, o, h, lo, c, v, (h + lo + c) / 3, 3))
    execute_concurrent_with_args(session, stmt, params, concurrency=32)


@pytest.fixture(scope="module")
def data(
    session: Any, test_keyspace: CassandraSettings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A symbol with an mlp trained on a month-old calm day (registered in MLflow, scored beside
    the GBM family into model_scores), recent bars three times as volatile (so the drift check
    triggers a retrain), and one hourly run with the production mlp, run as a user runs it."""
    symbol = f"MOD{uuid.uuid4().hex[:6].upper()}:BTC"
    state = tmp_path_factory.mktemp("state")
    registry = Registry(f"sqlite:///{state}/mlflow/mlflow.db", state / "mlflow" / "artifacts")
    store = GbmStore(session, test_keyspace.keyspace)

    history = gbm_minutes(3_200, seed=12)  # bars of 2025-03: the training window
    _insert(session, "trades_agg_1m", symbol, history, 60)
    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        mlp=mlp.MlpParams(max_iter=5),
    )
    results = []
    for outcome in train_symbol(symbol, history, settings):
        results.append((outcome, registry.log(outcome) if outcome.ok else None))
    write_scores(store, score_table_rows(results, evaluated_at=AS_OF))

    # the last two hours before as-of: 1-minute bars (the mlp's input) and 5-second bars
    recent = gbm_minutes(120, seed=13, sigma_bps=24.0)
    recent["t"] = int(AS_OF.timestamp()) - 60 * (120 - np.arange(120))
    _insert(session, "trades_agg_1m", symbol, recent, 60)
    rng = np.random.default_rng(14)
    n5 = 720
    closes = float(recent["close"].iloc[-1]) * np.exp(
        np.cumsum(rng.standard_normal(n5) * 24e-4 / np.sqrt(12))
    )
    fine = pd.DataFrame(
        {
            "t": int(AS_OF.timestamp()) - 5 * (n5 - np.arange(n5)),
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": 1.0,
        }
    )
    _insert(session, "trades_agg_5s", symbol, fine, 5)
    plain = f"{symbol}PLAIN"  # the GBM family only: never trained, never checked
    _insert(session, "trades_agg_5s", plain, fine, 5)

    asked: list[list[str]] = []
    check = check_and_retrain(
        store,
        registry,
        [symbol],
        now=AS_OF,
        recent=timedelta(hours=6),
        threshold=0.25,
        textfile=state / "metrics" / "forecast_drift.prom",
        retrain=lambda c: asked.append(list(c.retrained)),
    )
    assert asked == [[symbol]], check.results

    run = subprocess.run(
        [sys.executable, "-m", "gbm_analysis", "run", "--once", f"--as-of={AS_OF.isoformat()}"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "STATE_DIR": str(state),
            **_credentials(test_keyspace),
            "GBM_SYMBOLS": f"{symbol},{plain}",
            "GBM_LOOKBACK": "1h",
            "GBM_STEP": "60s",
            "GBM_STEPS": str(N_STEPS),
            "GBM_PATHS": "1000",
            "GBM_SAMPLE_PATHS": "3",
            "GBM_SEED": "3",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "7 forecasts written, 0 skipped" in run.stdout, run.stdout
    return {"symbol": symbol, "plain": plain, "check": check, "results": results}


@pytest.fixture
def app(test_keyspace: CassandraSettings, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    user, password = CassandraService(InfraConfig.from_env()).reader_credentials()
    monkeypatch.setenv("CASSANDRA_KEYSPACE", test_keyspace.keyspace)
    monkeypatch.setenv("CASSANDRA_USERNAME", user)
    monkeypatch.setenv("CASSANDRA_PASSWORD", password)
    monkeypatch.setenv("STREAMLIT_REFRESH", "0")
    st.cache_data.clear()
    return AppTest.from_file(str(APP), default_timeout=120)


def _stored_q50(session: Any, symbol: str, model: str) -> list[float]:
    rows = session.execute(
        "SELECT model, step, q50 FROM gbm_forecasts WHERE symbol = %s AND day = %s",
        (symbol, datetime.now(UTC).date()),
    )
    mine = sorted((r.step, r.q50) for r in rows if r.model == model)
    if not mine:  # the run was issued just before midnight
        rows = session.execute(
            "SELECT model, step, q50 FROM gbm_forecasts WHERE symbol = %s AND day = %s",
            (symbol, AS_OF.date()),
        )
        mine = sorted((r.step, r.q50) for r in rows if r.model == model)
    return [q for _, q in mine]


def test_two_models_side_by_side_a_learned_one_and_the_gbm(
    app: AppTest, session: Any, data: dict[str, Any]
) -> None:
    symbol = data["symbol"]
    at = ok(app.run())
    at = ok(widget(at, "selectbox", "symbol").select(symbol).run())
    model_box = widget(at, "selectbox", "model")
    assert model_box.options == [
        "all, side by side",
        "two, side by side: model A and model B",
        "ewma_t",
        "gbm",
        "hist_sim",
        "mlp",
    ]
    at = ok(model_box.select("two, side by side: model A and model B").run())
    at = ok(widget(at, "selectbox", "model A").select("mlp").run())
    at = ok(widget(at, "selectbox", "model B").select("gbm").run())
    fan = figures(at)["fan"]
    # two charts side by side, A on the left
    fans = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")][:2]
    assert [f["title"] for f in fans] == ["mlp", "gbm"]
    assert {t["meta"]["model"] for t in fan["data"]} == {"mlp", "gbm"}
    (mlp_q50,) = traces(fan, "mlp", "q50")
    (gbm_q50,) = traces(fan, "gbm", "q50")
    assert decode(mlp_q50["y"])[1:] == pytest.approx(_stored_q50(session, symbol, "mlp"))
    assert decode(gbm_q50["y"])[1:] == pytest.approx(_stored_q50(session, symbol, "gbm"))
    assert not traces(fan, "mlp", "path")  # a learned model draws no sample paths
    assert len(traces(fan, "gbm", "path")) == 3
    table = at.dataframe[0].value
    assert list(table["model"]) == ["mlp", "gbm"]

    # the same model as A and B is one fan; the what-if overlays the GBM family only
    at = ok(widget(at, "selectbox", "model B").select("mlp").run())
    assert {t["meta"]["model"] for t in figures(at)["fan"]["data"]} == {"mlp"}
    at = ok(widget(at, "selectbox", "model B").select("ewma_t").run())
    at = ok(widget(at, "toggle", "overlay what-if").set_value(True).run())
    what_if = {t["meta"]["model"] for t in traces(figures(at)["fan"], role="what-if q50")}
    assert what_if == {"ewma_t"}


def test_leaderboard_table_and_chart_are_the_stored_scores(
    app: AppTest, session: Any, data: dict[str, Any]
) -> None:
    symbol = data["symbol"]
    at = ok(app.run())
    at = ok(widget(at, "selectbox", "symbol").select(symbol).run())
    at = ok(panel(at, "leaderboard"))
    assert f"Leaderboard ({symbol}, walk-forward)" in [h.value for h in at.subheader]
    stored = pd.DataFrame(
        [
            r._asdict()
            for r in session.execute(
                "SELECT * FROM model_scores WHERE source = 'walk_forward' AND symbol = %s",
                (symbol,),
            )
        ]
    )
    assert set(stored["model"]) == {"mlp", "gbm", "ewma_t", "hist_sim"}
    (board,) = [d.value for d in at.dataframe if "rank" in d.value.columns]
    for horizon in (1, 5, 15, 30, 60):
        want = stored[stored["horizon"] == horizon].sort_values("crps_bps")
        got = board[board["horizon (min)"] == horizon]
        assert list(got["model"]) == list(want["model"])
        assert list(got["rank"]) == [1, 2, 3, 4]
        assert list(got["CRPS (bps)"]) == pytest.approx(list(want["crps_bps"]))
        base = float(want.loc[want["model"] == "hist_sim", "crps_bps"].iloc[0])
        assert list(got["skill vs hist_sim"]) == pytest.approx(list(1 - want["crps_bps"] / base))
        assert list(got["cover 90%"]) == pytest.approx(list(want["coverage_90"]))
        assert list(got["RMSE / random walk"]) == pytest.approx(list(want["rmse_ratio"]))
        version = got.loc[got["model"] == "mlp", "version"].iloc[0]
        assert version == "v1"

    chart = figures(at)["leaderboard"]
    assert {t["meta"]["model"] for t in chart["data"]} == {"mlp", "gbm", "ewma_t", "hist_sim"}
    (mlp_line,) = traces(chart, "mlp", "skill")
    mine = stored[stored["model"] == "mlp"].sort_values("horizon")
    hist = stored[stored["model"] == "hist_sim"].sort_values("horizon")
    assert decode(mlp_line["x"]) == list(range(1, 61))
    assert decode(mlp_line["y"]) == pytest.approx(
        list(1 - mine["crps_bps"].to_numpy() / hist["crps_bps"].to_numpy())
    )
    assert decode(traces(chart, "hist_sim", "skill")[0]["y"]) == pytest.approx([0.0] * 60)


def test_drift_status_shows_the_newest_check_and_its_retrain(
    app: AppTest, session: Any, data: dict[str, Any]
) -> None:
    symbol = data["symbol"]
    at = ok(app.run())
    at = ok(widget(at, "selectbox", "symbol").select(symbol).run())
    at = ok(panel(at, "drift"))
    assert f"Drift of the learned models' inputs ({symbol})" in [h.value for h in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["drift status"] == "retrain triggered"
    results = data["check"].results
    assert float(metrics["max PSI"]) == pytest.approx(max(r.psi for r in results), abs=1e-3)
    (table,) = [d.value for d in at.dataframe if "PSI" in d.value.columns]
    assert set(table["feature"]) == {"return", "abs_return", "range", "log_volume"}
    by_feature = {r.feature: r for r in results}
    for feature, psi, ks_p, retrain, version in zip(
        table["feature"],
        table["PSI"],
        table["KS p"],
        table["retrain"],
        table["version"],
        strict=True,
    ):
        assert psi == pytest.approx(by_feature[feature].psi)
        assert ks_p == pytest.approx(by_feature[feature].ks_p)
        assert retrain and version == "v1"
    assert isinstance(data["check"], DriftCheck) and data["check"].retrained == [symbol]


def test_a_symbol_never_trained_says_how_to_get_scores_and_drift(
    app: AppTest, data: dict[str, Any]
) -> None:
    at = ok(app.run())
    at = ok(widget(at, "selectbox", "symbol").select(data["plain"]).run())
    assert widget(at, "selectbox", "model").options == [
        "all, side by side",
        "two, side by side: model A and model B",
        "ewma_t",
        "gbm",
        "hist_sim",
    ]
    at = ok(panel(at, "leaderboard"))
    assert "`python -m gbm_analysis train` scores every model" in " ".join(i.value for i in at.info)
    assert "leaderboard" not in figures(at)
    at = ok(panel(at, "drift"))
    assert "`python -m gbm_analysis drift` compares" in " ".join(i.value for i in at.info)
