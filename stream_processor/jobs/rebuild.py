"""Batch job: recompute the 5-second, 1-minute and 1-hour bars of a time range from ``trades``.

It repairs the bars after late trades (left out of the streaming bars by the watermark, but
stored in ``trades``), a changed policy or an outage, and it is the batch entry for analysis.

Usage (local mode, local[2] unless SPARK_MASTER says otherwise)::

    .venv/bin/python -m stream_processor.rebuild --from 2024-08-08T23:00:00Z \\
        --to 2024-08-09T01:00:00Z [--symbols BINANCE:BTCUSDT,BINANCE:ETHUSDT] [--keyspace K]

With spark-submit against any master (connector jars from the project cache, no network)::

    SPARK_SUBMIT_MODE=1 PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit \\
        --master local[2] --driver-memory 1g \\
        --jars "$(ls .cache/jars/spark/*.jar | paste -sd, -)" \\
        stream_processor/rebuild.py --from 2024-08-08T23:00:00Z --to 2024-08-09T01:00:00Z

What it does, one UTC day (one Cassandra partition per symbol) at a time:

1. reads the trades of ``[from, to)``, widened to whole 5-second windows, by partition key
   (``symbol IN (...) AND day = ...``, trade time range on the clustering column);
2. aggregates them with the streaming job's own :func:`stream_processor.transforms.ohlcv_bars`
   and upserts the 5-second bars; a 5-second bar left in the range without any trade is deleted;
3. recomputes the 1-minute and 1-hour bars overlapping the range from the stored finer bars with
   the streaming job's :class:`stream_processor.rollups.CassandraRollups` (deleting those left
   without finer bars).

Every write is an upsert or a delete by primary key, so running it twice, or again after a
failure, gives the same tables. A range of whole hours rebuilds every size from trades alone; for a
partial hour, the 1-minute and 1-hour bars also take in the stored 5-second bars outside the range,
as the streaming job does. Run it on a range the streaming job has closed (older than its watermark,
10 s); a bar still open in the stream is rewritten by the stream's next batch.

Exit status: 0 done, 1 Cassandra or Spark failed (the rebuild can be run again), 2 bad arguments
or settings (one line naming the field and the value).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from py4j.protocol import Py4JError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import functions as F

from schemas.contracts import TABLE_AGG_1H, TABLE_AGG_1M, TABLE_AGG_5S, TABLE_TRADES
from schemas.runtime.spark import build_session, collected_utc, read_cassandra, write_cassandra
from stream_processor import transforms
from stream_processor.config import StreamSettings
from stream_processor.exceptions import CassandraSinkError, ConfigError
from stream_processor.jobs import configure_logging
from stream_processor.rollups import HOUR, MINUTE, CassandraRollups, naive_utc
from stream_processor.sinks import CASSANDRA_DRIVER_ERRORS, retry_write

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "BAR",
    "ChunkResult",
    "RebuildRange",
    "day_chunks",
    "main",
    "parse_args",
    "parse_time",
    "rebuild_range",
    "run_rebuild",
]

logger = logging.getLogger(__name__)

BAR = timedelta(seconds=5)
DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAR_TABLES = (TABLE_TRADES, TABLE_AGG_5S, TABLE_AGG_1M, TABLE_AGG_1H)


def parse_time(field: str, text: str) -> datetime:
    """An ISO-8601 time (``Z`` or an offset; none means UTC) as an aware UTC datetime.

    :raises ConfigError: naming ``field`` and ``text`` when it is not a time.

    >>> parse_time("--from", "2024-08-08T23:00:00+02:00").isoformat()
    '2024-08-08T21:00:00+00:00'
    >>> parse_time("--to", "2024-08-09").isoformat()
    '2024-08-09T00:00:00+00:00'
    >>> parse_time("--from", "yesterday")
    Traceback (most recent call last):
    ...
    stream_processor.exceptions.ConfigError: --from: 'yesterday' is not an ISO-8601 time \
