"""The Kafka sink on confluent-kafka (librdkafka): same interface and guarantees as
:class:`collector.producer.KafkaSink`, at roughly twice its throughput per core.

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
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from collector.delivery import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_RECORDS,
    RECONNECT_BACKOFF_MAX_MS,
    DeliveryBacklog,
    DeliveryLedger,
    PendingFrame,
    estimated_size,
)
from collector.exceptions import DeliveryError, SinkSetupError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, Trade

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


class ConfluentKafkaSink:
    """Produces trades and dead letters with librdkafka; :meth:`setup` first, :meth:`close` always.

    :param bootstrap_servers: ``host:port[,host:port]``.
    :param trades_topic: topic of Avro trades; :param dlq_topic: topic of dead letters.
    :param linger_ms: how long the producer waits to fill a batch (default 20 ms).
    :param batch_bytes: maximum batch size per partition (default 256 KiB).
    :param compression: ``gzip`` (default), ``none``, ``snappy``, ``lz4`` or ``zstd``.
    :param delivery_timeout_s: how long a record may be retried before it counts as failed;
        None (default): until Kafka acknowledges it.
    :param setup_timeout_s: how long :meth:`setup` waits for metadata, and how long a send waits
        for room in a full producer queue before raising (default 15 s).
    :param buffer_records: bound on records Kafka has not acknowledged (default 100,000)...
    :param buffer_bytes: ...and on their bytes (default 64 MiB): see :attr:`backlog`.
    :param metrics: where delivery failures, produce latency and the backlog are recorded.
    :param producer_factory: builds the producer from a librdkafka config dict (tests pass fakes).
    :raises SinkSetupError: from :meth:`setup`, when brokers or topics cannot be reached.

    >>> sink = ConfluentKafkaSink(bootstrap_servers="127.0.0.1:9092", trades_topic="trades",
    ...                           dlq_topic="trades.dlq", compression="lz4")
    >>> (sink.trades_topic, sink.failed, sink.sent)
    ('trades', 0, 0)

    With a broker::

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
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.trades_topic = trades_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics or CollectorMetrics()
        self.backlog = DeliveryBacklog(
            max_records=buffer_records, max_bytes=buffer_bytes, metrics=self.metrics
        )
        self._setup_timeout_s = setup_timeout_s
        # librdkafka: 0 = no deadline
        delivery_timeout_ms = 0 if delivery_timeout_s is None else int(delivery_timeout_s * 1000)
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "collector",
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": linger_ms,
            "batch.size": batch_bytes,
            "compression.type": compression,
            "delivery.timeout.ms": delivery_timeout_ms,
            "request.timeout.ms": min(30_000, delivery_timeout_ms or 30_000),
            # Room for the backlog's bound twice over (it may overshoot by one frame), so the
            # backlog, not a full queue, decides what happens during an outage.
            "queue.buffering.max.messages": min(2**31 - 1, 2 * buffer_records + 100_000),
            "queue.buffering.max.kbytes": min(2**31 - 1, 2 * buffer_bytes // 1024 + 65_536),
            # librdkafka's default (consistent_random, CRC32) would move symbols to other
            # partitions than kafka-python and Java put them on.
            "partitioner": "murmur2_random",
            # Default 10 s: after an outage the buffer would fill that long after Kafka is back.
            "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            "allow.auto.create.topics": True,
            "error_cb": self._on_client_error,
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
        }
        self._factory = producer_factory
        self._producer: Any = None
        self._keys: dict[str, bytes] = {}
        self.sent = 0
        self.dead_letters_sent = 0
        self._queue_full_waits = 0
        self._client_errors_logged: dict[int, float] = {}
        self._ledger = DeliveryLedger(self.metrics, logger)

    @property
    def failed(self) -> int:
        """Records Kafka finally refused so far."""
        return self._ledger.failed

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the producer and fetch both topics' partitions; fails loudly.

        Asking for a topic's metadata creates it when the broker auto-creates topics, as
        kafka-python does; a topic just created may briefly have no leader, so this retries
        until ``setup_timeout_s``.

        :raises SinkSetupError: naming the brokers or the topic that could not be reached.
        """
        try:
            producer = self._factory(self._producer_config)
        except (KafkaException, ValueError, TypeError) as exc:
            raise SinkSetupError(
                f"Kafka producer for {self.bootstrap_servers} could not start: {exc}"
            ) from exc
        deadline = time.monotonic() + self._setup_timeout_s
        partitions: dict[str, int] = {}
        try:
            for topic in (self.trades_topic, self.dlq_topic):
                partitions[topic] = self._partitions_of(producer, topic, deadline)
        except SinkSetupError:
            self._discard(producer)
            producer.close()
            raise
        self._producer = producer
        logger.info(
            "kafka sink (confluent-kafka) ready: %s (%d partitions), dlq %s, brokers %s",
            self.trades_topic,
            partitions[self.trades_topic],
            self.dlq_topic,
            self.bootstrap_servers,
        )

    def _partitions_of(self, producer: Any, topic: str, deadline: float) -> int:
        problem = "no metadata"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SinkSetupError(
                    f"Kafka topic {topic!r} on {self.bootstrap_servers} is not reachable "
                    f"within {self._setup_timeout_s:g} s: {problem}"
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

    @staticmethod
    def _discard(producer: Any) -> None:
        producer.purge()
        producer.flush(0)

    def flush(self, timeout_s: float) -> None:
        """Wait until every record handed over so far is acknowledged or failed.

        :raises DeliveryError: something was not acknowledged within ``timeout_s`` or failed.
        """
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(
                f"kafka flush: {remaining} record(s) still unacknowledged after {timeout_s:g} s"
            )
        self.raise_if_failed()

    def close(self, timeout_s: float) -> None:
        """Flush, then close the producer (also when the flush raises).

        Records still queued after a failed flush are purged (and counted as failed), so closing
        never hangs on an unreachable broker.
        """
        if self._producer is None:
            return
        try:
            self.flush(timeout_s)
        finally:
            producer, self._producer = self._producer, None
            if len(producer):
                self._discard(producer)
            producer.close()

    def raise_if_failed(self) -> None:
        """:raises DeliveryError: when any record was refused by Kafka so far."""
        self._ledger.raise_if_failed()

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
        deadline = time.monotonic() + self._setup_timeout_s
        while True:
            producer.poll(_QUEUE_FULL_POLL_S)
            try:
                producer.produce(topic, value, key, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise DeliveryError(
                        f"kafka {topic}: producer queue stayed full for "
                        f"{self._setup_timeout_s:g} s ({len(producer)} records waiting)"
                    ) from None

    def send_trades(
        self,
        trades: Sequence[Trade],
        values: Sequence[bytes],
        pending: PendingFrame | None = None,
    ) -> None:
        """Hand one frame's trades (and their encoded values) to the producer, key = symbol.

        The last record of the frame feeds ``collector_produce_latency_seconds``.

        :param pending: the frame's place in :attr:`backlog` (from ``backlog.admit``); each
            record settles it when Kafka answers. None: the trades are tracked on their own.
        :raises DeliveryError: the producer refused a record (e.g. its queue stayed full for
            ``setup_timeout_s``).
        """
        producer = self._producer
        if producer is None:
            raise DeliveryError("kafka sink is not set up (call setup() first)")
        if len(trades) != len(values):
            raise ValueError(f"{len(trades)} trades but {len(values)} values")
        if not values:
            return
        if pending is None:
            pending = self.backlog.track(
                len(values), sum(map(len, values)), received_ms=time.time_ns() // 1_000_000
            )
        produce = producer.produce
        topic = self.trades_topic
        keys = self._keys
        on_delivery = functools.partial(self._on_delivery, pending.done)
        last = len(values) - 1
        try:
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
        except KafkaException as exc:
            raise DeliveryError(f"kafka {topic}: send failed: {exc}") from exc
        self.sent += len(values)
        producer.poll(0)

    def send_dead_letters(
        self, letters: Sequence[DeadLetter], pending: PendingFrame | None = None
    ) -> None:
        """Produce dead letters as JSON to the DLQ topic, key = symbol when known.

        :param pending: as for :meth:`send_trades`.
        """
        producer = self._producer
        if producer is None:
            raise DeliveryError("kafka sink is not set up (call setup() first)")
        if pending is None:
            pending = self.backlog.track(
                len(letters), estimated_size(letters), received_ms=time.time_ns() // 1_000_000
            )
        topic = self.dlq_topic
        on_delivery = functools.partial(self._on_delivery, pending.done)
        try:
            for letter in letters:
                key = letter.symbol.encode("utf-8") if letter.symbol else None
                value = letter.to_json()
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                except BufferError:
                    self._produce_when_room(topic, value, key, on_delivery)
        except KafkaException as exc:
            raise DeliveryError(f"kafka {topic}: send failed: {exc}") from exc
        self.dead_letters_sent += len(letters)
        producer.poll(0)
