"""The Kafka sink's lifecycle, once for both client libraries.

:class:`KafkaSinkBase` holds what does not depend on the client: the topics, the
:class:`~collector.delivery.DeliveryBacklog` and :class:`~collector.delivery.DeliveryLedger`,
``setup`` (create the producer, find both topics, fail loudly), ``flush``/``close`` (close always
flushes first and raises :class:`DeliveryError` if anything stayed unacknowledged), the checks
every send starts with and the counters it ends with, and the translation of the client's send
errors into :class:`DeliveryError`. A subclass supplies only the client calls:
``collector.producer.KafkaSink`` (kafka-python, the default) and
``collector.producer_confluent.ConfluentKafkaSink`` (librdkafka), chosen with
``COLLECTOR_KAFKA_CLIENT``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from collector.delivery import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_RECORDS,
    DeliveryBacklog,
    DeliveryLedger,
    PendingFrame,
    estimated_size,
)
from collector.exceptions import DeliveryError, SinkSetupError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, Trade

__all__ = ["KafkaSinkBase", "ProducerOptions"]


@dataclass(frozen=True, kw_only=True)
class ProducerOptions:
    """The sink's settings each client spells in its own configuration keys.

    >>> ProducerOptions().delivery_timeout_s is None   # no delivery deadline
    True
    """

    linger_ms: int = 20
    batch_bytes: int = 262_144
    compression: str = "gzip"
    delivery_timeout_s: float | None = None
    setup_timeout_s: float = 15.0
    buffer_records: int = DEFAULT_BUFFER_RECORDS
    buffer_bytes: int = DEFAULT_BUFFER_BYTES


class KafkaSinkBase(ABC):
    """Produces trades and dead letters; :meth:`setup` first, :meth:`close` always.

    :param bootstrap_servers: ``host:port[,host:port]``.
    :param trades_topic: topic of Avro trades; :param dlq_topic: topic of dead letters.
    :param linger_ms: how long the producer waits to fill a batch (default 20 ms).
    :param batch_bytes: maximum batch size per partition (default 256 KiB).
    :param compression: ``gzip`` (default), ``none``, or a codec the client supports.
    :param delivery_timeout_s: how long a record may be retried before it counts as failed;
        None (default): until Kafka acknowledges it.
    :param setup_timeout_s: how long :meth:`setup` waits for the brokers (default 15 s).
    :param buffer_records: bound on records Kafka has not acknowledged (default 100,000)...
    :param buffer_bytes: ...and on their bytes (default 64 MiB): see :attr:`backlog`.
    :param metrics: where delivery failures, produce latency and the backlog are recorded.
    :param producer_factory: builds the client's producer (tests pass fakes); None: the client's.
    :raises SinkSetupError: from :meth:`setup`, when brokers or topics cannot be reached.

    A subclass sets the class attributes below and implements the abstract methods. Either
    client's sink is used the same way, with a broker::

        sink = KafkaSink(bootstrap_servers="127.0.0.1:9092", trades_topic="trades",
                         dlq_topic="trades.dlq")   # or ConfluentKafkaSink(...)
        sink.setup()
        try:
            sink.send_trades(trades, encoder.encode_many(trades))
        finally:
            sink.close(timeout_s=30)   # flushes; raises DeliveryError if anything is left
    """

    #: The client's producer class (the default ``producer_factory``).
    _producer_class: ClassVar[Callable[..., Any]]
    #: How the "ready" log line names the sink.
    _label: ClassVar[str]
    #: The subclass module's logger: refused records are logged there.
    _log: ClassVar[logging.Logger]
    #: What the client raises when it cannot create a producer from the configuration.
    _setup_errors: ClassVar[tuple[type[Exception], ...]]
    #: What the client raises when it refuses a record outright (becomes DeliveryError).
    _send_errors: ClassVar[tuple[type[Exception], ...]]

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        trades_topic: str,
        dlq_topic: str,
        linger_ms: int = ProducerOptions.linger_ms,
        batch_bytes: int = ProducerOptions.batch_bytes,
        compression: str = ProducerOptions.compression,
        delivery_timeout_s: float | None = ProducerOptions.delivery_timeout_s,
        setup_timeout_s: float = ProducerOptions.setup_timeout_s,
        buffer_records: int = ProducerOptions.buffer_records,
        buffer_bytes: int = ProducerOptions.buffer_bytes,
        metrics: CollectorMetrics | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.trades_topic = trades_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics or CollectorMetrics()
        self.backlog = DeliveryBacklog(
            max_records=buffer_records, max_bytes=buffer_bytes, metrics=self.metrics
        )
        self._options = ProducerOptions(
            linger_ms=linger_ms,
            batch_bytes=batch_bytes,
            compression=compression,
            delivery_timeout_s=delivery_timeout_s,
            setup_timeout_s=setup_timeout_s,
            buffer_records=buffer_records,
            buffer_bytes=buffer_bytes,
        )
        self._factory = producer_factory or self._producer_class
        self._producer_config = self._client_config(self._options)
        self._producer: Any = None
        self._partitions = 0  # of the trades topic, known after setup()
        self.sent = 0
        self.dead_letters_sent = 0
        self._ledger = DeliveryLedger(self.metrics, self._log)

    @property
    def failed(self) -> int:
        """Records Kafka finally refused so far."""
        return self._ledger.failed

    # -- what a client supplies ----------------------------------------------------------------
    @abstractmethod
    def _client_config(self, options: ProducerOptions) -> dict[str, Any]:
        """The producer's configuration in the client's own keys.

        Called once, from ``__init__``: a client also starts its own state here (caches, log
        throttles), which lives as long as the sink, across setup retries.
        """

    @abstractmethod
    def _new_producer(self) -> Any:
        """Create the producer from ``self._producer_config`` with ``self._factory``."""

    @abstractmethod
    def _partitions_of(self, producer: Any, topic: str, deadline: float) -> int:
        """How many partitions ``topic`` has, waiting until ``deadline`` (monotonic) at most.

        :raises SinkSetupError: the topic cannot be reached or has no partitions.
        """

    @abstractmethod
    def _abandon(self, producer: Any) -> None:
        """Close a producer whose setup failed, dropping whatever it holds."""

    @abstractmethod
    def _flush_producer(self, producer: Any, timeout_s: float) -> None:
        """:raises DeliveryError: records are still unacknowledged after ``timeout_s``."""

    @abstractmethod
    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        """Close the producer after :meth:`flush` (which may have raised)."""

    @abstractmethod
    def _produce_trades(
        self, producer: Any, trades: Sequence[Trade], values: Sequence[bytes], pending: PendingFrame
    ) -> None:
        """Hand one frame's trades to the producer; each record settles ``pending`` once, and the
        frame feeds ``collector_produce_latency_seconds`` once."""

    @abstractmethod
    def _produce_letters(
        self, producer: Any, records: Sequence[tuple[bytes | None, bytes]], pending: PendingFrame
    ) -> None:
        """Hand dead letters, as ``(key, JSON)`` records, to the producer for the DLQ topic."""

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the producer and fetch both topics' partitions; fails loudly.

        :raises SinkSetupError: naming the brokers or the topic that could not be reached.
        """
        try:
            producer = self._new_producer()
        except self._setup_errors as exc:
            raise SinkSetupError(
                f"Kafka producer for {self.bootstrap_servers} could not start: {exc}"
            ) from exc
        deadline = time.monotonic() + self._options.setup_timeout_s
        try:
            partitions = [
                self._partitions_of(producer, topic, deadline)
                for topic in (self.trades_topic, self.dlq_topic)
            ]
        except SinkSetupError:
            self._abandon(producer)
            raise
        self._producer = producer
        self._partitions = partitions[0]
        self._log.info(
            "%s ready: %s (%d partitions), dlq %s, brokers %s",
            self._label,
            self.trades_topic,
            self._partitions,
            self.dlq_topic,
            self.bootstrap_servers,
        )

    def flush(self, timeout_s: float) -> None:
        """Wait until every record handed over so far is acknowledged or failed.

        :raises DeliveryError: something was not acknowledged within ``timeout_s`` or failed.
        """
        if self._producer is None:
            return
        self._flush_producer(self._producer, timeout_s)
        self.raise_if_failed()

    def close(self, timeout_s: float) -> None:
        """Flush, then close the producer (also when the flush raises); a second close is a
        no-op."""
        if self._producer is None:
            return
        try:
            self.flush(timeout_s)
        finally:
            producer, self._producer = self._producer, None
            self._close_producer(producer, timeout_s)

    def raise_if_failed(self) -> None:
        """:raises DeliveryError: when any record was refused by Kafka so far."""
        self._ledger.raise_if_failed()

    @abstractmethod
    def poll(self) -> None:
        """Serve the client's delivery reports now, if it needs to be asked; also called after
        every frame handed over."""

    # -- sending -------------------------------------------------------------------------------
    def _set_up_producer(self) -> Any:
        if self._producer is None:
            raise DeliveryError("kafka sink is not set up (call setup() first)")
        return self._producer

    def send_trades(
        self,
        trades: Sequence[Trade],
        values: Sequence[bytes],
        pending: PendingFrame | None = None,
    ) -> None:
        """Hand one frame's trades (and their encoded values) to the producer, key = symbol.

        :param pending: the frame's place in :attr:`backlog` (from ``backlog.admit``); each
            record settles it when Kafka answers. None: the trades are tracked on their own.
        :raises DeliveryError: the sink is not set up, or the producer refused a record.
        :raises ValueError: ``trades`` and ``values`` differ in length (nothing is sent).
        """
        producer = self._set_up_producer()
        if len(trades) != len(values):
            raise ValueError(f"{len(trades)} trades but {len(values)} values")
        if not values:
            return
        if pending is None:
            pending = self.backlog.track(
                len(values), sum(map(len, values)), received_ms=time.time_ns() // 1_000_000
            )
        try:
            self._produce_trades(producer, trades, values, pending)
        except self._send_errors as exc:
            raise DeliveryError(f"kafka {self.trades_topic}: send failed: {exc}") from exc
        self.sent += len(values)
        self.poll()

    def send_dead_letters(
        self, letters: Sequence[DeadLetter], pending: PendingFrame | None = None
    ) -> None:
        """Produce dead letters as JSON to the DLQ topic, key = symbol when known.

        :param pending: as for :meth:`send_trades`.
        """
        producer = self._set_up_producer()
        if pending is None:
            pending = self.backlog.track(
                len(letters), estimated_size(letters), received_ms=time.time_ns() // 1_000_000
            )
        records = [
            (letter.symbol.encode("utf-8") if letter.symbol else None, letter.to_json())
            for letter in letters
        ]
        try:
            self._produce_letters(producer, records, pending)
        except self._send_errors as exc:
            raise DeliveryError(f"kafka {self.dlq_topic}: send failed: {exc}") from exc
        self.dead_letters_sent += len(letters)
        self.poll()