(e.g. 2024-08-08T23:00:00Z)
    """
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{field}: {text!r} is not an ISO-8601 time (e.g. 2024-08-08T23:00:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _floor(ts: datetime, step: timedelta) -> datetime:
    return _EPOCH + (ts - _EPOCH) // step * step


def _ceil(ts: datetime, step: timedelta) -> datetime:
    return _EPOCH - (_EPOCH - ts) // step * step


@dataclass(frozen=True)
class RebuildRange:
    """What to rebuild: ``[start, end)``, aware UTC on 5-second boundaries, and the symbols
    (empty: every symbol with trades or bars in the range)."""

    start: datetime
    end: datetime
    symbols: tuple[str, ...] = ()


def rebuild_range(start: datetime, end: datetime, symbols: Sequence[str] = ()) -> RebuildRange:
    """``[start, end)`` widened to whole 5-second windows, checked.

    :raises ConfigError: when ``end`` is not after ``start`` or a symbol is empty.

    >>> r = rebuild_range(datetime(2024, 8, 8, 23, 0, 2, tzinfo=UTC),
    ...                   datetime(2024, 8, 8, 23, 0, 7, tzinfo=UTC))
    >>> r.start.time(), r.end.time()
    (datetime.time(23, 0), datetime.time(23, 0, 10))
    """
    if end <= start:
        raise ConfigError(
            f"--to: {end.isoformat()} is not after --from {start.isoformat()}; "
            "the range is [from, to)"
        )
    for symbol in symbols:
        if not symbol.strip():
            raise ConfigError(f"--symbols: {','.join(symbols)!r} has an empty symbol")
    return RebuildRange(_floor(start, BAR), _ceil(end, BAR), tuple(s.strip() for s in symbols))


def day_chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at UTC midnights: each piece lies in one ``day`` partition.

    >>> [(a.isoformat(), b.isoformat()) for a, b in day_chunks(
    ...     datetime(2024, 8, 8, 23, tzinfo=UTC), datetime(2024, 8, 9, 1, tzinfo=UTC))]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('2024-08-08T23:00:00+00:00', '2024-08-09T00:00:00+00:00'),
     ('2024-08-09T00:00:00+00:00', '2024-08-09T01:00:00+00:00')]
    """
    chunks = []
    lo = start
    while lo < end:
        hi = min(_floor(lo, DAY) + DAY, end)
        chunks.append((lo, hi))
        lo = hi
    return chunks


@dataclass(frozen=True)
class ChunkResult:
    """What one day of the rebuild read, wrote and deleted."""

    start: datetime
    end: datetime
    symbols: int
    trades: int
    bars_5s: int
    deleted_5s: int
    bars_1m: int
    bars_1h: int
    deleted_1m: int
    deleted_1h: int

    def line(self) -> str:
        return (
            f"{self.start:%Y-%m-%d %H:%M:%S}..{self.end:%H:%M:%S} UTC: {self.symbols} "
            f"symbol{'' if self.symbols == 1 else 's'}, "
            f"{self.trades:,} trades -> {self.bars_5s:,} 5-s bars, {self.bars_1m:,} 1-m, "
            f"{self.bars_1h:,} 1-h; deleted {self.deleted_5s} 5-s, {self.deleted_1m} 1-m, "
            f"{self.deleted_1h} 1-h bars without trades"
        )


def _symbols_by_day(rollups: CassandraRollups) -> dict[date, set[str]]:
    """Symbols with trades or bars, per UTC day (a scan of the partition keys only)."""
    found: dict[date, set[str]] = {}
    for table in _BAR_TABLES:
        for row in rollups.session().execute(f"SELECT DISTINCT symbol, day FROM {table}"):
            day = row.day.date() if hasattr(row.day, "date") else row.day
            found.setdefault(day, set()).add(row.symbol)
    return found


def _trades(
    spark: SparkSession, keyspace: str, symbols: Sequence[str], lo: datetime, hi: datetime
) -> DataFrame:
    """The stored trades of ``symbols`` with ``lo <= trade_ts < hi``, one ``day`` partition each
    (the connector pushes the partition key and the clustering range down to Cassandra)."""
    return (
        read_cassandra(spark, keyspace, TABLE_TRADES)
        .where(F.col("symbol").isin(list(symbols)) & (F.col("day") == F.lit(lo.date())))
        .where((F.col("trade_ts") >= F.lit(lo)) & (F.col("trade_ts") < F.lit(hi)))
    )


def _rebuild_chunk(
    spark: SparkSession,
    rollups: CassandraRollups,
    settings: StreamSettings,
    symbols: Sequence[str],
    lo: datetime,
    hi: datetime,
) -> ChunkResult:
    keyspace = settings.cassandra.keyspace
    bars = transforms.ohlcv_bars(
        _trades(spark, keyspace, symbols, lo, hi), "5 seconds", "0 seconds"
    )
    bars.persist()
    try:
        retry_write(
            lambda: write_cassandra(bars, keyspace, TABLE_AGG_5S),
            what=f"cassandra {keyspace}.{TABLE_AGG_5S}",
            batch_id=0,
            timeout_ms=settings.sink_retry_ms,
            error=CassandraSinkError,
        )
        rows = bars.select("symbol", "window_start", "trade_count").collect()
    finally:
        bars.unpersist()
    rebuilt = {(r.symbol, collected_utc(r.window_start)) for r in rows}
    # Keys already stored in the range: a 5-s bar there without a trade now is deleted, and every
    # minute and hour bar overlapping the range is rolled up again (or deleted when left empty).
    first = naive_utc(lo)
    stored: dict[str, set[tuple[str, datetime]]] = {t: set() for t in _BAR_TABLES[1:]}
    for table, step in ((TABLE_AGG_5S, BAR), (TABLE_AGG_1M, MINUTE), (TABLE_AGG_1H, HOUR)):
        for symbol in symbols:
            starts = rollups.window_starts(table, symbol, _floor(lo, step), hi)
            stored[table].update((symbol, max(ts, first)) for ts in starts)
    stale = stored[TABLE_AGG_5S] - rebuilt
    deleted_5s = rollups.delete(TABLE_AGG_5S, stale)
    touched = rebuilt | stale | stored[TABLE_AGG_1M] | stored[TABLE_AGG_1H]
    counts = rollups.refresh(touched, delete_empty=True)
    return ChunkResult(
        start=lo,
        end=hi,
        symbols=len(symbols),
        trades=sum(r.trade_count for r in rows),
        bars_5s=len(rebuilt),
        deleted_5s=deleted_5s,
        bars_1m=counts.minutes,
        bars_1h=counts.hours,
        deleted_1m=counts.deleted_minutes,
        deleted_1h=counts.deleted_hours,
    )


