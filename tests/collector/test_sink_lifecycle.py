"""The lifecycle both Kafka sinks share (collector.sink.KafkaSinkBase), on fake producers:
each test runs once per client library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka import KafkaException
from kafka.errors import KafkaTimeoutError

from collector.exceptions import DeliveryError, SinkSetupError
from collector.models import Trade
from collector.producer import KafkaSink
from collector.producer_confluent import ConfluentKafkaSink
from collector.sink import KafkaSinkBase
from tests.collector.test_producer_confluent import FakeProducer
from tests.collector.test_producer_metrics import RecordingProducer

TRADE = Trade("id1", "AAPL", 1.5, 2.0, 1000, ("1",), "feed", 1001)
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent"])


class ClosingRecorder(RecordingProducer):
    closed = False

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class NoTopicRecorder(ClosingRecorder):
    def partitions_for(self, topic: str) -> set[int]:
        raise KafkaTimeoutError("no metadata")


class NoTopicFake(FakeProducer):
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        error = ConfluentError(ConfluentError.TOPIC_AUTHORIZATION_FAILED)
        raise KafkaException(error)


def make_with_producers(
    client: str, *, broken: bool = False, **options: Any
) -> tuple[KafkaSinkBase, list[Any]]:
    """One of the two sinks on a fake producer, and the producers it made."""
    made: list[Any] = []

    def factory(producer_class: type) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            made.append(producer_class(*args, **kwargs))
            return made[-1]

        return build

    common: dict[str, Any] = {
        "bootstrap_servers": "h:1",
        "trades_topic": "t",
        "dlq_topic": "t.dlq",
        "setup_timeout_s": 0.2,
        **options,
    }
    if client == "kafka-python":
        recorder = NoTopicRecorder if broken else ClosingRecorder
        sink: KafkaSinkBase = KafkaSink(producer_factory=factory(recorder), **common)
    else:
        fake = NoTopicFake if broken else FakeProducer
        sink = ConfluentKafkaSink(producer_factory=factory(fake), **common)
    return sink, made


def make(client: str) -> KafkaSinkBase:
    return make_with_producers(client)[0]


def produced(sink: KafkaSinkBase) -> list[bytes]:
    return [sent[1] for sent in sink._producer.sent]


@CLIENTS
def test_sending_before_setup_says_so(client: str) -> None:
    sink = make(client)
    with pytest.raises(DeliveryError, match=r"not set up \(call setup\(\) first\)"):
        sink.send_trades([TRADE], [b"x"])
    with pytest.raises(DeliveryError, match="not set up"):
        sink.send_dead_letters([])
    sink.flush(1)  # nothing to flush, nothing raised
    sink.close(1)


@CLIENTS
def test_a_failed_setup_closes_its_producer_and_leaves_the_sink_unset(client: str) -> None:
    sink, made = make_with_producers(client, broken=True)
    with pytest.raises(SinkSetupError, match="topic 't' on h:1 is not reachable"):
        sink.setup()
    (producer,) = made
    assert producer.closed and sink._producer is None
    sink.close(1)  # nothing to flush or close
    with pytest.raises(DeliveryError, match="not set up"):
        sink.send_trades([TRADE], [b"x"])


@CLIENTS
def test_trades_and_values_of_different_lengths_send_nothing(client: str) -> None:
    sink = make(client)
    sink.setup()
    with pytest.raises(ValueError, match="2 trades but 1 values"):
        sink.send_trades([TRADE, TRADE], [b"x"])
    assert produced(sink) == [] and sink.sent == 0 and sink.backlog.records == 0


@CLIENTS
def test_an_empty_frame_is_not_tracked(client: str) -> None:
    sink = make(client)
    sink.setup()
    sink.send_trades([], [])
    assert produced(sink) == [] and sink.sent == 0 and sink.backlog.oldest_received_ms() is None


@CLIENTS
def test_close_closes_the_producer_once_even_when_the_flush_fails(client: str) -> None:
    sink = make(client)
    sink.setup()
    sink.send_trades([TRADE], [b"x"])
    producer = sink._producer
    sink._ledger.record_failure("t", "refused")  # as a delivery callback would
    with pytest.raises(DeliveryError, match="1 record"):
        sink.close(1)
    assert producer.closed and sink._producer is None
    sink.close(1)  # a second close does nothing
