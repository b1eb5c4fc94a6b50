"""ConfluentKafkaSink: the same contract as KafkaSink, on confluent-kafka (librdkafka)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from collector.delivery import partition_for
from collector.encoding import TradeEncoder
from collector.exceptions import DeliveryError, SinkSetupError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, Trade
from collector.producer import KafkaSink
from collector.producer_confluent import ConfluentKafkaSink
from schemas import avro_codec
from tests.collector.conftest import create_topic, read_topic
from tests.conftest import Stack

TRADE = Trade("id1", "AAPL", 1.5, 2.0, 1000, ("1",), "feed", 1001)


class FakeMessage:
    def __init__(self, topic: str, latency: float | None) -> None:
        self._topic = topic
        self._latency = latency

    def topic(self) -> str:
        return self._topic

    def latency(self) -> float | None:
        return self._latency


class FakeProducer:
    """A confluent-kafka Producer whose delivery reports the test triggers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes | None, Callable[..., None]]] = []
        self.full_for = 0  # the next this many produce() calls raise BufferError
        self.undelivered_after_flush = 0
        self.polls: list[float] = []
        self.purged = self.closed = False
        self.flush_timeouts: list[float] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        assert topic is not None
        partitions = {0: object(), 1: object()}
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=partitions)})

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        on_delivery: Callable[..., None] | None = None,
    ) -> None:
        if self.full_for:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        assert on_delivery is not None
        self.sent.append((topic, value, key, on_delivery))

    def poll(self, timeout: float = -1) -> int:
        self.polls.append(timeout)
        return 0

    def deliver(self, index: int, error: KafkaError | None = None, latency: float = 0.004) -> None:
        topic, _, _, callback = self.sent[index]
        callback(error, FakeMessage(topic, None if error else latency))

    def flush(self, timeout: float = -1) -> int:
        self.flush_timeouts.append(timeout)
        return self.undelivered_after_flush

    def purge(self) -> None:
        self.purged = True

    def close(self) -> bool:
        self.closed = True
        return True

    def __len__(self) -> int:
        return self.undelivered_after_flush


def sink(
    factory: Callable[..., Any] = FakeProducer, metrics: CollectorMetrics | None = None, **kw: Any
) -> ConfluentKafkaSink:
    s = ConfluentKafkaSink(
        bootstrap_servers="h:1",
        trades_topic="t",
        dlq_topic="t.dlq",
        producer_factory=factory,
        metrics=metrics,
        **kw,
    )
    s.setup()
    return s


def test_the_producer_is_configured_for_no_loss_and_java_partitions() -> None:
    config = sink(linger_ms=7, batch_bytes=65_536, delivery_timeout_s=60)._producer.config
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert config["max.in.flight.requests.per.connection"] <= 5
    assert config["partitioner"] == "murmur2_random"
    assert (config["linger.ms"], config["batch.size"], config["compression.type"]) == (
        7,
        65_536,
        "gzip",
    )
    assert config["delivery.timeout.ms"] == 60_000 and config["bootstrap.servers"] == "h:1"


def test_trades_are_keyed_by_symbol_and_polled_after_each_frame() -> None:
    s = sink()
    values = TradeEncoder().encode_many([TRADE, TRADE._replace(symbol="MSFT")])
    s.send_trades([TRADE, TRADE._replace(symbol="MSFT")], values)
    assert [(t, v, k) for t, v, k, _ in s._producer.sent] == [
        ("t", values[0], b"AAPL"),
        ("t", values[1], b"MSFT"),
    ]
    assert s._producer.polls == [0] and s.sent == 2


def test_a_refused_record_is_counted_and_raised_and_latency_is_the_frames_last() -> None:
    metrics = CollectorMetrics()
    s = sink(metrics=metrics)
    s.send_trades([TRADE, TRADE], [b"a", b"b"])
    s.raise_if_failed()  # nothing failed yet
    s._producer.deliver(0, KafkaError(KafkaError._MSG_TIMED_OUT))
    s._producer.deliver(1, latency=0.004)
    with pytest.raises(DeliveryError, match=r"1 record\(s\).*first error: t: _MSG_TIMED_OUT"):
        s.raise_if_failed()
    with pytest.raises(DeliveryError):
        s.flush(1)
    assert metrics.value("collector_delivery_failures_total") == 1
    assert s.failed == 1
    assert metrics.value("collector_produce_latency_seconds_count") == 1
    assert metrics.value("collector_produce_latency_seconds_sum") == pytest.approx(0.004)


