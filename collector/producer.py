"""The Kafka sink: trades (Avro, key = symbol) and dead letters (JSON) with kafka-python.

Delivery guarantees: ``acks=all`` and the idempotent producer (no duplicates from retries, order
kept per partition), retries until Kafka acknowledges (no delivery deadline by default: an
outage is waited out, its memory bounded by the :class:`~collector.delivery.DeliveryBacklog`).
Every record carries an errback, so a record Kafka refuses is counted, logged and turned into
:class:`DeliveryError` at the next :meth:`KafkaSink.raise_if_failed` or :meth:`KafkaSink.flush`;
nothing fails silently. kafka-python runs the callbacks on its own sender thread.
The lifecycle is :class:`collector.sink.KafkaSinkBase`'s; this module holds only the
kafka-python calls. ``collector.producer_confluent.ConfluentKafkaSink`` is the same sink on
librdkafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from collector.delivery import (
    NO_DELIVERY_DEADLINE_MS,
    RECONNECT_BACKOFF_MAX_MS,
    PendingFrame,
    partition_for,
)
from collector.exceptions import DeliveryError, SinkSetupError
from collector.models import Trade
from collector.sink import KafkaSinkBase, ProducerOptions

__all__ = ["KafkaSink", "partition_for"]

logger = logging.getLogger(__name__)


class KafkaSink(KafkaSinkBase):
    """The sink on kafka-python; parameters as for :class:`~collector.sink.KafkaSinkBase`.

    >>> KafkaSink(bootstrap_servers="127.0.0.1:9092", trades_topic="t", dlq_topic="d").failed
    0
    """

    _producer_class = KafkaProducer
    _label = "kafka sink"
    _log = logger
    _setup_errors = (KafkaError, ValueError, AssertionError)
    _send_errors = (KafkaError,)

    def _client_config(self, options: ProducerOptions) -> dict[str, Any]:
        delivery_timeout_ms = (
            NO_DELIVERY_DEADLINE_MS
            if options.delivery_timeout_s is None
            else int(options.delivery_timeout_s * 1000)
        )
        self._keys: dict[str, tuple[bytes, int]] = {}  # symbol -> (key, partition)
        return {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": "collector",
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,
            "linger_ms": options.linger_ms,
            "batch_size": options.batch_bytes,
            "compression_type": None if options.compression == "none" else options.compression,
            "delivery_timeout_ms": delivery_timeout_ms,
            "request_timeout_ms": min(30_000, delivery_timeout_ms),
            "max_block_ms": int(options.setup_timeout_s * 1000),
            # Default 30 s: after an outage the buffer would fill that long after Kafka is back.
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            "allow_auto_create_topics": True,
        }

    # -- lifecycle -----------------------------------------------------------------------------
    def _new_producer(self) -> Any:
        return self._factory(**self._producer_config)

    def _partitions_of(self, producer: Any, topic: str, deadline: float) -> int:
        # partitions_for blocks up to max_block_ms (the setup timeout) on its own.
        try:
            partitions = producer.partitions_for(topic)
        except KafkaError as exc:
            raise SinkSetupError(
                f"Kafka topic {topic!r} on {self.bootstrap_servers} is not reachable: {exc}"
            ) from exc
        if not partitions:
            raise SinkSetupError(f"Kafka topic {topic!r} has no partitions")
        return len(partitions)

    def _abandon(self, producer: Any) -> None:
        producer.close(timeout=1)

    def _flush_producer(self, producer: Any, timeout_s: float) -> None:
        try:
            producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise DeliveryError(
                f"kafka flush: records still unacknowledged after {timeout_s:g} s ({exc})"
            ) from exc

    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        producer.close(timeout=min(timeout_s, 5.0))

    def poll(self) -> None:
        """Nothing to do: kafka-python's sender thread runs the callbacks."""

    # -- sending (callbacks run on kafka-python's sender thread) -------------------------------
    def _key(self, symbol: str) -> tuple[bytes, int]:
        cached = self._keys.get(symbol)
        if cached is None:
            key = symbol.encode("utf-8")
            cached = self._keys[symbol] = (key, partition_for(key, self._partitions))
        return cached

    def _on_error(self, topic: str, settle: Callable[[], None], exc: BaseException) -> None:
        settle()
        self._ledger.record_failure(topic, exc)

    def _produce_trades(
        self, producer: Any, trades: Sequence[Trade], values: Sequence[bytes], pending: PendingFrame
    ) -> None:
        # The hot path: names bound locally, the partition computed here (cached per symbol).
        send = producer.send
        topic = self.trades_topic
        key_of = self._key
        on_error = self._on_error
        settle = pending.done
        future: Any = None
        for trade, value in zip(trades, values, strict=True):
            key, partition = key_of(trade.symbol)
            future = send(topic, value=value, key=key, partition=partition)
            future.add_callback(settle)
            future.add_errback(on_error, topic, settle)
        # The frame's last record stands for its latency (one observation per frame).
        started = time.perf_counter()
        future.add_callback(
            lambda _meta: self.metrics.produce_latency.observe(time.perf_counter() - started)
        )

    def _produce_letters(
        self, producer: Any, records: Sequence[tuple[bytes | None, bytes]], pending: PendingFrame
    ) -> None:
        topic = self.dlq_topic
        for key, value in records:
            future = producer.send(topic, value=value, key=key)
            future.add_callback(pending.done)
            future.add_errback(self._on_error, topic, pending.done)
