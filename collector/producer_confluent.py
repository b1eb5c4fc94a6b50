"""The Kafka sink on confluent-kafka (librdkafka): same interface and guarantees as
:class:`collector.producer.KafkaSink`, at about 2.5x less CPU per trade (docs/benchmarks.md).

Chosen with ``COLLECTOR_KAFKA_CLIENT=confluent``. Delivery guarantees: ``acks=all`` and the
idempotent producer, retries until Kafka acknowledges (no delivery deadline by default; the
memory of an outage is bounded by the shared :class:`~collector.delivery.DeliveryBacklog`).
Keys go through librdkafka's ``murmur2_random`` partitioner, which picks the same partition
as Java's and kafka-python's (:func:`collector.delivery.partition_for`), so switching clients
keeps every symbol on its partition. Every record carries a delivery callback: a record Kafka
refuses is counted, logged and turned into :class:`DeliveryError` at the next
:meth:`~ConfluentKafkaSink.flush` or :meth:`~ConfluentKafkaSink.raise_if_failed`. librdkafka
runs those callbacks only inside ``poll()``/``flush()``, so the sink polls after every frame it
hands over. A full producer queue is waited out (polling), never dropped; the queue is sized
above the backlog's bound, so it fills only if the bound is exceeded.
The lifecycle is :class:`collector.sink.KafkaSinkBase`'s; this module holds only the
librdkafka calls.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from collector.delivery import RECONNECT_BACKOFF_MAX_MS, PendingFrame
from collector.exceptions import DeliveryError, SinkSetupError
from collector.models import Trade
from collector.sink import KafkaSinkBase, ProducerOptions

__all__ = ["ConfluentKafkaSink"]

logger = logging.getLogger(__name__)

# While the queue is full, poll this long per attempt: serving delivery reports is what frees room.
_QUEUE_FULL_POLL_S = 0.05
# A topic being auto-created answers "unknown" for a moment; these are waited out in setup().
_TOPIC_ERRORS_TO_WAIT_OUT = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.LEADER_NOT_AVAILABLE}
)
# A broker that stays down reports the same error on every reconnect: log each kind this rarely.
_CLIENT_ERROR_LOG_INTERVAL_S = 30.0


def _describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"


class ConfluentKafkaSink(KafkaSinkBase):
    """The sink on librdkafka; parameters as for :class:`~collector.sink.KafkaSinkBase`.

    ``setup_timeout_s`` also bounds how long a send waits for room in a full producer queue
    before raising :class:`DeliveryError`; ``compression`` is ``gzip`` (default), ``none``,
    ``snappy``, ``lz4`` or ``zstd``. Asking for a topic's metadata in :meth:`setup` creates it
    when the broker auto-creates topics, as kafka-python does; a topic just created may briefly
    have no leader, so setup retries until ``setup_timeout_s``.

    >>> sink = ConfluentKafkaSink(bootstrap_servers="127.0.0.1:9092", trades_topic="trades",
    ...                           dlq_topic="trades.dlq", compression="lz4")
    >>> (sink.trades_topic, sink.failed, sink.sent)
    ('trades', 0, 0)
    """

    _producer_class = Producer
    _label = "kafka sink (confluent-kafka)"
    _log = logger
    _setup_errors = (KafkaException, ValueError, TypeError)
    _send_errors = (KafkaException,)

    def _client_config(self, options: ProducerOptions) -> dict[str, Any]:
        # librdkafka: 0 = no deadline
        delivery_timeout_ms = (
            0 if options.delivery_timeout_s is None else int(options.delivery_timeout_s * 1000)
        )
        self._keys: dict[str, bytes] = {}
        self._queue_full_waits = 0
        self._client_errors_logged: dict[int, float] = {}
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": "collector",
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": options.linger_ms,
            "batch.size": options.batch_bytes,
            "compression.type": options.compression,
            "delivery.timeout.ms": delivery_timeout_ms,
            "request.timeout.ms": min(30_000, delivery_timeout_ms or 30_000),
            # Room for the backlog's bound twice over (it may overshoot by one frame), so the
            # backlog, not a full queue, decides what happens during an outage.
            "queue.buffering.max.messages": min(2**31 - 1, 2 * options.buffer_records + 100_000),
            "queue.buffering.max.kbytes": min(2**31 - 1, 2 * options.buffer_bytes // 1024 + 65_536),
            # librdkafka's default (consistent_random, CRC32) would move symbols to other
            # partitions than kafka-python and Java put them on.
            "partitioner": "murmur2_random",
            # Default 10 s: after an outage the buffer would fill that long after Kafka is back.
            "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            "allow.auto.create.topics": True,
            "error_cb": self._on_client_error,
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
        }

    # -- lifecycle -----------------------------------------------------------------------------
    def _new_producer(self) -> Any:
        return self._factory(self._producer_config)

    def _partitions_of(self, producer: Any, topic: str, deadline: float) -> int:
        problem = "no metadata"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SinkSetupError(
                    f"Kafka topic {topic!r} on {self.bootstrap_servers} is not reachable "
                    f"within {self._options.setup_timeout_s:g} s: {problem}"
                )
            try:
                metadata = producer.list_topics(topic, timeout=remaining)
            except KafkaException as exc:
                cause = exc.args[0] if exc.args else None
                problem = _describe(cause) if isinstance(cause, KafkaError) else str(exc)
                metadata = None
            found = None if metadata is None else metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return len(found.partitions)
            if metadata is None:
                pass  # the brokers did not answer: retry until the deadline
            elif found is not None and found.error is not None:
                problem = _describe(found.error)
                code = found.error.code()
                if code not in _TOPIC_ERRORS_TO_WAIT_OUT and not found.error.retriable():
                    raise SinkSetupError(
                        f"Kafka topic {topic!r} on {self.bootstrap_servers} is not reachable: "
                        f"{problem}"
                    )
            else:
                problem = "topic has no partitions"
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _abandon(self, producer: Any) -> None:
        producer.purge()
        producer.flush(0)
        producer.close()

    def _flush_producer(self, producer: Any, timeout_s: float) -> None:
        remaining = producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(
                f"kafka flush: {remaining} record(s) still unacknowledged after {timeout_s:g} s"
            )

    def _close_producer(self, producer: Any, timeout_s: float) -> None:
        # Records still queued after a failed flush are purged (and counted as failed), so
        # closing never hangs on an unreachable broker.
        if len(producer):
            producer.purge()
            producer.flush(0)
        producer.close()

    def poll(self) -> None:
        """Serve delivery reports now (librdkafka runs callbacks only in ``poll``/``flush``): while
        no frame comes, the backlog still learns what Kafka acknowledged."""
        if self._producer is not None:
            self._producer.poll(0)

    # -- callbacks (run inside poll()/flush(), on the calling thread) ---------------------------
    def _on_delivery(
        self, settle: Callable[[], None], error: KafkaError | None, message: Message
    ) -> None:
        settle()
        if error is not None:
            self._ledger.record_failure(message.topic() or "?", _describe(error))

    def _on_delivery_timed(
        self, settle: Callable[[], None], error: KafkaError | None, message: Message
    ) -> None:
        settle()
        if error is not None:
            self._ledger.record_failure(message.topic() or "?", _describe(error))
            return
        latency = message.latency()
        if latency is not None:
            self.metrics.produce_latency.observe(latency)

    def _on_client_error(self, error: KafkaError) -> None:
        # Client-wide trouble (e.g. all brokers down): librdkafka keeps retrying, and records
        # that finally fail arrive in the delivery callbacks; only a fatal error is final.
        if error.fatal():
            logger.error("kafka client (%s): fatal: %s", self.bootstrap_servers, _describe(error))
            return
        now = time.monotonic()
        last = self._client_errors_logged.get(error.code())
        if last is None or now - last >= _CLIENT_ERROR_LOG_INTERVAL_S:
            self._client_errors_logged[error.code()] = now
            logger.warning(
                "kafka client (%s): %s (retrying; repeats of this error are logged at most "
                "every %g s)",
                self.bootstrap_servers,
                _describe(error),
                _CLIENT_ERROR_LOG_INTERVAL_S,
            )

    # -- sending -------------------------------------------------------------------------------
    def _key(self, symbol: str) -> bytes:
        key = self._keys[symbol] = symbol.encode("utf-8")
        return key

    def _produce_when_room(
        self, topic: str, value: bytes, key: bytes | None, callback: Callable[..., None]
    ) -> None:
        """Retry one record the full queue refused, serving delivery reports until it fits."""
        producer = self._producer
        self._queue_full_waits += 1
        if self._queue_full_waits == 1 or self._queue_full_waits % 1000 == 0:
            logger.warning(
                "kafka %s: producer queue full (%d records waiting), waiting for acks "
                "(%d waits so far)",
                topic,
                len(producer),
                self._queue_full_waits,
            )
        timeout_s = self._options.setup_timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            producer.poll(_QUEUE_FULL_POLL_S)
            try:
                producer.produce(topic, value, key, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise DeliveryError(
                        f"kafka {topic}: producer queue stayed full for "
                        f"{timeout_s:g} s ({len(producer)} records waiting)"
                    ) from None

    def _produce_trades(
        self, producer: Any, trades: Sequence[Trade], values: Sequence[bytes], pending: PendingFrame
    ) -> None:
        # The hot path: names bound locally; the last record's callback feeds
        # collector_produce_latency_seconds with librdkafka's own latency.
        produce = producer.produce
        topic = self.trades_topic
        keys = self._keys
        on_delivery = functools.partial(self._on_delivery, pending.done)
        last = len(values) - 1
        for i, (trade, value) in enumerate(zip(trades, values, strict=True)):
            key = keys.get(trade.symbol) or self._key(trade.symbol)
            callback = (
                on_delivery
                if i != last
                else functools.partial(self._on_delivery_timed, pending.done)
            )
            try:
                produce(topic, value, key, on_delivery=callback)
            except BufferError:
                self._produce_when_room(topic, value, key, callback)

    def _produce_letters(
        self, producer: Any, records: Sequence[tuple[bytes | None, bytes]], pending: PendingFrame
    ) -> None:
        topic = self.dlq_topic
        on_delivery = functools.partial(self._on_delivery, pending.done)
        for key, value in records:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
            except BufferError:
                self._produce_when_room(topic, value, key, on_delivery)
