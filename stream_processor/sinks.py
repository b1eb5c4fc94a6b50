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

from stream_processor import transforms
from stream_processor.exceptions import CassandraSinkError, DeadLetterSinkError, SinkError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["BarsSink", "RawTradesSink", "retry_write"]

logger = logging.getLogger(__name__)

CASSANDRA_FORMAT = "org.apache.spark.sql.cassandra"
_MAX_BACKOFF_S = 10.0


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
) -> int:
    """Run ``write`` until it succeeds, retrying JVM-side failures with capped backoff.

    Retrying is safe because every write is idempotent (upsert) or at-least-once (DLQ).

    :param write: performs the whole write; raises a Spark/py4j error on failure.
    :param what: names the target in log lines, e.g. ``cassandra market.trades``.
    :param batch_id: the micro-batch id, for log lines.
    :param timeout_ms: give up after this long (ms) and raise ``error``.
    :param error: the :class:`SinkError` subclass to raise when giving up.
    :param stop: when set (the job is shutting down), give up at once instead of retrying.
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
        except (Py4JError, CapturedException) as exc:
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


def _write_cassandra(frame: DataFrame, keyspace: str, table: str) -> None:
    (
        frame.write.format(CASSANDRA_FORMAT)
        .options(keyspace=keyspace, table=table)
        .mode("append")
        .save()
    )


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
        decoded.persist()
        try:
            rows = transforms.trade_rows(transforms.valid_trades(decoded))
            retry_write(
                lambda: _write_cassandra(rows, self.keyspace, self.table),
                what=f"cassandra {self.keyspace}.{self.table}",
                batch_id=batch_id,
                timeout_ms=self.retry_ms,
                error=CassandraSinkError,
                stop=self.stop,
            )
            letters = transforms.dead_letters(decoded)
            if not letters.take(1):  # cheap on the cached batch; skips an empty Kafka job
                return
            retry_write(
                lambda: self._write_dlq(letters),
                what=f"kafka {self.dlq_topic}",
                batch_id=batch_id,
                timeout_ms=self.retry_ms,
                error=DeadLetterSinkError,
                stop=self.stop,
            )
        finally:
            decoded.unpersist()

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
    """``foreachBatch`` target of a bars query: the updated bars upserted into ``table``.

    :param keyspace: Cassandra keyspace.
    :param table: one of the ``trades_agg_*`` tables.
    :param retry_ms: how long to retry a failing write (ms).
    :param stop: set when the job shuts down; a retrying write then gives up at once.
    """

    keyspace: str
    table: str
    retry_ms: int
    stop: threading.Event | None = None

    def __call__(self, bars: DataFrame, batch_id: int) -> None:
        # Cached so that a retry rewrites the same rows instead of re-running the stateful plan.
        bars.persist()
        try:
            retry_write(
                lambda: _write_cassandra(bars, self.keyspace, self.table),
                what=f"cassandra {self.keyspace}.{self.table}",
                batch_id=batch_id,
                timeout_ms=self.retry_ms,
                error=CassandraSinkError,
                stop=self.stop,
            )
        finally:
            bars.unpersist()
