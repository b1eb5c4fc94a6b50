from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future

import collector
import collector.feed
from collector.encoding import TradeEncoder
from collector.exceptions import DeliveryError, SinkSetupError
from collector.metrics import CollectorMetrics
from collector.models import DeadLetter, FrameResult, Trade
from collector.producer import KafkaSink, partition_for
from tests.conftest import REPO_ROOT, Stack

TRADE = Trade("id1", "AAPL", 1.5, 2.0, 1000, ("1",), "feed", 1001)


class RecordingProducer:
    """A producer whose futures the test resolves: records what the sink asked for."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes | None, int | None, Future]] = []
        self.flushed = False

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> Future:
        future = Future()
        self.sent.append((topic, value, key, partition, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True

    def close(self, timeout: float | None = None) -> None:
        pass


def sink(factory: Callable[..., Any] = RecordingProducer) -> KafkaSink:
    s = KafkaSink(
        bootstrap_servers="h:1", trades_topic="t", dlq_topic="t.dlq", producer_factory=factory
    )
    s.setup()
    return s


def test_the_producer_is_configured_for_no_loss() -> None:
    s = sink()
    config = s._producer.config
    assert config["acks"] == "all" and config["enable_idempotence"] is True
    assert config["linger_ms"] == 20 and config["compression_type"] == "gzip"
    assert config["max_in_flight_requests_per_connection"] <= 5


def test_trades_are_keyed_by_symbol_and_partitioned_like_kafka() -> None:
    s = sink()
    values = TradeEncoder().encode_many([TRADE])
    s.send_trades([TRADE], values)
    ((topic, value, key, partition, _),) = s._producer.sent
    assert (topic, value, key) == ("t", values[0], b"AAPL")
    assert partition == partition_for(b"AAPL", 2)


@pytest.mark.parametrize(
    ("key", "expected"),
    # partitions the Java client's murmur2 partitioner picks among 1000
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_for_matches_the_java_partitioner(key: bytes, expected: int) -> None:
    assert partition_for(key, 1000) == expected


def test_a_refused_record_is_counted_and_raised() -> None:
    metrics = CollectorMetrics()
    s = KafkaSink(
        bootstrap_servers="h:1",
        trades_topic="t",
        dlq_topic="t.dlq",
        producer_factory=RecordingProducer,
        metrics=metrics,
    )
    s.setup()
    s.send_trades([TRADE, TRADE], [b"a", b"b"])
    s.raise_if_failed()  # nothing failed yet
    s._producer.sent[0][4].failure(NotLeaderForPartitionError("gone"))
    s._producer.sent[1][4].success(None)
    with pytest.raises(DeliveryError, match="1 record"):
        s.raise_if_failed()
    with pytest.raises(DeliveryError):
        s.flush(1)
    assert metrics.value("collector_delivery_failures_total") == 1


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
    s.send_dead_letters([letter])
    ((topic, value, key, _, _),) = s._producer.sent
    assert (topic, key, value) == ("t.dlq", b"AAPL", letter.to_json())


def test_setup_failures_are_loud() -> None:
    class NoTopic(RecordingProducer):
        def partitions_for(self, topic: str) -> set[int]:
            raise KafkaTimeoutError("no metadata")

    with pytest.raises(SinkSetupError, match="topic 't' on h:1 is not reachable"):
        sink(NoTopic)


def test_close_flushes_and_sending_after_close_fails() -> None:
    s = sink()
    producer = s._producer
    s.close(1)
    assert producer.flushed
    with pytest.raises(DeliveryError, match="not set up"):
        s.send_trades([TRADE], [b"x"])


def test_metrics_count_frames_trades_letters_and_track_age() -> None:
    m = CollectorMetrics()
    m.watch_symbols(["AAPL", "MSFT"])
    zero = TRADE._replace(volume=0.0, trade_ts_ms=2000)
    letter = DeadLetter(reason="wrong_type", detail="x", raw=b"", source="feed", received_ts_ms=0)
    m.observe_frame(FrameResult("trade", trades=[TRADE, zero], dead_letters=[letter]))
    m.observe_frame(FrameResult("ping"))
    m.observe_frame(FrameResult("error", message="too many"))
    assert m.value("collector_trades_total") == 2
    assert m.value("collector_zero_volume_trades_total") == 1
    assert m.value("collector_dead_letters_total", {"reason": "wrong_type"}) == 1
    assert m.value("collector_frames_total", {"type": "ping"}) == 1
    assert m.value("collector_server_errors_total") == 1
    age = m.value("collector_last_trade_age_seconds", {"symbol": "AAPL"})
    assert age > 1e9  # newest AAPL trade is at t=2 s after the epoch
    assert m.registry.get_sample_value(
        "collector_last_trade_age_seconds", {"symbol": "MSFT"}
    ) != m.registry.get_sample_value("collector_last_trade_age_seconds", {"symbol": "MSFT"})  # NaN


def test_the_public_surface_is_pinned() -> None:
    assert sorted(collector.__all__) == [
        "AuthenticationError",
        "CollectorConfig",
        "CollectorError",
        "ConfigError",
        "DeadLetter",
        "DeliveryError",
        "FeedConnectionError",
        "FeedError",
        "FrameParser",
        "FrameResult",
        "Gap",
        "GapStoreError",
        "SecretStr",
        "SinkError",
        "SinkSetupError",
        "Trade",
        "TradeEncoder",
    ]
    assert sorted(collector.feed.__all__) == [
        "CsvReplay",
        "FaultPlan",
        "FeedOptions",
        "FeedServer",
        "FeedStats",
        "JUNK",
        "JsonlReplay",
        "SimulatedMarket",
        "Tick",
        "TradeSource",
        "junk_frame",
    ]
    for name in collector.__all__:
        assert getattr(collector, name) is not None


def test_exceptions_form_one_tree() -> None:
    from collector import exceptions

    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.CollectorError)
        assert name in exceptions.__doc__


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FINNHUB_WS_URL": ""}, "error: FINNHUB_TOKEN is not set"),
        (
            {"FINNHUB_WS_URL": "ws://127.0.0.1:1", "SYMBOLS": ","},
            "error: SYMBOLS=',' names no symbol",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(env: dict[str, str], message: str) -> None:
    import os

    full = {k: v for k, v in os.environ.items() if k not in ("FINNHUB_TOKEN", "FINNHUB_WS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "collector"],
        cwd=REPO_ROOT,
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr


@pytest.mark.integration
def test_the_sink_against_the_real_kafka(stack: Stack, unique_topic: Callable[[str], str]) -> None:
    from tests.collector.conftest import read_topic

    topic = unique_topic("coll-sink")
    s = KafkaSink(
        bootstrap_servers=stack.kafka.bootstrap_servers,
        trades_topic=topic,
        dlq_topic=f"{topic}.dlq",
    )
    s.setup()
    trades = [TRADE._replace(trade_id=f"id{i}") for i in range(100)]
    s.send_trades(trades, TradeEncoder().encode_many(trades))
    s.close(30)
    from schemas import avro_codec

    assert [avro_codec.decode(r.value)["trade_id"] for r in read_topic(stack, topic)] == [
        t.trade_id for t in trades
    ]
