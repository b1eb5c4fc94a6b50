"""The demo counts what its own run wrote, partition by partition, never a whole table.

Seen: a second `make demo` on a stack holding ~800,000 earlier trades ended in a stack trace, a
`ReadFailure` of `SELECT COUNT(*) FROM trades` (a scan of every row), and its totals would have
counted the earlier runs' trades as this run's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from infra import demo
from infra.demo_counts import TIME_COLUMNS, count_since, produced_since
from infra.trino import run_query
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from tests.conftest import Stack, migrated_keyspace

PARTITION_READ = re.compile(r"WHERE symbol = \? AND day = \? AND \w+ >= \?$")


class RecordingSession:
    """Answers DISTINCT with two symbols of today and every count with 3; keeps each query."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def prepare(self, query: str) -> str:
        self.queries.append(query)
        return query

    def execute(self, query: str, *args: object, **kwargs: object) -> object:
        if query.startswith("SELECT DISTINCT"):
            self.queries.append(query)
            today = datetime.now(UTC).date()
            return [SimpleNamespace(symbol=s, day=today) for s in ("AAPL", "MSFT")]
        return SimpleNamespace(one=lambda: SimpleNamespace(n=3))


@pytest.mark.parametrize("table", sorted(TIME_COLUMNS))
def test_every_count_reads_partition_keys_or_single_partitions(table: str) -> None:
    session = RecordingSession()
    per_symbol = count_since(session, table, datetime.now(UTC) - timedelta(minutes=1))
    assert per_symbol == {"AAPL": 3, "MSFT": 3}
    counts = [q for q in session.queries if not q.startswith("SELECT DISTINCT")]
    assert f"SELECT DISTINCT symbol, day FROM {table}" in session.queries
    assert counts and all(PARTITION_READ.search(q) for q in counts), counts


def test_the_demo_no_longer_counts_whole_tables() -> None:
    assert not hasattr(demo, "cassandra_count")
    assert not hasattr(demo, "kafka_counts"), "Kafka totals since retention are not this run's"


def test_what_a_run_produced_is_the_growth_of_the_end_offsets() -> None:
    assert produced_since({"trades": 800_000, "dlq": 3}, {"trades": 800_120, "dlq": 5}) == {
        "trades": 120,
        "dlq": 2,
    }


@pytest.fixture(scope="module")
def keyspace(stack: Stack) -> Iterator[CassandraSettings]:
    with migrated_keyspace("democount") as settings:
        yield settings


@pytest.mark.integration
def test_only_this_runs_rows_are_counted_in_cassandra_and_through_trino(
    keyspace: CassandraSettings, stack: Stack
) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    cluster, session = connect(keyspace, keyspace=keyspace.keyspace)
    try:
        insert = session.prepare(
            "INSERT INTO trades (symbol, day, trade_ts, trade_id, price, volume) "
            "VALUES (?, ?, ?, ?, 1.0, 1.0)"
        )
        earlier = [started - timedelta(seconds=s) for s in (1, 600, 86_400 * 2)]
        during = [started + timedelta(seconds=s) for s in (0, 1, 2, 20)]
        for n, (symbol, ts) in enumerate(
            [("AAPL", t) for t in earlier + during] + [("BINANCE:BTCUSDT", during[-1])]
        ):
            session.execute(insert, (symbol, ts.date(), ts, f"t{n}"))
        stored = count_since(session, "trades", started)
    finally:
        cluster.shutdown()
    assert stored == {"AAPL": len(during), "BINANCE:BTCUSDT": 1}
    sql = demo.trino_count_sql(keyspace.keyspace, "trades", stored, (started, datetime.now(UTC)))
    assert run_query(stack_trino_port(), sql).rows[0][0] == len(during) + 1


def stack_trino_port() -> int:
    from infra.config import InfraConfig

    return InfraConfig.from_env().trino_port
