"""What every Kafka sink shares, whichever client library sends: the key -> partition rule, the
accounting of records Kafka refused, and the interface the pipeline and the entrypoint talk to.

Two sinks implement :class:`TradeSink`: ``collector.producer.KafkaSink`` (kafka-python, the
default) and ``collector.producer_confluent.ConfluentKafkaSink`` (librdkafka), chosen with
``COLLECTOR_KAFKA_CLIENT``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from kafka.partitioner.default import murmur2

from collector.exceptions import DeliveryError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, Trade

__all__ = ["DeliveryLedger", "TradeSink", "partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java and kafka-python) picks for ``key``.

    librdkafka's ``murmur2_random`` partitioner picks the same one.

    >>> partition_for(b"AAPL", 2) in (0, 1)
    True
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


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


class TradeSink(Protocol):
    """The Kafka sink as the pipeline and ``python -m collector`` use it.

    Lifecycle: :meth:`setup` (fails loudly with ``SinkSetupError``), any number of sends,
    :meth:`close` always (it flushes and raises ``DeliveryError`` if anything is undelivered).
    """

    trades_topic: str
    dlq_topic: str
    sent: int
    dead_letters_sent: int

    @property
    def failed(self) -> int: ...

    def setup(self) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...

    def raise_if_failed(self) -> None: ...

    def send_trades(self, trades: Sequence[Trade], values: Sequence[bytes]) -> None: ...

    def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...