def run_rebuild(
    spark: SparkSession,
    settings: StreamSettings,
    request: RebuildRange,
    *,
    report: Callable[[str], None] = print,
) -> list[ChunkResult]:
    """Rebuild the bars of ``request`` in ``settings.cassandra.keyspace``, one UTC day at a time.

    :param spark: a session with the Cassandra connector (``schemas.runtime.spark.build_session``).
    :param settings: the stream processor's settings (keyspace, ``SINK_RETRY_TIMEOUT``).
    :param request: the range and symbols (:func:`rebuild_range`).
    :param report: receives one progress line per day.
    :returns: what each day read, wrote and deleted.
    :raises CassandraSinkError: when the 5-second bars cannot be written within the retry time.
    """
    rollups = CassandraRollups(settings.cassandra, settings.cassandra.keyspace)
    chunks = day_chunks(request.start, request.end)
    results = []
    try:
        by_day = {} if request.symbols else _symbols_by_day(rollups)
        for i, (lo, hi) in enumerate(chunks, start=1):
            symbols = list(request.symbols) or sorted(by_day.get(lo.date(), ()))
            if not symbols:
                report(f"[{i}/{len(chunks)}] {lo:%Y-%m-%d}: no trades or bars, nothing to do")
                continue
            result = _rebuild_chunk(spark, rollups, settings, symbols, lo, hi)
            results.append(result)
            report(f"[{i}/{len(chunks)}] {result.line()}")
    finally:
        rollups.close()
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stream_processor.rebuild",
        description=(
            "Recompute the 5-s, 1-m and 1-h bars of [--from, --to) from the raw trades table "
            "(idempotent upserts; bars left without trades are deleted)."
        ),
    )
    parser.add_argument(
        "--from", dest="start", required=True, help="ISO-8601 start, inclusive (UTC if no offset)"
    )
    parser.add_argument("--to", dest="end", required=True, help="ISO-8601 end, exclusive")
    parser.add_argument(
        "--symbols", help="comma-separated symbols (default: every symbol with trades or bars)"
    )
    parser.add_argument("--keyspace", help="Cassandra keyspace (env CASSANDRA_KEYSPACE)")
    return parser.parse_args(argv)


def _request(args: argparse.Namespace) -> tuple[StreamSettings, RebuildRange]:
    env = {**os.environ, **({"CASSANDRA_KEYSPACE": args.keyspace} if args.keyspace else {})}
    symbols = args.symbols.split(",") if args.symbols is not None else []
    request = rebuild_range(parse_time("--from", args.start), parse_time("--to", args.end), symbols)
    return StreamSettings.from_env(env), request


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m stream_processor.rebuild``; returns the exit status."""
    configure_logging()
    args = parse_args(argv)
    try:
        settings, request = _request(args)  # before Spark starts: a typo costs no JVM
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    symbols = ",".join(request.symbols) or "every symbol with trades or bars"
    print(
        f"rebuilding bars of {request.start.isoformat()} .. {request.end.isoformat()} "
        f"in keyspace {settings.cassandra.keyspace}: {symbols}",
        flush=True,
    )
    spark = build_session(
        "stream_processor.rebuild",
        settings.cassandra,
        extra_conf={"spark.cassandra.query.retry.count": "3"},
    )
    try:
        results = run_rebuild(spark, settings, request, report=lambda s: print(s, flush=True))
    except (CassandraSinkError, Py4JError, CapturedException, *CASSANDRA_DRIVER_ERRORS) as exc:
        summary = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
        logger.error("rebuild failed, nothing is half-done that a rerun does not redo: %s", summary)
        print(f"error: {type(exc).__name__}: {summary}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(
        f"done: {sum(r.trades for r in results):,} trades, "
        f"{sum(r.bars_5s for r in results):,} 5-s, {sum(r.bars_1m for r in results):,} 1-m and "
        f"{sum(r.bars_1h for r in results):,} 1-h bars written; "
        f"{sum(r.deleted_5s + r.deleted_1m + r.deleted_1h for r in results)} bars deleted"
    )
    return 0
