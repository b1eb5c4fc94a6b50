"""What one ``make demo`` run produced and stored, counted without scanning whole tables.

A stack that has run before holds earlier demos' trades: a ``COUNT(*)`` over all of ``trades``
then reads every row (it failed with a read timeout at ~800,000 trades) and counts trades this
run never produced. Every count here reads the partitions (symbol, UTC day) the run can have
written, from the moment it started, and Kafka's count is the growth of the topics' end offsets.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from schemas.contracts import TABLE_AGG_1H, TABLE_AGG_1M, TABLE_AGG_5S, TABLE_TRADES, topic_specs

# The clustering column each table's time bound applies to, and the width of its rows' windows:
# a bar that opened before the run started still holds the run's trades.
TIME_COLUMNS: dict[str, tuple[str, timedelta]] = {
    TABLE_TRADES: ("trade_ts", timedelta(0)),
    TABLE_AGG_5S: ("window_start", timedelta(seconds=5)),
    TABLE_AGG_1M: ("window_start", timedelta(minutes=1)),
    TABLE_AGG_1H: ("window_start", timedelta(hours=1)),
    "gbm_forecasts": ("issued_at", timedelta(0)),
    "gbm_backtest": ("evaluated_at", timedelta(0)),
}


def kafka_end_offsets(bootstrap: str) -> dict[str, int]:
    """The sum of each topic's end offsets, by role (``trades``, ``dlq``, ...)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="demo")
    try:
        ends = {}
        for role, spec in topic_specs().items():
            parts = [
                TopicPartition(spec.name, p) for p in consumer.partitions_for_topic(spec.name) or ()
            ]
            ends[role] = sum(consumer.end_offsets(parts).values()) if parts else 0
        return ends
    finally:
        consumer.close()


def produced_since(start: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    """Records each topic gained between two :func:`kafka_end_offsets` readings.

    >>> produced_since({"trades": 10, "dlq": 2}, {"trades": 25, "dlq": 2, "gaps": 1})
    {'trades': 15, 'dlq': 0, 'gaps': 1}
    """
    return {role: n - start.get(role, 0) for role, n in now.items()}


def window_floor(moment: datetime, width: timedelta) -> datetime:
    """The start of the ``width``-long window (aligned to the epoch) that holds ``moment``.

    >>> window_floor(datetime(2026, 11, 30, 3, 7, 42, 500000, tzinfo=UTC), timedelta(minutes=1))
    datetime.datetime(2026, 11, 30, 3, 7, tzinfo=datetime.timezone.utc)
    >>> window_floor(datetime(2026, 11, 30, 3, 7, 42, tzinfo=UTC), timedelta(0))
    datetime.datetime(2026, 11, 30, 3, 7, 42, tzinfo=datetime.timezone.utc)
    """
    if not width:
        return moment
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return moment - (moment - epoch) % width


def days_between(first: datetime, last: datetime) -> list[date]:
    """The UTC days from ``first``'s to ``last``'s, both included.

    >>> late, early = datetime(2026, 11, 29, 23, 59, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
    >>> days_between(late, early)
    [datetime.date(2026, 11, 29), datetime.date(2026, 11, 30)]
    """
    day, end = first.astimezone(UTC).date(), last.astimezone(UTC).date()
    days = []
    while day <= end:
        days.append(day)
        day += timedelta(days=1)
    return days


def symbols_of(session: object, table: str, days: Iterable[date]) -> list[str]:
    """The symbols with a partition of ``table`` on one of ``days``: DISTINCT reads partition
    keys only, one per (symbol, day), never the rows."""
    wanted = set(days)
    rows = session.execute(  # type: ignore[attr-defined]
        f"SELECT DISTINCT symbol, day FROM {table}", timeout=60
    )
    return sorted({row.symbol for row in rows if _as_date(row.day) in wanted})


def count_since(session: object, table: str, since: datetime) -> dict[str, int]:
    """Rows of ``table`` per symbol whose time column is at or after ``since`` (floored to the
    table's window width), read partition by partition up to now."""
    column, width = TIME_COLUMNS[table]
    start = window_floor(since.astimezone(UTC), width)
    days = days_between(start, datetime.now(UTC))
    statement = session.prepare(  # type: ignore[attr-defined]
        f"SELECT COUNT(*) AS n FROM {table} WHERE symbol = ? AND day = ? AND {column} >= ?"
    )
    per_symbol: dict[str, int] = {}
    for symbol in symbols_of(session, table, days):
        for day in days:
            row = session.execute(statement, (symbol, day, start), timeout=60).one()  # type: ignore[attr-defined]
            if row.n:
                per_symbol[symbol] = per_symbol.get(symbol, 0) + int(row.n)
    return per_symbol


def _as_date(value: object) -> date | None:
    """cassandra-driver returns ``date`` columns as its own ``Date``; compare them as dates."""
    if isinstance(value, date):
        return value
    to_date = getattr(value, "date", None)
    return to_date() if callable(to_date) else None
