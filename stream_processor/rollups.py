"""1-minute and 1-hour bars rolled up from the 5-second bars.

A 1-minute bar is a pure function of the 5-second bars inside its minute, and a 1-hour bar of the
1-minute bars inside its hour: open of the earliest part, close of the latest, max high, min low,
summed volume and trade count, and VWAP = sum(vwap_i * volume_i) / sum(volume_i), which equals
sum(price * volume) / sum(volume) over the trades. Windows of one size never overlap, so the
earliest trade of a minute is the first trade of its earliest 5-second bar (ties inside a bar
were already broken by arrival, the Kafka offset).

After each micro-batch of 5-second bars, :class:`CassandraRollups` recomputes every minute and
hour that batch touched from what is in Cassandra. Recomputing instead of adding makes a replayed
micro-batch harmless, and it means a trade is in the bars of every size or of none: the lateness
decision is taken once, by the 5-second bars' watermark. The bar rebuild
(:mod:`stream_processor.jobs.rebuild`) calls the same :meth:`CassandraRollups.refresh` after it
rewrites 5-second bars from the raw trades, and also deletes the bars left without finer bars.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from schemas.contracts import TABLE_AGG_1H, TABLE_AGG_1M, TABLE_AGG_5S
from stream_processor.exceptions import RollupError

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session

    from schemas.settings import CassandraSettings

__all__ = [
    "Bar",
    "CassandraRollups",
    "RollupCounts",
    "RollupError",
    "hour_start",
    "minute_start",
    "naive_utc",
    "rollup",
]

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


class RollupCounts(NamedTuple):
    """What one :meth:`CassandraRollups.refresh` wrote and deleted."""

    minutes: int
    hours: int
    deleted_minutes: int = 0
    deleted_hours: int = 0


@dataclass(frozen=True, kw_only=True)
class Bar:
    """One row of a ``trades_agg_*`` table; times are naive UTC datetimes, as the driver
    returns them."""

    symbol: str
    window_start: datetime
    window_end: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trade_count: int
    first_trade_ts: datetime
    last_trade_ts: datetime

    @property
    def day(self) -> date:
        return self.window_start.date()


def naive_utc(ts: datetime) -> datetime:
    """``ts`` as the driver's naive UTC; an aware time is converted, a naive one is kept as it is
    (taken to be UTC already).

    >>> from datetime import timezone
    >>> naive_utc(datetime(2024, 8, 9, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))))
    datetime.datetime(2024, 8, 9, 0, 0)
    """
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def minute_start(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def hour_start(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _sum(values: Iterable[float]) -> float:
    """``math.fsum``, but total: a sum beyond the largest float is inf instead of an
    OverflowError (which failed the bars query on the same batch until the job gave up)."""
    terms = list(values)
    try:
        return math.fsum(terms)
    except (OverflowError, ValueError):
        return sum(terms)  # plain float addition saturates at inf (or nan for inf - inf)


def _vwap(parts: Sequence[Bar]) -> float | None:
    weighted = [(b.vwap, b.volume) for b in parts if b.vwap is not None and b.volume > 0]
    if not weighted:
        return None
    notional = _sum(vwap * volume for vwap, volume in weighted)
    volume = _sum(volume for _, volume in weighted)
    if sys.float_info.min <= notional < math.inf and volume < math.inf:
        return notional / volume
    # A sum overflows or a product underflows (parts stored before the price and volume
    # bounds, or bounds set too wide): the same mean with weights that add up to 1 stays
    # between the smallest and the largest part.
    top = max(volume for _, volume in weighted)
    shares = [volume / top for _, volume in weighted]
    total = math.fsum(shares)
    return _sum(vwap * (share / total) for (vwap, _), share in zip(weighted, shares, strict=True))


def rollup(parts: Sequence[Bar], window_start: datetime, size: timedelta) -> Bar:
    """The bar of ``[window_start, window_start + size)`` made of ``parts``, the finer bars
    inside it.

    :raises RollupError: when ``parts`` is empty or a part belongs to another symbol or window.
    """
    if not parts:
        raise RollupError(f"no bars to roll up into the window at {window_start.isoformat()}")
    window_end = window_start + size
    symbol = parts[0].symbol
    for part in parts:
        if part.symbol != symbol:
            raise RollupError(f"symbol: {part.symbol!r} in a rollup of {symbol!r}")
        if not window_start <= part.window_start < window_end:
            raise RollupError(
                f"window_start: {part.window_start.isoformat()} is outside "
                f"[{window_start.isoformat()}, {window_end.isoformat()})"
            )
    ordered = sorted(parts, key=lambda b: b.window_start)
    volume = _sum(b.volume for b in ordered)
    return Bar(
        symbol=symbol,
        window_start=window_start,
        window_end=window_end,
        open=ordered[0].open,
        high=max(b.high for b in ordered),
        low=min(b.low for b in ordered),
        close=ordered[-1].close,
        volume=volume,
        vwap=_vwap(ordered),
        trade_count=sum(b.trade_count for b in ordered),
        first_trade_ts=ordered[0].first_trade_ts,
        last_trade_ts=ordered[-1].last_trade_ts,
    )


_COLUMNS = (
    "symbol, day, window_start, window_end, open, high, low, close, volume, vwap, trade_count, "
    "first_trade_ts, last_trade_ts"
)


def _bar(row: Any) -> Bar:
    return Bar(
        symbol=row.symbol,
        window_start=row.window_start,
        window_end=row.window_end,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        vwap=row.vwap,
        trade_count=row.trade_count,
        first_trade_ts=row.first_trade_ts,
        last_trade_ts=row.last_trade_ts,
    )


class CassandraRollups:
    """Recomputes the 1-minute and 1-hour bars touched by a set of 5-second bars, reading the
    finer bars back from Cassandra (cassandra-driver, in the Spark driver process).

    The session opens on first use and is shared by every caller of this object.
    """

    def __init__(self, settings: CassandraSettings, keyspace: str, concurrency: int = 16) -> None:
        self.settings, self.keyspace, self.concurrency = settings, keyspace, concurrency
        self._lock = threading.Lock()
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._statements: dict[str, Any] = {}

    def _open(self) -> Session:
        with self._lock:
            if self._session is None:
                from cassandra import ConsistencyLevel

                from schemas.runtime.cassandra import connect

                self._cluster, self._session = connect(self.settings, keyspace=self.keyspace)
                for table in (TABLE_AGG_5S, TABLE_AGG_1M, TABLE_AGG_1H):
                    self._statements[f"read {table}"] = self._session.prepare(
                        f"SELECT {_COLUMNS} FROM {table} "
                        "WHERE symbol = ? AND day = ? AND window_start >= ? AND window_start < ?"
                    )
                    self._statements[f"write {table}"] = self._session.prepare(
                        f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                        "?, ?, ?)"
                    )
                    self._statements[f"keys {table}"] = self._session.prepare(
                        f"SELECT window_start FROM {table} "
                        "WHERE symbol = ? AND day = ? AND window_start >= ? AND window_start < ?"
                    )
                    self._statements[f"delete {table}"] = self._session.prepare(
                        f"DELETE FROM {table} WHERE symbol = ? AND day = ? AND window_start = ?"
                    )
                # The connector writes the 5-s bars at LOCAL_QUORUM; reading at LOCAL_QUORUM
                # too sees them on a cluster of any size.
                for statement in self._statements.values():
                    statement.consistency_level = ConsistencyLevel.LOCAL_QUORUM
            return self._session

    def session(self) -> Session:
        """The driver session (opened on first use), shared with callers reading other tables."""
        return self._open()

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.shutdown()
            self._cluster = self._session = None
            self._statements.clear()

    def refresh(
        self, touched: Iterable[tuple[str, datetime]], *, delete_empty: bool = False
    ) -> RollupCounts:
        """Rewrite the minute and hour bars containing the given 5-second bars.

        :param touched: ``(symbol, window_start)`` of the 5-second bars just written, naive
            UTC (see ``schemas.runtime.spark.collected_utc``) or aware.
        :param delete_empty: delete a minute or hour bar that has no finer bar left (the bar
            rebuild, which also deletes 5-second bars); the streaming job only adds bars.
        :returns: how many 1-minute and 1-hour bars were written and deleted.
        """
        session = self._open()
        minutes = sorted({(symbol, minute_start(naive_utc(ts))) for symbol, ts in touched})
        bars_1m, gone_1m = self._recompute(
            session, TABLE_AGG_5S, TABLE_AGG_1M, minutes, MINUTE, delete_empty
        )
        hours = sorted({(symbol, hour_start(start)) for symbol, start in minutes})
        bars_1h, gone_1h = self._recompute(
            session, TABLE_AGG_1M, TABLE_AGG_1H, hours, HOUR, delete_empty
        )
        return RollupCounts(len(bars_1m), len(bars_1h), gone_1m, gone_1h)

    def window_starts(
        self, table: str, symbol: str, start: datetime, end: datetime
    ) -> list[datetime]:
        """``window_start`` of the bars of ``symbol`` in ``table`` with ``start <= window_start <
        end``, naive UTC; ``start`` and ``end`` lie in one UTC day (one partition)."""
        session = self._open()
        lo, hi = naive_utc(start), naive_utc(end)
        rows = session.execute(self._statements[f"keys {table}"], (symbol, lo.date(), lo, hi))
        return [row.window_start for row in rows]

    def delete(self, table: str, keys: Iterable[tuple[str, datetime]]) -> int:
        """Delete the bars ``(symbol, window_start)`` from ``table``; returns how many."""
        from cassandra.concurrent import execute_concurrent_with_args

        session = self._open()
        params = [(symbol, naive_utc(ts).date(), naive_utc(ts)) for symbol, ts in keys]
        execute_concurrent_with_args(
            session,
            self._statements[f"delete {table}"],
            params,
            concurrency=self.concurrency,
            raise_on_first_error=True,
        )
        return len(params)

    def _recompute(
        self,
        session: Session,
        source: str,
        target: str,
        windows: Sequence[tuple[str, datetime]],
        size: timedelta,
        delete_empty: bool,
    ) -> tuple[list[Bar], int]:
        from cassandra.concurrent import execute_concurrent_with_args

        read = self._statements[f"read {source}"]
        write = self._statements[f"write {target}"]
        found = execute_concurrent_with_args(
            session,
            read,
            [(symbol, start.date(), start, start + size) for symbol, start in windows],
            concurrency=self.concurrency,
            raise_on_first_error=True,
        )
        bars: list[Bar] = []
        empty: list[tuple[str, datetime]] = []
        for (symbol, start), (_, rows) in zip(windows, found, strict=True):
            parts = [_bar(r) for r in rows]
            if parts:
                bars.append(rollup(parts, start, size))
            else:
                empty.append((symbol, start))
        execute_concurrent_with_args(
            session,
            write,
            [
                (
                    b.symbol,
                    b.day,
                    b.window_start,
                    b.window_end,
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.vwap,
                    b.trade_count,
                    b.first_trade_ts,
                    b.last_trade_ts,
                )
                for b in bars
            ],
            concurrency=self.concurrency,
            raise_on_first_error=True,
        )
        deleted = self._delete_stored(session, target, empty, size) if delete_empty else 0
        return bars, deleted

    def _delete_stored(
        self, session: Session, table: str, windows: Sequence[tuple[str, datetime]], size: timedelta
    ) -> int:
        """Delete the bars of ``windows`` that ``table`` holds; returns how many it held."""
        from cassandra.concurrent import execute_concurrent_with_args

        found = execute_concurrent_with_args(
            session,
            self._statements[f"keys {table}"],
            [(symbol, start.date(), start, start + size) for symbol, start in windows],
            concurrency=self.concurrency,
            raise_on_first_error=True,
        )
        stored = [
            (symbol, start)
            for (symbol, start), (_, rows) in zip(windows, found, strict=True)
            if list(rows)
        ]
        return self.delete(table, stored) if stored else 0
