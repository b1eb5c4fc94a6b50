"""The forecast run's as-of time: only bars closed by then are used, and its writes survive a
server that answers late (no Spark, no Cassandra needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from cassandra import ConsistencyLevel
from cassandra.cqltypes import lookup_casstype
from cassandra.policies import RetryPolicy, WriteType
from cassandra.protocol import ColumnMetadata
from cassandra.query import PreparedStatement

from gbm_analysis.cql import batch_rows, cells
from gbm_analysis.io import GbmStore
from gbm_analysis.job import _Writer, closed_as_of

BOUNDARY = datetime(2026, 1, 5, 12, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (BOUNDARY, BOUNDARY),  # a bar ends exactly now: it is closed
        (BOUNDARY + timedelta(microseconds=1), BOUNDARY),
        (BOUNDARY + timedelta(seconds=2, milliseconds=500), BOUNDARY),  # mid-bar
        (BOUNDARY + timedelta(seconds=4, microseconds=999_999), BOUNDARY),
        (BOUNDARY - timedelta(microseconds=1), BOUNDARY - timedelta(seconds=5)),
        (BOUNDARY.replace(tzinfo=None) + timedelta(seconds=3), BOUNDARY),  # naive is UTC
        (BOUNDARY.astimezone(timezone(timedelta(hours=-5))) + timedelta(seconds=1), BOUNDARY),
    ],
)
def test_as_of_is_floored_to_the_end_of_the_last_closed_bar(
    as_of: datetime, expected: datetime
) -> None:
    assert closed_as_of(as_of, 5) == expected


def test_a_minute_bar_grid_floors_to_the_minute() -> None:
    assert closed_as_of(BOUNDARY + timedelta(seconds=50), 60) == BOUNDARY - timedelta(seconds=5)


class _Session:
    """Prepares statements of a text and an int column and records what is sent."""

    cluster = SimpleNamespace(protocol_version=5)

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def prepare(self, query: str) -> PreparedStatement:
        meta = [
            ColumnMetadata("ks", "t", name, lookup_casstype(cql))
            for name, cql in (("symbol", "UTF8Type"), ("path", "Int32Type"))
        ]
        return PreparedStatement(meta, b"id", [0], query, "ks", 5, [], None)

    def execute_async(self, statement: Any, values: Any) -> Any:
        self.sent.append(statement)
        return SimpleNamespace(result=lambda: None)


def test_a_write_that_times_out_on_the_server_is_sent_again() -> None:
    """A single insert and an unlogged batch whose replica did not answer within the server's
    timeout are retried (idempotent: the same row again), three times, then the error is the
    run's; other failures keep the driver's default."""
    session = _Session()
    writer = _Writer(GbmStore(session, "ks"))  # type: ignore[arg-type]
    statement = writer.prepare("gbm_paths", ("symbol", "path"))
    writer.submit(statement, ["A", 1])
    rows = batch_rows(statement, 5, {"symbol": "A"}, {"path": cells([0, 1], "int")})
    writer.submit_batch(statement, rows)
    writer.drain()
    single, batch = session.sent
    for sent, write_type in ((single, WriteType.SIMPLE), (batch, WriteType.UNLOGGED_BATCH)):
        assert sent.is_idempotent
        decisions = [
            sent.retry_policy.on_write_timeout(sent, ConsistencyLevel.ONE, write_type, 1, 0, n)
            for n in range(4)
        ]
        assert [d[0] for d in decisions] == [RetryPolicy.RETRY] * 3 + [RetryPolicy.RETHROW]
        assert decisions[0][1] == ConsistencyLevel.ONE
        cas = sent.retry_policy.on_write_timeout(sent, ConsistencyLevel.ONE, WriteType.CAS, 1, 0, 0)
        assert cas[0] == RetryPolicy.RETHROW
    assert writer.n_rows == 3
