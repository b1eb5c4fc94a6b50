"""The Kafka sink: trades (Avro, key = symbol) and dead letters (JSON) with kafka-python.

Delivery guarantees: ``acks=all`` and the idempotent producer (no duplicates from retries, order
kept per partition), retries until Kafka acknowledges (no delivery deadline by default: an
outage is waited out, its memory bounded by the :class:`~collector.delivery.DeliveryBacklog`).
Every record carries an errback, so a record Kafka refuses is counted, logged and turned into
:class:`DeliveryError` at the next :meth:`KafkaSink.raise_if_failed` or :meth:`KafkaSink.flush`;
nothing fails silently.
``collector.producer_confluent.ConfluentKafkaSink`` is the same sink on librdkafka; the pieces
both share live in :mod:`collector.delivery`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from collector.delivery import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_RECORDS,
    NO_DELIVERY_DEADLINE_MS,
    RECONNECT_BACKOFF_MAX_MS,
    DeliveryBacklog,
    DeliveryLedger,
    PendingFrame,
    estimated_size,
    partition_for,
)
from collector.exceptions import DeliveryError, SinkSetupError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, Trade

__all__ = ["KafkaSink", "partition_for"]

logger = logging.getLogger(__name__)


class KafkaSink:
    """Produces trades and dead letters; :meth:`setup` first, :meth:`close` always.

    :param bootstrap_servers: ``host:port[,host:port]``.
    :param trades_topic: topic of Avro trades; :param dlq_topic: topic of dead letters.
    :param linger_ms: how long the producer waits to fill a batch (default 20 ms).
    :param batch_bytes: maximum batch size per partition (default 256 KiB).
    :param compression: ``gzip`` (default), ``none``, or a codec whose library is installed.
    :param delivery_timeout_s: how long a record may be retried before it counts as failed;
        None (default): until Kafka acknowledges it.
    :param buffer_records: bound on records Kafka has not acknowledged (default 100,000)...
    :param buffer_bytes: ...and on their bytes (default 64 MiB): see :attr:`backlog`.
    :param metrics: where delivery failures, produce latency and the backlog are recorded.
    :raises SinkSetupError: from :meth:`setup`, when brokers or topics cannot be reached.

    Example (needs a broker)::

        sink = KafkaSink(bootstrap_servers="127.0.0.1:9092", trades_topic="trades",
                         dlq_topic="trades.dlq")
        sink.setup()
        try:
            sink.send_trades(trades, encoder.encode_many(trades))
        finally:
            sink.close(timeout_s=30)   # flushes; raises DeliveryError if anything is left
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        trades_topic: str,
        dlq_topic: str,
        linger_ms: int = 20,
        batch_bytes: int = 262_144,
        compression: str = "gzip",
        delivery_timeout_s: float | None = None,
        setup_timeout_s: float = 15.0,
        buffer_records: int = DEFAULT_BUFFER_RECORDS,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        metrics: CollectorMetrics | None = None,
        producer_factory: Callable[..., Any] = KafkaProducer,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.trades_topic = trades_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics or CollectorMetrics()
        self.backlog = DeliveryBacklog(
            max_records=buffer_records, max_bytes=buffer_bytes, metrics=self.metrics
        )
        delivery_timeout_ms = (
            NO_DELIVERY_DEADLINE_MS
            if delivery_timeout_s is None
            else int(delivery_timeout_s * 1000)
        )
        self._producer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers.split(","),
            "client_id": "collector",
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,
            "linger_ms": linger_ms,
            "batch_size": batch_bytes,
            "compression_type": None if compression == "none" else compression,
            "delivery_timeout_ms": delivery_timeout_ms,
            "request_timeout_ms": min(30_000, delivery_timeout_ms),
            "max_block_ms": int(setup_timeout_s * 1000),
            # Default 30 s: after an outage the buffer would fill that long after Kafka is back.
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            "allow_auto_create_topics": True,
        }
        self._factory = producer_factory
        self._producer: Any = None
        self._keys: dict[str, tuple[bytes, int]] = {}
        self._partitions = 0
        self.sent = 0
        self.dead_letters_sent = 0
        self._ledger = DeliveryLedger(self.metrics, logger)

    @property
    def failed(self) -> int:
        """Records Kafka finally refused so far.

        >>> KafkaSink(bootstrap_servers="127.0.0.1:9092", trades_topic="t", dlq_topic="d").failed
        0
        """
        return self._ledger.failed

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the producer and fetch both topics' partitions; fails loudly.

        :raises SinkSetupError: naming the brokers or the topic that could not be reached.
        """
        try:
            self._producer = self._factory(**self._producer_config)
        except (KafkaError, ValueError, AssertionError) as exc:
            raise SinkSetupError(
                f"Kafka producer for {self.bootstrap_servers} could not start: {exc}"
            ) from exc
        for topic in (self.trades_topic, self.dlq_topic):
            try:
                partitions = self._producer.partitions_for(topic)
            except KafkaError as exc:
                self._producer.close(timeout=1)
                raise SinkSetupError(
                    f"Kafka topic {topic!r} on {self.bootstrap_servers} is not reachable: {exc}"
                ) from exc
            if not partitions:
                self._producer.close(timeout=1)
                raise SinkSetupError(f"Kafka topic {topic!r} has no partitions")
            if topic == self.trades_topic:
                self._partitions = len(partitions)
        logger.info(
            "kafka sink ready: %s (%d partitions), dlq %s, brokers %s",
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
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise DeliveryError(
                f"kafka flush: records still unacknowledged after {timeout_s:g} s ({exc})"
            ) from exc
        self.raise_if_failed()

    def close(self, timeout_s: float) -> None:
        """Flush, then close the producer (also when the flush raises)."""
        if self._producer is None:
            return
        try:
            self.flush(timeout_s)
        finally:
            producer, self._producer = self._producer, None
            producer.close(timeout=min(timeout_s, 5.0))

    def raise_if_failed(self) -> None:
        """:raises DeliveryError: when any record was refused by Kafka so far."""
        self._ledger.raise_if_failed()

    def poll(self) -> None:
        """Nothing to do: kafka-python's sender thread runs the callbacks."""

    # -- sending -------------------------------------------------------------------------------
    def _key(self, symbol: str) -> tuple[bytes, int]:
        cached = self._keys.get(symbol)
        if cached is None:
            key = symbol.encode("utf-8")
            cached = self._keys[symbol] = (key, partition_for(key, self._partitions))
        return cached

    def _on_error(self, topic: str, settle: Callable[[], None], exc: BaseException) -> None:
        settle()
        self._ledger.record_failure(topic, exc)

    def send_trades(
        self,
        trades: Sequence[Trade],
        values: Sequence[bytes],
        pending: PendingFrame | None = None,
    ) -> None:
        """Hand one frame's trades (and their encoded values) to the producer, key = symbol.

        :param pending: the frame's place in :attr:`backlog` (from ``backlog.admit``); each
            record settles it when Kafka answers. None: the trades are tracked on their own.
        :raises DeliveryError: the producer refused a record.
        """
        if self._producer is None:
            raise DeliveryError("kafka sink is not set up (call setup() first)")
        if pending is None:
            pending = self.backlog.track(
                len(values), sum(map(len, values)), received_ms=time.time_ns() // 1_000_000
            )
        send = self._producer.send
        topic = self.trades_topic
        key_of = self._key
        on_error = self._on_error
        settle = pending.done
        future: Any = None
        try:
            for trade, value in zip(trades, values, strict=True):
                key, partition = key_of(trade.symbol)
                future = send(topic, value=value, key=key, partition=partition)
                future.add_callback(settle)
                future.add_errback(on_error, topic, settle)
        except KafkaError as exc:
            raise DeliveryError(f"kafka {topic}: send failed: {exc}") from exc
        self.sent += len(values)
        if future is not None:
            started = time.perf_counter()
            future.add_callback(
                lambda _meta: self.metrics.produce_latency.observe(time.perf_counter() - started)
            )

    def send_dead_letters(
        self, letters: Sequence[DeadLetter], pending: PendingFrame | None = None
    ) -> None:
        """Produce dead letters as JSON to the DLQ topic, key = symbol when known.

        :param pending: as for :meth:`send_trades`.
        """
        if self._producer is None:
            raise DeliveryError("kafka sink is not set up (call setup() first)")
        if pending is None:
            pending = self.backlog.track(
                len(letters), estimated_size(letters), received_ms=time.time_ns() // 1_000_000
            )
        topic = self.dlq_topic
        try:
            for letter in letters:
                key = letter.symbol.encode("utf-8") if letter.symbol else None
                future = self._producer.send(topic, value=letter.to_json(), key=key)
                future.add_callback(pending.done)
                future.add_errback(self._on_error, topic, pending.done)
        except KafkaError as exc:
            raise DeliveryError(f"kafka {topic}: send failed: {exc}") from exc
        self.dead_letters_sent += len(letters)
