"""Micro-batch sinks for ``foreachBatch``: idempotent Cassandra upserts and the Kafka DLQ.

Cassandra rows are keyed by their table's primary key, so writing the same micro-batch twice
(Spark replays the last uncommitted batch after a crash) leaves the table unchanged. The DLQ is
at-least-once: a replayed batch can repeat a dead letter; each carries ``source_topic``,
``partition`` and ``offset`` so readers can de-duplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from py4j.protocol import Py4JError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import Observation
from pyspark.sql import functions as F

from schemas.runtime.cassandra import driver_errors
from schemas.runtime.spark import collected_utc, write_cassandra
from stream_processor import transforms
from stream_processor.exceptions import CassandraSinkError, DeadLetterSinkError, SinkError
from stream_processor.rollups import CassandraRollups

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = [
    "CASSANDRA_DRIVER_ERRORS",
    "BarsSink",
    "RawTradesSink",
    "retry_write",
]

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 10.0
# cassandra-driver failures that a later attempt can get past (node down, timeouts).
CASSANDRA_DRIVER_ERRORS: tuple[type[BaseException], ...] = driver_errors()


def retry_write(
    write: Callable[[], None],
    *,
    what: str,
    batch_id: int,
    timeout_ms: int,
    error: type[SinkError],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
    retryable: tuple[type[BaseException], ...] = (Py4JError, CapturedException),
) -> int:
    """Run ``write`` until it succeeds, retrying I/O failures with capped backoff.

    Retrying is safe because every write is idempotent (upsert) or at-least-once (DLQ).

    :param write: performs the whole write; raises a Spark/py4j error on failure.
    :param what: names the target in log lines, e.g. ``cassandra market.trades``.
    :param batch_id: the micro-batch id, for log lines.
    :param timeout_ms: give up after this long (ms) and raise ``error``.
    :param error: the :class:`SinkError` subclass to raise when giving up.
    :param stop: when set (the job is shutting down), give up at once instead of retrying.
    :param retryable: the failures worth retrying; by default Spark/py4j errors of a JVM write.
    :returns: the number of attempts it took.
    :raises SinkError: when the write still fails after ``timeout_ms``.

    >>> calls = []
    >>> def flaky() -> None:
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise Py4JError("connection refused")
    >>> retry_write(flaky, what="x", batch_id=7, timeout_ms=60_000, error=SinkError,
    ...             sleep=lambda s: None)
    3
    """
    deadline = clock() + timeout_ms / 1000.0
    attempt = 0
    backoff = 0.5
    while True:
        attempt += 1
        try:
            write()
            return attempt
        except retryable as exc:
            summary = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            stopping = stop is not None and stop.is_set()
            if stopping or clock() + backoff > deadline:
                logger.error(
                    "batch %d: writing to %s failed after %d attempts, giving up: %s",
                    batch_id,
                    what,
                    attempt,
                    summary,
                    exc_info=True,
                )
                raise error(
                    f"batch {batch_id}: writing to {what} failed after {attempt} attempts: "
                    f"{summary}"
                ) from exc
            logger.warning(
                "batch %d: writing to %s failed (attempt %d), retrying in %.1f s: %s",
                batch_id,
                what,
                attempt,
                backoff,
                summary,
            )
            if stop is not None:
                stop.wait(backoff)
            else:
                sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)


@dataclass(frozen=True)
class RawTradesSink:
    """``foreachBatch`` target of the raw query: valid trades upserted into ``trades``,
    rejected records to the DLQ topic.

    :param keyspace: Cassandra keyspace.
    :param table: the raw trades table (``schemas.TABLE_TRADES``).
    :param bootstrap_servers: Kafka brokers for the DLQ.
    :param dlq_topic: DLQ topic name.
    :param retry_ms: how long to retry a failing write (ms).
    :param stop: set when the job shuts down; a retrying write then gives up at once.
    """

    keyspace: str
    table: str
    bootstrap_servers: str
    dlq_topic: str
    retry_ms: int
    stop: threading.Event | None = None

    def __call__(self, decoded: DataFrame, batch_id: int) -> None:
        # The rejects are counted while the trades are written, so a batch without rejects (the
        # usual case) is read and decoded once, with no cache and no second Spark job. A batch
        # with rejects is decoded again from Kafka for the DLQ; it is the same offset range.
        rejects = Observation(f"rejects-{batch_id}")
        counted = decoded.observe(rejects, F.count(F.col("reason")).alias("rejects"))
        rows = transforms.trade_rows(transforms.valid_trades(counted))
        retry_write(
            lambda: write_cassandra(rows, self.keyspace, self.table),
            what=f"cassandra {self.keyspace}.{self.table}",
            batch_id=batch_id,
            timeout_ms=self.retry_ms,
            error=CassandraSinkError,
            stop=self.stop,
        )
        if not rejects.get["rejects"]:
            return
        letters = transforms.dead_letters(decoded)
        retry_write(
            lambda: self._write_dlq(letters),
            what=f"kafka {self.dlq_topic}",
            batch_id=batch_id,
            timeout_ms=self.retry_ms,
            error=DeadLetterSinkError,
            stop=self.stop,
        )

    def _write_dlq(self, letters: DataFrame) -> None:
        (
            letters.write.format("kafka")
            .option("kafka.bootstrap.servers", self.bootstrap_servers)
            .option("kafka.acks", "all")
            .option("topic", self.dlq_topic)
            .save()
        )


@dataclass(frozen=True)
class BarsSink:
    """``foreachBatch`` target of the bars query: the updated 5-second bars upserted into
    ``table``, then the 1-minute and 1-hour bars they belong to recomputed (``rollups``).

    :param keyspace: Cassandra keyspace.
    :param table: the 5-second bars table.
    :param retry_ms: how long to retry a failing write (ms).
    :param rollups: recomputes the coarser bars; ``None`` writes the 5-second bars only.
    :param stop: set when the job shuts down; a retrying write then gives up at once.
    """

    keyspace: str
    table: str
    retry_ms: int
    rollups: CassandraRollups | None = None
    stop: threading.Event | None = None

    def __call__(self, bars: DataFrame, batch_id: int) -> None:
        # Cached so that a retry rewrites the same rows instead of re-running the stateful plan.
        bars.persist()
        try:
            retry_write(
                lambda: write_cassandra(bars, self.keyspace, self.table),
                what=f"cassandra {self.keyspace}.{self.table}",
                batch_id=batch_id,
                timeout_ms=self.retry_ms,
                error=CassandraSinkError,
                stop=self.stop,
            )
            if self.rollups is None:
                return
            keys = bars.select("symbol", "window_start").collect()
            touched = [(row.symbol, collected_utc(row.window_start)) for row in keys]
        finally:
            bars.unpersist()
        rollups = self.rollups

        def refresh() -> None:
            counts = rollups.refresh(touched)
            logger.debug(
                "batch %d: rewrote %d 1-m and %d 1-h bars", batch_id, counts.minutes, counts.hours
            )

        retry_write(
            refresh,
            what=f"cassandra {self.keyspace} rollups",
            batch_id=batch_id,
            timeout_ms=self.retry_ms,
            error=CassandraSinkError,
            stop=self.stop,
            retryable=CASSANDRA_DRIVER_ERRORS,
        )
