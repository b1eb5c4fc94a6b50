"""The gap store through its injected connection: the row it writes, and that neither an
unreachable Cassandra at a write nor a refused write stops the collector (no Cassandra needed)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

import pytest
from cassandra import OperationTimedOut
from cassandra.cluster import NoHostAvailable

from collector.exceptions import GapStoreError
from collector.gaps import CassandraGapStore, LoggingGapStore
from collector.metrics import CollectorMetrics
from collector.models import Gap
from schemas.settings import CassandraSettings

SETTINGS = CassandraSettings(hosts=("127.0.0.1",), port=9042, keyspace="market")
# 23:59:59.500 UTC on 8 Aug 2024 to 00:00:02.250 the next day: the row's day is the start's
GAP = Gap(
    start_ms=1_723_161_599_500,
    end_ms=1_723_161_602_250,
    symbols=("AAPL", "BINANCE:BTCUSDT"),
    reason="stall",
    detail="no complete frame for 2.0 s",
    source="feed",
    collector_id="host:42",
)


class FakeSession:
    def __init__(self, *, prepare_error: Exception | None = None) -> None:
        self.prepare_error = prepare_error
        self.execute_error: Exception | None = None
        self.executed: list[tuple[Any, tuple[Any, ...]]] = []

    def prepare(self, cql: str) -> str:
        if self.prepare_error is not None:
            raise self.prepare_error
        return cql

    def execute(self, statement: Any, params: tuple[Any, ...]) -> None:
        if self.execute_error is not None:
            raise self.execute_error
        self.executed.append((statement, params))


class FakeCluster:
    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


def _store(
    session: FakeSession, cluster: FakeCluster | None = None
) -> tuple[CassandraGapStore, CollectorMetrics, list[tuple[Any, ...]]]:
    metrics = CollectorMetrics()
    calls: list[tuple[Any, ...]] = []

    def connect(settings: CassandraSettings, **kwargs: Any) -> tuple[Any, Any]:
        calls.append((settings, kwargs))
        return cluster or FakeCluster(), session

    return CassandraGapStore(SETTINGS, metrics, connect=connect), metrics, calls


def _count(metrics: CollectorMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_a_gap_is_one_row_keyed_by_the_utc_day_of_its_start() -> None:
    session = FakeSession()
    store, metrics, calls = _store(session)
    store.record(GAP)
    assert calls == [(SETTINGS, {"keyspace": "market"})]
    ((statement, row),) = session.executed
    assert statement.startswith("INSERT INTO collector_gaps (day, gap_start, collector_id,")
    assert row == (
        date(2024, 8, 8),
        datetime(2024, 8, 8, 23, 59, 59, 500_000, tzinfo=UTC),
        "host:42",
        datetime(2024, 8, 9, 0, 0, 2, 250_000, tzinfo=UTC),
        2_750,
        ["AAPL", "BINANCE:BTCUSDT"],
        "stall",
        "no complete frame for 2.0 s",
        "feed",
    )
    assert _count(metrics, "collector_gaps_recorded_total") == 1
    assert _count(metrics, "collector_gap_write_failures_total") == 0


@pytest.mark.parametrize("error", [OperationTimedOut("timed out"), OSError("reset by peer")])
def test_a_failed_write_is_counted_and_logged_whole_not_raised(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    session = FakeSession()
    store, metrics, _ = _store(session)
    session.execute_error = error
    with caplog.at_level(logging.ERROR, logger="collector.gaps"):
        store.record(GAP)
    assert _count(metrics, "collector_gap_write_failures_total") == 1
    assert _count(metrics, "collector_gaps_recorded_total") == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert "could not write gap 2024-08-08T23:59:59.500+00:00 +2.750 s, reason stall" in line
    assert "market.collector_gaps" in line


def test_an_unreachable_cassandra_at_start_names_the_way_to_run_without_it() -> None:
    def connect(settings: CassandraSettings, **kwargs: Any) -> tuple[Any, Any]:
        raise NoHostAvailable("Unable to connect to any servers", {"127.0.0.1:9042": "refused"})

    with pytest.raises(GapStoreError, match=r"127\.0\.0\.1:9042 keyspace 'market': cannot connect"):
        CassandraGapStore(SETTINGS, CollectorMetrics(), connect=connect)


def test_a_keyspace_without_the_table_closes_the_connection_and_names_the_migration() -> None:
    from cassandra import InvalidRequest

    cluster = FakeCluster()
    session = FakeSession(prepare_error=InvalidRequest("unconfigured table collector_gaps"))
    with pytest.raises(GapStoreError, match="run `python -m infra migrate --keyspace market`"):
        _store(session, cluster)
    assert cluster.shut_down


def test_close_shuts_the_cluster_down() -> None:
    cluster = FakeCluster()
    store, _, _ = _store(FakeSession(), cluster)
    store.close()
    assert cluster.shut_down


def test_without_cassandra_a_gap_is_a_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="collector.gaps"):
        LoggingGapStore().record(GAP)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("collector host:42: gap 2024-08-08T23:59:59.500+00:00 +2.750 s")
    assert line.endswith("2 symbol(s) (not stored)")
