"""What every Kafka sink shares, whichever client library sends: the key -> partition rule, the
accounting of records Kafka refused, the bounded backlog of records Kafka has not acknowledged
yet (:class:`DeliveryBacklog`), and the interface the pipeline and the entrypoint talk to.

Two sinks implement :class:`TradeSink`: ``collector.producer.KafkaSink`` (kafka-python, the
default) and ``collector.producer_confluent.ConfluentKafkaSink`` (librdkafka), chosen with
``COLLECTOR_KAFKA_CLIENT``; their shared lifecycle is ``collector.sink.KafkaSinkBase``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from kafka.partitioner.default import murmur2

from collector.exceptions import DeliveryError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, Trade

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "DEFAULT_BUFFER_RECORDS",
    "NO_DELIVERY_DEADLINE_MS",
    "RECONNECT_BACKOFF_MAX_MS",
    "DeliveryBacklog",
    "DeliveryLedger",
    "PendingFrame",
    "TradeSink",
    "estimated_size",
    "partition_for",
]

DEFAULT_BUFFER_RECORDS = 100_000
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
# kafka-python needs a number: about 24.8 days, longer than any outage worth waiting out.
# (librdkafka's 0 means no deadline.)
NO_DELIVERY_DEADLINE_MS = 2**31 - 1
# Longest wait between attempts to reach a broker that went away (both clients).
RECONNECT_BACKOFF_MAX_MS = 2_000
# A dead letter's JSON adds field names, the reason, the times and escaping to its raw input.
_LETTER_OVERHEAD_BYTES = 512
# Nothing acknowledged for this long while records wait: an outage, logged (then every
# _OUTAGE_LOG_INTERVAL_S while it lasts).
_OUTAGE_AFTER_S = 5.0
_OUTAGE_LOG_INTERVAL_S = 30.0


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java and kafka-python) picks for ``key``.

    librdkafka's ``murmur2_random`` partitioner picks the same one.

    >>> partition_for(b"AAPL", 2) in (0, 1)
    True
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def estimated_size(letters: Sequence[DeadLetter]) -> int:
    """Bytes the JSON of ``letters`` takes, near enough to bound the backlog (their raw input is
    at most 64 KiB each)."""
    return sum(len(d.raw) + len(d.detail) + _LETTER_OVERHEAD_BYTES for d in letters)


class DeliveryLedger:
    """Counts the records Kafka finally refused and turns them into :class:`DeliveryError`.

    :param metrics: ``collector_delivery_failures_total`` is incremented per refused record.
    :param log: the sink's logger; the first failure and every 1000th are logged at ERROR.

    >>> ledger = DeliveryLedger(CollectorMetrics(), logging.getLogger("doctest"))
    >>> ledger.raise_if_failed()  # nothing failed: no error
    >>> ledger.record_failure("trades", "MSG_TIMED_OUT: Local: Message timed out")
    >>> ledger.failed
    1
    >>> ledger.raise_if_failed()
    Traceback (most recent call last):
    ...
    collector.exceptions.DeliveryError: kafka: 1 record(s) not acknowledged; first error: \