def test_a_full_queue_is_waited_out_by_polling_and_nothing_is_dropped() -> None:
    s = sink()
    s._producer.full_for = 3
    trades = [TRADE._replace(trade_id=f"id{i}") for i in range(5)]
    s.send_trades(trades, [f"v{i}".encode() for i in range(5)])
    assert [v for _, v, _, _ in s._producer.sent] == [f"v{i}".encode() for i in range(5)]
    assert s._producer.polls.count(0.05) == 3  # one poll per refused attempt
    assert s.sent == 5


def test_a_queue_that_stays_full_raises_instead_of_dropping_silently() -> None:
    s = sink(setup_timeout_s=0.1)
    s._producer.full_for = 10**9
    with pytest.raises(DeliveryError, match="t: producer queue stayed full for 0.1 s"):
        s.send_trades([TRADE], [b"x"])
    assert s.sent == 0


def test_flush_raises_when_records_remain_and_close_purges_them() -> None:
    s = sink()
    s.send_trades([TRADE], [b"x"])
    producer = s._producer
    producer.undelivered_after_flush = 1
    with pytest.raises(DeliveryError, match=r"1 record\(s\) still unacknowledged after 2 s"):
        s.flush(2)
    with pytest.raises(DeliveryError):
        s.close(2)
    assert producer.purged and producer.closed and producer.flush_timeouts[:2] == [2, 2]
    with pytest.raises(DeliveryError, match="not set up"):
        s.send_trades([TRADE], [b"x"])


def test_close_flushes_then_closes() -> None:
    s = sink()
    producer = s._producer
    s.close(3)
    assert producer.flush_timeouts == [3] and producer.closed and not producer.purged
    s.close(3)  # a second close is harmless


def test_dead_letters_go_to_the_dlq_as_json() -> None:
    s = sink()
    letter = DeadLetter(
        reason="invalid_price",
        detail="p: -1",
        raw=b"{}",
        source="feed",
        received_ts_ms=0,
        symbol="AAPL",
    )
    anonymous = dataclasses.replace(letter, symbol=None)
    s.send_dead_letters([letter, anonymous])
    assert [(t, k, v) for t, v, k, _ in s._producer.sent] == [
        ("t.dlq", b"AAPL", letter.to_json()),
        ("t.dlq", None, anonymous.to_json()),
    ]
    assert s.dead_letters_sent == 2


def _unreachable(config: dict[str, Any]) -> FakeProducer:
    class Unreachable(FakeProducer):
        def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))

    return Unreachable(config)


def _forbidden(config: dict[str, Any]) -> FakeProducer:
    class Forbidden(FakeProducer):
        def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
            error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
            return SimpleNamespace(topics={topic: SimpleNamespace(error=error, partitions={})})

    return Forbidden(config)


def _bad_config(config: dict[str, Any]) -> FakeProducer:
    raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "No such configuration property"))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (_unreachable, "topic 't' on h:1 is not reachable within 0.2 s: _TRANSPORT"),
        (_forbidden, "topic 't' on h:1 is not reachable: TOPIC_AUTHORIZATION_FAILED"),
        (_bad_config, "producer for h:1 could not start"),
    ],
)
def test_setup_failures_are_loud(factory: Callable[..., Any], message: str) -> None:
    with pytest.raises(SinkSetupError, match=message):
        sink(factory, setup_timeout_s=0.2)


def test_setup_against_an_unreachable_broker_fails_within_the_timeout() -> None:
    s = ConfluentKafkaSink(
        bootstrap_servers="127.0.0.1:1", trades_topic="t", dlq_topic="t.dlq", setup_timeout_s=1
    )
    with pytest.raises(SinkSetupError, match="topic 't' on 127.0.0.1:1 is not reachable"):
        s.setup()


# -- against the real Kafka ----------------------------------------------------------------------
SYMBOLS = tuple(f"SYM{i}" for i in range(60)) + ("AAPL", "BINANCE:BTCUSDT", "OANDA:EUR_USD")


