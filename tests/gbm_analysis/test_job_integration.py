"""The Spark job, the backtest and the API end to end against the real Cassandra."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from gbm_analysis.config import GbmSettings
from gbm_analysis.evaluation import format_report, run_backtest
from gbm_analysis.io import GbmStore
from gbm_analysis.job import run_forecasts
from schemas.settings import CassandraSettings
from tests.conftest import PYSPARK_SOCKET_WARNING
from tests.gbm_analysis.conftest import BAR, gbm_closes

pytestmark = pytest.mark.integration

SIGMA = 0.6 / math.sqrt(365.25 * 86_400)  # 60% a year, per second
AS_OF = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
N_STEPS = 5


@pytest.fixture(scope="module")
def symbols() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6].upper()
    return {k: f"T{tag}:{k}" for k in ("GOOD", "THIN", "FLAT", "NAN", "ABSENT")}


@pytest.fixture(scope="module")
def seeded(
    insert_bars: Callable[[str, list[datetime], np.ndarray], None], symbols: dict[str, str]
) -> dict[str, np.ndarray]:
    n_past, n_future = 720, 120  # one hour before AS_OF, ten minutes after
    starts = [AS_OF + timedelta(seconds=BAR * (i - n_past)) for i in range(n_past + n_future)]
    good = gbm_closes(n_past + n_future, sigma_per_s=SIGMA, seed=11)
    insert_bars(symbols["GOOD"], starts, good)
    insert_bars(symbols["THIN"], starts[n_past - 10 : n_past], good[:10])
    insert_bars(symbols["FLAT"], starts[:n_past], np.full(n_past, 42.0))
    nan = good.copy()
    nan[: n_past - 20] = np.nan  # only 20 usable bars before AS_OF
    insert_bars(symbols["NAN"], starts[:n_past], nan[:n_past])
    return {"good": good, "n_past": np.array(n_past)}


def _settings(symbols: dict[str, str]) -> GbmSettings:
    return GbmSettings(
        lookback_seconds=3600,
        n_paths=2_000,
        n_steps=N_STEPS,
        n_sample_paths=7,
        symbols=tuple(symbols.values()),
        seed=None,
    )


# The Spark runs get the session through getfixturevalue, which the conftest's marking of the
# tests that use a Spark session cannot see at collection: their param carries that mark.
@pytest.fixture(
    params=[
        "local",
        pytest.param("spark", marks=pytest.mark.filterwarnings(PYSPARK_SOCKET_WARNING)),
    ]
)
def engine(request: pytest.FixtureRequest) -> Any:
    """The run's engine: None runs it in this process (``GBM_ENGINE=local``, the default), else
    the Spark session (``GBM_ENGINE=spark``)."""
    return None if request.param == "local" else request.getfixturevalue("spark")


_issued: list[datetime] = []


def _issue_time() -> datetime:
    """Now to the second, and after this module's previous run: the same test runs once per
    engine, often within one second, and two runs of one second tie in the forecast tables'
    clustering order, so "the latest run" could be either of them."""
    issued = datetime.now(UTC).replace(microsecond=0)
    if _issued and issued <= _issued[-1]:
        issued = _issued[-1] + timedelta(seconds=1)
    _issued.append(issued)
    return issued


def _run(engine: Any, store: GbmStore, settings: GbmSettings, seed: int) -> Any:
    issued = _issue_time()
    return run_forecasts(engine, store, settings, as_of=AS_OF, issued_at=issued, seed=seed)


def test_run_writes_forecasts_and_reasons(
    engine: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: dict[str, str],
    seeded: dict[str, np.ndarray],
) -> None:
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    settings = _settings(symbols)
    result = _run(engine, store, settings, seed=123)

    by_key = {(s, m): (st, msg) for s, m, st, msg in result.statuses}
    for model in settings.models:
        assert by_key[(symbols["GOOD"], model)][0] == "ok"
        assert by_key[(symbols["THIN"], model)] == (
            "too_few_bars",
            "10 bars in the window, need at least 30",
        )
        assert by_key[(symbols["FLAT"], model)][0] == "constant_price"
        assert by_key[(symbols["NAN"], model)][0] == "invalid_data"
        assert by_key[(symbols["ABSENT"], model)][0] == "too_few_bars"

    runs = store.latest_runs(symbols["GOOD"], days_back=1, now=result.issued_at)
    assert {r["model"] for r in runs} == set(settings.models)
    gbm = next(r for r in runs if r["model"] == "gbm")
    assert gbm["run_id"] == result.run_id and gbm["seed"] == 123
    assert gbm["n_bars"] == int(seeded["n_past"])
    assert gbm["last_price"] == pytest.approx(seeded["good"][int(seeded["n_past"]) - 1])
    assert gbm["as_of"] == AS_OF
    assert abs(gbm["sigma"] - SIGMA) < 4 * gbm["sigma_stderr"]
    assert sum(gbm["hist_counts"]) == settings.n_paths

    steps = store.forecast_steps(symbols["GOOD"], gbm["day"], gbm["issued_at"], result.run_id)
    gbm_steps = sorted((s for s in steps if s["model"] == "gbm"), key=lambda s: s["step"])
    assert [s["step"] for s in gbm_steps] == list(range(1, N_STEPS + 1))
    for s in gbm_steps:
        assert s["target_ts"] == AS_OF + timedelta(seconds=60 * s["step"])
        assert s["q05"] < s["q25"] < s["q50"] < s["q75"] < s["q95"]
        assert len(s["percentiles"]) == 99 and s["percentiles"][49] == s["q50"]
    widths = [s["q95"] - s["q05"] for s in gbm_steps]
    assert widths == sorted(widths)  # uncertainty grows with the horizon

    paths = list(
        cassandra_session.execute(
            "SELECT path, path_prices, prices FROM gbm_paths WHERE symbol=%s AND day=%s "
            "AND issued_at=%s AND run_id=%s AND model='gbm'",
            (symbols["GOOD"], gbm["day"], gbm["issued_at"], result.run_id),
        )
    )
    assert [p.path for p in paths] == list(range(7))
    # each list one frozen cell (migration 010); the multi-cell columns stay empty
    assert all(len(p.path_prices) == N_STEPS and p.prices is None for p in paths)
    stored_steps = cassandra_session.execute(
        "SELECT percentile_prices, percentiles FROM gbm_forecasts WHERE symbol=%s AND day=%s "
        "AND issued_at=%s AND run_id=%s",
        (symbols["GOOD"], gbm["day"], gbm["issued_at"], result.run_id),
    )
    assert all(len(r.percentile_prices) == 99 and r.percentiles is None for r in stored_steps)

    # same seed, new run: identical numbers
    again = _run(engine, store, settings, seed=123)
    runs2 = store.latest_runs(symbols["GOOD"], days_back=1, now=again.issued_at)
    assert runs2[0]["run_id"] == again.run_id != result.run_id
    steps2 = store.forecast_steps(
        symbols["GOOD"], runs2[0]["day"], runs2[0]["issued_at"], again.run_id
    )
    key = lambda s: (s["model"], s["step"])  # noqa: E731
    assert [s["percentiles"] for s in sorted(steps2, key=key)] == [
        s["percentiles"] for s in sorted(steps, key=key)
    ]


def test_backtest_scores_the_realised_steps(
    engine: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: dict[str, str],
    seeded: dict[str, np.ndarray],
) -> None:
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    _run(engine, store, _settings(symbols), seed=5)
    evaluated = datetime.now(UTC).replace(microsecond=0)
    forecasts, summary = run_backtest(
        store, bar_seconds=5, max_gap_seconds=300, evaluated_at=evaluated, backtest_id="bt-1"
    )
    mine = forecasts[forecasts["symbol"] == symbols["GOOD"]]
    assert set(mine["status"]) == {"scored"}  # 10 minutes of bars follow AS_OF; horizon is 5
    n_past = int(seeded["n_past"])
    step1 = mine[(mine["step"] == 1) & (mine["model"] == "gbm")]
    # the realised price one minute on is the close of the bar ending at AS_OF + 60 s
    assert step1["realised"].iloc[0] == pytest.approx(seeded["good"][n_past + 11])

    rows = summary[summary["symbol"] == symbols["GOOD"]]
    assert set(rows["model"]) == {"gbm", "ewma_t", "hist_sim"}
    assert set(rows["step"]) == set(range(1, N_STEPS + 1))
    gbm1 = rows[(rows["model"] == "gbm") & (rows["step"] == 1)].iloc[0]
    assert gbm1["n"] == mine[(mine["model"] == "gbm") & (mine["step"] == 1)].shape[0]
    assert gbm1["n_paired"] == gbm1["n"]  # hist_sim scored the same runs
    assert 0 < gbm1["crps_bps"] < 100

    stored = store.latest_backtest(symbols["GOOD"], days_back=1, now=evaluated)
    expected = set(zip(rows["model"], rows["step"], strict=True))
    assert {(r["model"], r["step"]) for r in stored} == expected
    report = format_report(forecasts, summary)
    assert "gbm" in report and "hist_sim" in report and "scored" in report


def test_api_serves_latest_forecast_and_backtest(
    engine: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: dict[str, str],
    seeded: dict[str, np.ndarray],
) -> None:
    from fastapi.testclient import TestClient

    from gbm_analysis.api import create_app

    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    result = _run(engine, store, _settings(symbols), seed=9)
    run_backtest(
        store,
        bar_seconds=5,
        max_gap_seconds=300,
        evaluated_at=datetime.now(UTC),
        backtest_id="bt-api",
    )
    client = TestClient(create_app(store))

    body = client.get(f"/forecast/{symbols['GOOD']}").json()
    assert body["run_id"] == result.run_id
    models = {m["model"]: m for m in body["models"]}
    assert set(models) == {"gbm", "ewma_t", "hist_sim"}
    assert [s["step"] for s in models["gbm"]["steps"]] == list(range(1, N_STEPS + 1))
    assert models["gbm"]["steps"][0]["target_ts"].startswith("2026-01-05T12:01:00")

    thin = client.get(f"/forecast/{symbols['THIN']}").json()
    assert {m["status"] for m in thin["models"]} == {"too_few_bars"}
    assert all(m["steps"] == [] for m in thin["models"])

    missing = client.get("/forecast/NOPE:NOTHING")
    assert missing.status_code == 404
    assert "'NOPE:NOTHING'" in missing.json()["detail"]

    bt = client.get(f"/backtest/{symbols['GOOD']}")
    assert bt.status_code == 200 and bt.json()["backtest_id"] == "bt-api"
    assert client.get("/backtest/NOPE:NOTHING").status_code == 404
    spec = client.get("/openapi.json").json()
    assert {"/forecast/{symbol}", "/backtest/{symbol}"} <= set(spec["paths"])


def test_a_bar_still_open_at_as_of_is_not_used(
    engine: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: dict[str, str],
    seeded: dict[str, np.ndarray],
) -> None:
    """Half-way through the bar that starts at AS_OF (the default as-of is now): the forecast is
    anchored at AS_OF, the end of the last closed bar, from that bar's close."""
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    settings = GbmSettings(
        lookback_seconds=3600,
        n_paths=500,
        n_steps=2,
        n_sample_paths=0,
        models=("gbm",),
        symbols=(symbols["GOOD"],),
    )
    issued = _issue_time()
    mid_bar = AS_OF + timedelta(seconds=BAR / 2)
    result = run_forecasts(engine, store, settings, as_of=mid_bar, issued_at=issued, seed=1)
    (run,) = store.latest_runs(symbols["GOOD"], days_back=1, now=result.issued_at)
    n_past = int(seeded["n_past"])
    assert run["run_id"] == result.run_id and run["status"] == "ok"
    assert run["as_of"] == AS_OF  # not AS_OF + 5 s, the end of the open bar
    assert run["last_price"] == pytest.approx(seeded["good"][n_past - 1])
    assert run["n_bars"] == n_past
    steps = store.forecast_steps(symbols["GOOD"], run["day"], run["issued_at"], result.run_id)
    assert sorted(s["target_ts"] for s in steps) == [
        AS_OF + timedelta(seconds=60),
        AS_OF + timedelta(seconds=120),
    ]