trades: MSG_TIMED_OUT: Local: Message timed out
    """

    def __init__(self, metrics: CollectorMetrics, log: logging.Logger) -> None:
        self.metrics = metrics
        self.failed = 0
        self.first_failure: str | None = None
        self._log = log

    def record_failure(self, topic: str, error: BaseException | str) -> None:
        """Count one refused record of ``topic``; ``error`` is the exception or its description."""
        self.failed += 1
        self.metrics.delivery_failures.inc()
        if self.first_failure is None:
            described = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.first_failure = f"{topic}: {described}"
        if self.failed == 1 or self.failed % 1000 == 0:
            self._log.error(
                "kafka %s: record not acknowledged (%d so far): %s", topic, self.failed, error
            )

    def raise_if_failed(self) -> None:
        """:raises DeliveryError: when any record was refused by Kafka so far."""
        if self.failed:
            raise DeliveryError(
                f"kafka: {self.failed} record(s) not acknowledged; first error: "
                f"{self.first_failure}"
            )


class PendingFrame:
    """The records of one frame handed to the producer: :meth:`done` once per record, from the
    client's callbacks (kafka-python calls them on its sender thread, librdkafka in ``poll()``).

    Only the callbacks write ``remaining`` and the backlog's acknowledged counters, and only the
    reading thread writes the admitted ones, so no lock is needed.
    """

    __slots__ = ("_backlog", "received_ms", "records", "remaining", "size")

    def __init__(self, backlog: DeliveryBacklog, records: int, size: int, received_ms: int) -> None:
        self._backlog = backlog
        self.records = records
        self.remaining = records
        self.size = size
        self.received_ms = received_ms

    def done(self, _result: object = None) -> None:
        """One record acknowledged or finally refused (refusals are counted by the ledger)."""
        self.remaining -= 1
        if self.remaining == 0:
            self._backlog._completed(self)


class DeliveryBacklog:
    """Records handed to the producer that Kafka has not acknowledged yet, bounded.

    The producer retries without a deadline, so a Kafka outage costs memory, not records: the
    backlog admits a frame while fewer than ``max_records`` records and ``max_bytes`` bytes
    wait (an empty backlog admits any frame, so a frame is never split); past that it refuses
    frames until Kafka has acknowledged half of each bound, so one outage refuses one
    contiguous run of frames (the pipeline records it as a gap).

    :param max_records: bound on unacknowledged records (``COLLECTOR_KAFKA_BUFFER_RECORDS``).
    :param max_bytes: bound on their keys and values (``COLLECTOR_KAFKA_BUFFER_BYTES``).
    :param metrics: ``collector_kafka_buffered_records``/``_bytes`` and
        ``collector_kafka_outage_seconds`` read this backlog.
    :param clock: monotonic seconds (tests pass a fake).

    >>> backlog = DeliveryBacklog(max_records=4, max_bytes=1000, metrics=CollectorMetrics())
    >>> first = backlog.admit(3, 30, received_ms=1)
    >>> backlog.admit(2, 20, received_ms=2) is None   # 3 + 2 > 4: refused
    True
    >>> for _ in range(3):
    ...     first.done()
    >>> (backlog.records, backlog.oldest_received_ms(), backlog.admit(2, 20, received_ms=3).records)
    (0, None, 2)
    """

    def __init__(
        self,
        *,
        max_records: int = DEFAULT_BUFFER_RECORDS,
        max_bytes: int = DEFAULT_BUFFER_BYTES,
        metrics: CollectorMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError(f"max_records={max_records}, max_bytes={max_bytes}: must be >= 1")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._clock = clock
        self._frames: deque[PendingFrame] = deque()
        self._admitted_records = self._admitted_bytes = 0
        self._acked_records = self._acked_bytes = 0
        self._last_progress = clock()
        self.full = False
        self._outage_logged_at: float | None = None
        metrics.buffered_records.set_function(lambda: self.records)
        metrics.buffered_bytes.set_function(lambda: self.bytes)
        metrics.outage_seconds.set_function(self.outage_s)

    @property
    def records(self) -> int:
        """Records handed over and not yet acknowledged (or refused)."""
        return self._admitted_records - self._acked_records

    @property
    def bytes(self) -> int:
        return self._admitted_bytes - self._acked_bytes

    def admit(self, records: int, size: int, *, received_ms: int) -> PendingFrame | None:
        """Room for a frame of ``records`` records and ``size`` bytes? None means drop it."""
        waiting, waiting_bytes = self.records, self.bytes
        if self.full and (waiting > self.max_records // 2 or waiting_bytes > self.max_bytes // 2):
            return None
        over = waiting + records > self.max_records or waiting_bytes + size > self.max_bytes
        if waiting and over:
            self.full = True
            return None
        self.full = False
        return self.track(records, size, received_ms=received_ms)

    def track(self, records: int, size: int, *, received_ms: int) -> PendingFrame:
        """Count a frame handed to the producer whatever the bound (callers without a choice)."""
        if not self.records:
            self._last_progress = self._clock()  # an outage starts when something waits
        frame = PendingFrame(self, records, size, received_ms)
        self._forget_settled()
        self._frames.append(frame)
        self._admitted_records += records
        self._admitted_bytes += size
        return frame

    def _completed(self, frame: PendingFrame) -> None:
        self._acked_records += frame.records
        self._acked_bytes += frame.size
        self._last_progress = self._clock()

    def _forget_settled(self) -> None:
        frames = self._frames
        while frames and frames[0].remaining <= 0:
            frames.popleft()

    def oldest_received_ms(self) -> int | None:
        """Arrival time of the oldest frame with a record Kafka has not acknowledged."""
        self._forget_settled()
        return self._frames[0].received_ms if self._frames else None

    def outage_s(self) -> float:
        """Seconds Kafka has acknowledged nothing while records wait (0 when none wait)."""
        if not self.records:
            return 0.0
        return max(0.0, self._clock() - self._last_progress)

    def check(self, log: logging.Logger, bootstrap_servers: str) -> None:
        """Log an outage when it begins (and every 30 s while it lasts), and its end."""
        outage = self.outage_s()
        if outage >= _OUTAGE_AFTER_S:
            now = self._clock()
            last = self._outage_logged_at
            if last is None or now - last >= _OUTAGE_LOG_INTERVAL_S:
                self._outage_logged_at = now
                log.warning(
                    "kafka %s: nothing acknowledged for %.0f s; %d records (%d bytes) buffered, "
                    "bound %d records or %d bytes (COLLECTOR_KAFKA_BUFFER_RECORDS/_BYTES), "
                    "retrying until Kafka is back",
                    bootstrap_servers,
                    outage,
                    self.records,
                    self.bytes,
                    self.max_records,
                    self.max_bytes,
                )
        elif self._outage_logged_at is not None and outage < 1.0:
            self._outage_logged_at = None
            log.warning(
                "kafka %s: acknowledging again; %d records still buffered",
                bootstrap_servers,
                self.records,
            )


class TradeSink(Protocol):
    """The Kafka sink as the pipeline and ``python -m collector`` use it.

    Lifecycle: :meth:`setup` (fails loudly with ``SinkSetupError``), any number of sends,
    :meth:`close` always (it flushes and raises ``DeliveryError`` if anything is undelivered).
    """

    trades_topic: str
    dlq_topic: str
    bootstrap_servers: str
    backlog: DeliveryBacklog
    sent: int
    dead_letters_sent: int

    @property
    def failed(self) -> int: ...

    def setup(self) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...

    def raise_if_failed(self) -> None: ...

    def poll(self) -> None: ...

    def send_trades(
        self,
        trades: Sequence[Trade],
        values: Sequence[bytes],
        pending: PendingFrame | None = None,
    ) -> None: ...

    def send_dead_letters(
        self, letters: Sequence[DeadLetter], pending: PendingFrame | None = None
    ) -> None: ...