def _trades(n: int) -> list[Trade]:
    return [
        TRADE._replace(trade_id=f"id{i}", symbol=SYMBOLS[i % len(SYMBOLS)], price=1.0 + i)
        for i in range(n)
    ]


@pytest.mark.integration
def test_n_trades_in_exactly_n_records_out_on_the_partitions_kafka_python_picks(
    stack: Stack, unique_topic: Callable[[str], str]
) -> None:
    n, partitions = 20_000, 7
    trades = _trades(n)
    values = TradeEncoder().encode_many(trades)
    topics = {}
    for name, sink_class in (("confluent", ConfluentKafkaSink), ("kafka-python", KafkaSink)):
        topic = topics[name] = unique_topic(f"coll-{name}")
        create_topic(stack, topic, partitions)
        s = sink_class(
            bootstrap_servers=stack.kafka.bootstrap_servers,
            trades_topic=topic,
            dlq_topic=f"{topic}.dlq",
            linger_ms=50,
        )
        s.setup()
        for start in range(0, n, 500):  # frames of 500 trades, as the pipeline hands them over
            s.send_trades(trades[start : start + 500], values[start : start + 500])
        s.close(60)
        assert (s.sent, s.failed) == (n, 0)

    records = read_topic(stack, topics["confluent"], timeout_s=60)
    assert len(records) == n
    decoded = [avro_codec.decode(r.value) for r in records]
    by_id = {t.trade_id: t for t in trades}
    assert sorted(d["trade_id"] for d in decoded) == sorted(by_id)
    for record, d in zip(records, decoded, strict=True):
        trade = by_id[d["trade_id"]]
        assert (d["symbol"], d["price"], d["volume"]) == (trade.symbol, trade.price, trade.volume)
        assert record.key == trade.symbol.encode()
        assert record.partition == partition_for(record.key, partitions)
    # the same symbol -> partition map as kafka-python's, and every partition is used
    confluent_map = {r.key: r.partition for r in records}
    python_map = {r.key: r.partition for r in read_topic(stack, topics["kafka-python"])}
    assert confluent_map == python_map and len(confluent_map) == len(SYMBOLS)
    assert set(confluent_map.values()) == set(range(partitions))
    # per-symbol order is kept
    for symbol in SYMBOLS[:5]:
        in_kafka = sorted(
            (r.offset, d["trade_id"])
            for r, d in zip(records, decoded, strict=True)
            if d["symbol"] == symbol
        )
        assert [i for _, i in in_kafka] == [t.trade_id for t in trades if t.symbol == symbol]


@pytest.mark.integration
def test_close_delivers_everything_and_dead_letters_reach_the_dlq(
    stack: Stack, unique_topic: Callable[[str], str]
) -> None:
    topic = unique_topic("coll-conf-close")
    metrics = CollectorMetrics()
    s = ConfluentKafkaSink(
        bootstrap_servers=stack.kafka.bootstrap_servers,
        trades_topic=topic,
        dlq_topic=f"{topic}.dlq",
        linger_ms=1000,  # nothing leaves before close() unless close flushes
        metrics=metrics,
    )
    s.setup()  # auto-creates both topics
    trades = _trades(3000)
    s.send_trades(trades, TradeEncoder().encode_many(trades))
    letter = DeadLetter(
        reason="invalid_price", detail="p: -1", raw=b"{}", source="feed", received_ts_ms=0
    )
    s.send_dead_letters([letter, dataclasses.replace(letter, symbol="AAPL")])
    s.close(30)
    assert Counter(avro_codec.decode(r.value)["trade_id"] for r in read_topic(stack, topic)) == (
        Counter(t.trade_id for t in trades)
    )
    letters = read_topic(stack, f"{topic}.dlq")
    assert Counter((r.key, json.loads(r.value)["reason"]) for r in letters) == Counter(
        [(None, "invalid_price"), (b"AAPL", "invalid_price")]
    )
    assert (s.sent, s.dead_letters_sent) == (3000, 2)
    assert metrics.value("collector_produce_latency_seconds_count") == 1
    assert metrics.value("collector_delivery_failures_total") == 0