def _stored(session: Any, symbol: str, run: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a run wrote for ``symbol``, keyed by table, without the run's own id and time."""
    day = run.issued_at.date()
    out = {}
    for table in ("gbm_forecast_runs", "gbm_forecasts", "gbm_paths"):
        rows = session.execute(
            f"SELECT * FROM {table} WHERE symbol=%s AND day=%s AND issued_at=%s AND run_id=%s",
            (symbol, day, run.issued_at, run.run_id),
        )
        drop = {"issued_at", "run_id", "model_version", "model_run_id"}
        out[table] = sorted(
            tuple(
                "nan" if isinstance(v, float) and math.isnan(v) else v
                for k, v in r._asdict().items()
                if k not in drop
            )
            for r in rows
        )
    return out


def test_local_and_spark_engines_write_the_same_rows(
    spark: Any,
    cassandra_session: Any,
    test_keyspace: CassandraSettings,
    symbols: dict[str, str],
    seeded: dict[str, np.ndarray],
) -> None:
    """The engine is an implementation detail: same seed, same rows in every table, for a good
    symbol and for each kind of skipped one."""
    store = GbmStore(cassandra_session, test_keyspace.keyspace)
    settings = _settings(symbols)
    local = _run(None, store, settings, seed=31)
    on_spark = _run(spark, store, settings, seed=31)
    assert sorted(local.statuses) == sorted(on_spark.statuses)
    for symbol in symbols.values():
        mine, theirs = (
            _stored(cassandra_session, symbol, local),
            _stored(cassandra_session, symbol, on_spark),
        )
        assert mine == theirs, symbol
    good = _stored(cassandra_session, symbols["GOOD"], local)
    assert len(good["gbm_forecasts"]) == 3 * N_STEPS and len(good["gbm_paths"]) == 3 * 7


def test_cassandra_errors_become_storage_errors_and_503(cassandra_session: Any) -> None:
    from fastapi.testclient import TestClient

    from gbm_analysis.api import create_app
    from gbm_analysis.exceptions import StorageError

    store = GbmStore(cassandra_session, "no_such_keyspace_gbm")
    with pytest.raises(StorageError, match="^cassandra latest run X failed: InvalidRequest"):
        store.latest_runs("X", days_back=0, now=datetime.now(UTC))
    response = TestClient(create_app(store)).get("/forecast/X")
    assert response.status_code == 503
    # The driver's message (keyspace, hosts) stays in the log; the caller gets an id to quote.
    assert response.json() == {
        "detail": "the forecast store is unavailable; try again later",
        "request_id": response.headers["X-Request-ID"],
    }
