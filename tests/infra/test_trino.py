"""Trino, run by `python -m infra`, reads the market tables in Cassandra with a read-only role."""

from __future__ import annotations

import datetime as dt
import os
import random
import stat
import time
from collections.abc import Iterator

import pytest
import trino
from trino.exceptions import TrinoQueryError

from infra.config import InfraConfig
from infra.trino import CATALOG, TrinoService
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from tests.conftest import Stack, infra_cli

pytestmark = pytest.mark.integration
UTC = dt.UTC
# The session's test keyspace is shared with other modules: these symbols are only written here.
SYMBOLS = ("TRINO:AAPL", "TRINO:BTCUSDT")


@pytest.fixture(scope="module")
def trino_cursor(stack: Stack) -> Iterator[trino.dbapi.Cursor]:
    config = InfraConfig.from_env()
    conn = trino.dbapi.connect(
        host="127.0.0.1",
        port=config.trino_port,
        user="tests",
        catalog=CATALOG,
        request_timeout=120,
    )
    yield conn.cursor()
    conn.close()


@pytest.fixture(scope="module")
def keyspace(
    trino_cursor: trino.dbapi.Cursor, test_keyspace: CassandraSettings
) -> CassandraSettings:
    """The test keyspace once Trino sees it: the Cassandra driver inside Trino learns of schema
    changes from debounced events, about a second after they happen."""
    deadline = time.monotonic() + 30
    while True:
        trino_cursor.execute("SHOW SCHEMAS")
        if [test_keyspace.keyspace] in trino_cursor.fetchall():
            return test_keyspace
        assert time.monotonic() < deadline, f"Trino never listed {test_keyspace.keyspace}"
        time.sleep(0.5)


def write_trades(
    settings: CassandraSettings, rows: list[tuple[str, dt.datetime, str, float, float]]
) -> None:
    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        insert = session.prepare(
            "INSERT INTO trades (symbol, day, trade_ts, trade_id, price, volume, conditions, "
            "source) VALUES (?, ?, ?, ?, ?, ?, ?, 'test')"
        )
        for symbol, ts, trade_id, price, volume in rows:
            session.execute(insert, (symbol, ts.date(), ts, trade_id, price, volume, ["1"]))
    finally:
        cluster.shutdown()


def test_trino_reads_what_cassandra_holds(
    trino_cursor: trino.dbapi.Cursor, keyspace: CassandraSettings
) -> None:
    rng = random.Random(7)
    start = dt.datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    rows = [
        (
            symbol,
            start + dt.timedelta(milliseconds=rng.randrange(0, 600_000)),
            f"{symbol}-{n}",
            round(rng.uniform(10, 500), 4),
            round(rng.uniform(0.001, 50), 6),
        )
        for n in range(300)
        for symbol in SYMBOLS
    ]
    # Two trades in the same millisecond stay two rows, through Trino as in Cassandra.
    rows.append((SYMBOLS[0], rows[0][1], "same-ms", 1.5, 2.0))
    write_trades(keyspace, rows)

    trino_cursor.execute(
        f"SELECT symbol, count(*), sum(volume), sum(price * volume), min(trade_ts), max(trade_ts) "
        f'FROM "{keyspace.keyspace}".trades WHERE symbol IN {SYMBOLS} GROUP BY symbol '
        "ORDER BY symbol"
    )
    got = trino_cursor.fetchall()

    expected = []
    for symbol in SYMBOLS:
        mine = [r for r in rows if r[0] == symbol]
        expected.append(
            (
                symbol,
                len(mine),
                sum(r[4] for r in mine),
                sum(r[3] * r[4] for r in mine),
                min(r[1] for r in mine),
                max(r[1] for r in mine),
            )
        )
    assert [(g[0], g[1]) for g in got] == [(e[0], e[1]) for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[2] == pytest.approx(e[2], rel=1e-12)
        assert g[3] == pytest.approx(e[3], rel=1e-12)
        # Event times come back as instants with millisecond precision.
        assert (g[4], g[5]) == (e[4], e[5])
        assert g[4].utcoffset() == dt.timedelta(0)


def test_trino_cannot_write_to_cassandra(
    trino_cursor: trino.dbapi.Cursor, keyspace: CassandraSettings
) -> None:
    with pytest.raises(TrinoQueryError, match="market_reader has no MODIFY permission"):
        trino_cursor.execute(
            f'INSERT INTO "{keyspace.keyspace}".trades (symbol, day, trade_ts, trade_id, '
            "price, volume) VALUES ('AAPL', DATE '2026-03-02', "
            "TIMESTAMP '2026-03-02 14:30:00 UTC', 'forged', 1.0, 1.0)"
        )
        trino_cursor.fetchall()


def test_catalog_file_is_private_and_holds_only_the_reader(stack: Stack) -> None:
    catalog = TrinoService(InfraConfig.from_env()).etc / "catalog" / f"{CATALOG}.properties"
    assert stat.S_IMODE(os.stat(catalog).st_mode) == 0o600
    values = dict(line.split("=", 1) for line in catalog.read_text().splitlines() if "=" in line)
    assert values["cassandra.username"] == "market_reader"
    assert values["cassandra.password"] != CassandraSettings.from_env().password


def test_sql_command_prints_a_table_and_errors_in_one_line(
    keyspace: CassandraSettings,
) -> None:
    ts = dt.datetime(2026, 3, 3, 9, 0, 0, 123000, tzinfo=UTC)
    symbol = "TRINO:SQL"
    write_trades(keyspace, [(symbol, ts, "sql-1", 410.5, 3.0)])
    query = (
        f"SELECT trade_id, price, volume FROM {keyspace.keyspace}.trades WHERE symbol = '{symbol}'"
    )
    result = infra_cli("sql", query)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "trade_id  price  volume",
        "--------  -----  ------",
        "sql-1     410.5  3.0",
        "(1 row)",
    ]
    bad = infra_cli("sql", f"SELECT nope FROM {keyspace.keyspace}.trades")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "infra: error: trino: line 1:8: Column 'nope' cannot be resolved"
