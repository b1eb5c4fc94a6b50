"""The forecast band dataset's SQL, run through the real Trino on rows written with CQL: it shows
each symbol's newest *complete* run (one whose gbm_runs row, written last, exists)."""

from __future__ import annotations

import datetime as dt

import pytest
import trino

from dashboards.superset import bundle
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from tests.dashboards.test_superset_bundle import PARAMS, objects
from tests.infra.test_trino import keyspace, trino_cursor  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SYMBOL = PARAMS["crypto_symbols"][0]


def write_run(
    settings: CassandraSettings, run_id: str, issued: dt.datetime, *, complete: bool
) -> None:
    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        insert = session.prepare(
            "INSERT INTO gbm_forecasts (symbol, day, issued_at, run_id, model, step, target_ts, "
            "as_of, last_price, q05, q50, q95) VALUES (?, ?, ?, ?, 'gbm', ?, ?, ?, 100, 99, "
            "100, 101)"
        )
        for step in (1, 2):
            target = issued + dt.timedelta(minutes=step)
            session.execute(insert, (SYMBOL, issued.date(), issued, run_id, step, target, issued))
        if complete:
            session.execute(
                "INSERT INTO gbm_runs (day, issued_at, run_id, n_symbols, n_ok) "
                "VALUES (%s, %s, %s, 1, 1)",
                (issued.date(), issued, run_id),
            )
    finally:
        cluster.shutdown()


def test_a_run_killed_before_its_summary_row_is_not_shown(
    keyspace: CassandraSettings,  # noqa: F811
    trino_cursor: trino.dbapi.Cursor,  # noqa: F811
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
    write_run(keyspace, "complete-run", now - dt.timedelta(minutes=10), complete=True)
    write_run(keyspace, "killed-run", now - dt.timedelta(minutes=5), complete=False)
    files = bundle.render({**PARAMS, "keyspace": keyspace.keyspace})
    sql = objects(files, "datasets")[f"{bundle.ROOT}/datasets/market_trino/forecast_band.yaml"][
        "sql"
    ]
    trino_cursor.execute(f"SELECT DISTINCT symbol, run_id FROM ({sql})")
    assert trino_cursor.fetchall() == [[SYMBOL, "complete-run"]]
