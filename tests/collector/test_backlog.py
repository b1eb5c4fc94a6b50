"""Kafka gone mid-run (issue 12 item 5), with fake producers: the records Kafka has not
acknowledged are bounded, frames read past the bound become one exact gap row, and what was
admitted is delivered when Kafka answers again; both sinks behave the same.
The same against a real broker that goes away: tests/collector/test_outages.py."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collector.config import CollectorConfig
from collector.delivery import NO_DELIVERY_DEADLINE_MS, DeliveryBacklog
from collector.encoding import TradeEncoder
from collector.exceptions import ConfigError
from collector.finnhub import FrameParser
from collector.heartbeat import Heartbeat
from collector.metrics import CollectorMetrics
from collector.models import Gap
from collector.pipeline import FrameHandler
from collector.producer import KafkaSink
from collector.producer_confluent import ConfluentKafkaSink
from tests.collector.test_producer_confluent import FakeProducer
from tests.collector.test_producer_metrics import RecordingProducer

SYMBOLS = ("AAPL", "MSFT")


class Kafka:
    """One of the two sinks on a fake producer that acknowledges only when the test says so."""

    def __init__(self, client: str, metrics: CollectorMetrics, **options: Any) -> None:
        self.client = client
        common: dict[str, Any] = {
            "bootstrap_servers": "h:1",
            "trades_topic": "t",
            "dlq_topic": "t.dlq",
            "metrics": metrics,
            **options,
        }
        if client == "kafka-python":
            self.sink: Any = KafkaSink(producer_factory=RecordingProducer, **common)
        else:
            self.sink = ConfluentKafkaSink(producer_factory=FakeProducer, **common)
        self.sink.setup()
        self.acked = 0

    @property
    def values(self) -> list[bytes]:
        return [sent[1] for sent in self.sink._producer.sent]

    def ack(self, n: int) -> None:
        """Kafka acknowledges the next ``n`` records, in the order they were produced."""
        producer = self.sink._producer
        for i in range(self.acked, self.acked + n):
            if self.client == "kafka-python":
                producer.sent[i][4].success(None)
            else:
                producer.deliver(i)
        self.acked += n


class RecordingGaps:
    def __init__(self) -> None:
        self.gaps: list[Gap] = []

    def record(self, gap: Gap) -> None:
        self.gaps.append(gap)

    def close(self) -> None:
        return None


def frame(symbol: str, n: int, received_ms: int) -> bytes:
    data = [{"s": symbol, "p": 10.0 + i, "v": 1, "t": received_ms - 5, "c": None} for i in range(n)]
    return json.dumps({"type": "trade", "data": data}).encode()


def handler_for(kafka: Kafka, metrics: CollectorMetrics, **options: Any) -> FrameHandler:
    parser = FrameParser(SYMBOLS, source="feed", max_future_skew_ms=10**9, max_past_skew_ms=10**9)
    return FrameHandler(parser, kafka.sink, metrics, progress_interval_s=0, **options)


def encoded(raw: bytes, received_ms: int) -> list[bytes]:
    parser = FrameParser(SYMBOLS, source="feed", max_future_skew_ms=10**9, max_past_skew_ms=10**9)
    return TradeEncoder().encode_many(parser.parse(raw, received_ms=received_ms).trades)


CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent"])


@CLIENTS
def test_neither_sink_gives_records_up_while_kafka_is_away(client: str) -> None:
    config = Kafka(client, CollectorMetrics()).sink._producer.config
    if client == "kafka-python":
        assert config["delivery_timeout_ms"] == NO_DELIVERY_DEADLINE_MS
    else:
        assert config["delivery.timeout.ms"] == 0  # librdkafka: no deadline
        # the queue never fills before the backlog's bound
        assert config["queue.buffering.max.messages"] > 2 * 100_000


@CLIENTS
def test_an_outage_buffers_up_to_the_bound_then_records_the_frames_read_as_one_exact_gap(
    client: str,
) -> None:
    metrics = CollectorMetrics()
    kafka = Kafka(client, metrics, buffer_records=10)
    gaps = RecordingGaps()
    handler = handler_for(kafka, metrics, gaps=gaps, collector_id="host:1")
    now = int(time.time() * 1000)
    frames = [
        (frame("AAPL", 4, now), now),  # admitted: 4 waiting
        (frame("MSFT", 4, now + 10), now + 10),  # admitted: 8 waiting
        (frame("AAPL", 4, now + 20), now + 20),  # 12 > 10: not captured
        (frame("MSFT", 3, now + 30), now + 30),  # still full: not captured
    ]
    for raw, received in frames:
        handler(raw, received)
    assert kafka.values == encoded(*frames[0]) + encoded(*frames[1])
    assert metrics.value("collector_kafka_buffered_records") == 8
    assert metrics.value("collector_kafka_dropped_records_total", {"kind": "trade"}) == 7
    assert gaps.gaps == []

    # Kafka takes 2: 6 still wait, above half the bound, so frames are still not captured
    kafka.ack(2)
    late = (frame("AAPL", 1, now + 40), now + 40)
    handler(*late)
    assert len(kafka.values) == 8
    assert metrics.value("collector_kafka_dropped_records_total", {"kind": "trade"}) == 8

    # Kafka takes 2 more: 4 wait, the next frame is captured and the run of dropped frames
    # becomes one gap row, from the first dropped frame's arrival to the last one's
    kafka.ack(2)
    back = (frame("MSFT", 2, now + 50), now + 50)
    handler(*back)
    assert kafka.values[8:] == encoded(*back)
    (gap,) = gaps.gaps
    assert (gap.start_ms, gap.end_ms, gap.reason) == (now + 20, now + 40, "kafka_buffer_full")
    assert gap.symbols == ("AAPL", "MSFT") and gap.collector_id == "host:1"
    assert gap.detail.startswith("8 trades (AAPL 5, MSFT 3) and 0 dead letters in 3 frames")

    kafka.ack(6)
    assert metrics.value("collector_kafka_buffered_records") == 0
    assert metrics.value("collector_kafka_buffered_bytes") == 0
    assert handler.trades == 10  # captured; 8 in the gap; 18 read
    handler.finish()
    assert len(gaps.gaps) == 1  # nothing more was dropped


@CLIENTS
def test_a_stop_while_frames_are_dropped_records_their_gap(client: str) -> None:
    metrics = CollectorMetrics()
    kafka = Kafka(client, metrics, buffer_records=2)
    gaps = RecordingGaps()
    handler = handler_for(kafka, metrics, gaps=gaps)
    now = int(time.time() * 1000)
    handler(frame("AAPL", 2, now), now)
    handler(frame("AAPL", 1, now + 5), now + 5)
    handler.finish()
    ((gap),) = gaps.gaps
    assert (gap.start_ms, gap.end_ms, gap.symbols) == (now + 5, now + 5, ("AAPL",))


@CLIENTS
def test_dead_letters_count_against_the_bound_and_are_accounted_when_dropped(client: str) -> None:
    metrics = CollectorMetrics()
    kafka = Kafka(client, metrics, buffer_records=1_000, buffer_bytes=2048)
    gaps = RecordingGaps()
    handler = handler_for(kafka, metrics, gaps=gaps)
    now = int(time.time() * 1000)
    junk = json.dumps({"type": "trade", "data": [{"s": "AAPL", "p": "x" * 1500}]}).encode()
    handler(junk, now)  # one dead letter of ~2 KB: admitted into the empty backlog
    handler(junk, now + 1)  # over 2048 bytes: not captured
    assert metrics.value("collector_kafka_dropped_records_total", {"kind": "dead_letter"}) == 1
    kafka.ack(1)
    handler(frame("AAPL", 1, now + 2), now + 2)
    (gap,) = gaps.gaps
    assert "0 trades (none) and 1 dead letters in 1 frames" in gap.detail
    assert gap.symbols == SYMBOLS  # no trade named a symbol: all of them


@CLIENTS
def test_the_heartbeat_safe_point_stays_before_the_oldest_unacknowledged_frame(
    client: str, tmp_path: Path
) -> None:
    metrics = CollectorMetrics()
    kafka = Kafka(client, metrics)
    beat = Heartbeat(tmp_path / "hb", "host:1", interval_s=0)
    handler = handler_for(kafka, metrics, heartbeat=beat)
    now = int(time.time() * 1000)
    handler(frame("AAPL", 1, now), now)
    for i in range(1, 4):  # Kafka is away: frames keep coming, the first stays unacknowledged
        handler(frame("MSFT", 1, now + i * 1000), now + i * 1000)
    assert beat.previous() is not None and beat.previous().safe_ms == now - 1  # type: ignore[union-attr]
    kafka.ack(4)  # Kafka is back: the safe point is the newest frame of the previous beat again
    handler(frame("AAPL", 1, now + 5000), now + 5000)
    kafka.ack(1)
    handler(frame("AAPL", 1, now + 6000), now + 6000)
    assert beat.previous().safe_ms == now + 5000  # type: ignore[union-attr]


def test_the_outage_clock_and_its_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    metrics = CollectorMetrics()
    backlog = DeliveryBacklog(
        max_records=10, max_bytes=10_000, metrics=metrics, clock=lambda: clock[0]
    )
    log = logging.getLogger("test.backlog")
    assert backlog.outage_s() == 0  # nothing waits
    pending, other = backlog.admit(1, 10, received_ms=1), backlog.admit(1, 10, received_ms=2)
    assert pending is not None and other is not None
    clock[0] = 107.0
    assert metrics.value("collector_kafka_outage_seconds") == 7
    with caplog.at_level(logging.WARNING, logger="test.backlog"):
        backlog.check(log, "h:1")
        backlog.check(log, "h:1")  # logged once per 30 s
        assert [r.getMessage()[:40] for r in caplog.records] == [
            "kafka h:1: nothing acknowledged for 7 s;"
        ]
        pending.done()  # a frame acknowledged: progress restarts the clock
        assert metrics.value("collector_kafka_outage_seconds") == 0
        backlog.check(log, "h:1")
        assert "acknowledging again; 1 records still buffered" in caplog.records[-1].getMessage()
    other.done()
    assert (backlog.records, backlog.bytes, backlog.outage_s()) == (0, 0, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"COLLECTOR_KAFKA_BUFFER_RECORDS": "0"},
            "COLLECTOR_KAFKA_BUFFER_RECORDS='0' must be >= 1",
        ),
        (
            {"COLLECTOR_KAFKA_BUFFER_BYTES": "1 kilo"},
            "COLLECTOR_KAFKA_BUFFER_BYTES='1 kilo': expected a size like",
        ),
        (
            {"COLLECTOR_KAFKA_BUFFER_BYTES": "512"},
            "COLLECTOR_KAFKA_BUFFER_BYTES='512' must be at least 1024 bytes",
        ),
    ],
)
def test_buffer_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CollectorConfig.from_env({"FINNHUB_WS_URL": "ws://127.0.0.1:1", **env})


def test_buffer_settings_reach_the_config() -> None:
    config = CollectorConfig.from_env(
        {
            "FINNHUB_WS_URL": "ws://127.0.0.1:1",
            "COLLECTOR_KAFKA_BUFFER_RECORDS": "5000",
            "COLLECTOR_KAFKA_BUFFER_BYTES": "1048576",
        }
    )
    assert (config.kafka_buffer_records, config.kafka_buffer_bytes) == (5000, 1_048_576)
    default: Callable[[], CollectorConfig] = lambda: CollectorConfig.from_env(  # noqa: E731
        {"FINNHUB_WS_URL": "ws://127.0.0.1:1"}
    )
    assert (default().kafka_buffer_records, default().kafka_buffer_bytes) == (100_000, 64 << 20)


def test_an_idle_collector_still_learns_what_confluent_kafka_acknowledged() -> None:
    class AcksOnPoll(FakeProducer):
        """librdkafka: delivery reports are served inside poll() only."""

        kafka_up = False
        served = 0

        def poll(self, timeout: float = -1) -> int:
            served = 0
            while self.kafka_up and served + self.served < len(self.sent):
                self.deliver(self.served + served)
                served += 1
            self.served += served
            return served

    metrics = CollectorMetrics()
    sink = ConfluentKafkaSink(
        bootstrap_servers="h:1",
        trades_topic="t",
        dlq_topic="t.dlq",
        producer_factory=AcksOnPoll,
        metrics=metrics,
    )
    sink.setup()
    kafka: Any = SimpleNamespace(sink=sink)
    handler = handler_for(kafka, metrics)
    now = int(time.time() * 1000)
    handler(frame("AAPL", 3, now), now)
    assert metrics.value("collector_kafka_buffered_records") == 3
    sink._producer.kafka_up = True  # acknowledged, but no frame comes to poll
    handler.idle()
    assert metrics.value("collector_kafka_buffered_records") == 0
