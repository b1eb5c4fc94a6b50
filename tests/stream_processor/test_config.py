"""Settings parsing: defaults, overrides and one-line errors naming the variable."""

from __future__ import annotations

import logging

import pytest

from stream_processor.config import QUERY_NAMES, StreamSettings
from stream_processor.exceptions import ConfigError

BASE = {"STATE_DIR": "/tmp/sp-state"}


def test_defaults() -> None:
    s = StreamSettings.from_env(BASE)
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.cassandra.keyspace == "market"
    assert (s.trades_topic, s.dlq_topic) == ("trades", "trades.dlq")
    assert s.queries == QUERY_NAMES
    assert (s.raw_trigger_ms, s.bars_trigger_ms, s.watermark_ms) == (500, 5000, 10_000)
    assert s.starting_offsets == "earliest" and s.fail_on_data_loss is True
    assert s.bars_dedupe is True  # exactly-once bars by default
    assert s.checkpoint("bars_5s") == "/tmp/sp-state/checkpoints/bars_5s_dedup"
    assert s.max_restarts == 10
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9109)


def test_overrides() -> None:
    s = StreamSettings.from_env(
        {
            **BASE,
            "CHECKPOINT_DIR": "hdfs://nn:8020/cp/",
            "TRADES_TOPIC": "t1",
            "STREAM_QUERIES": "bars_5s,trades_raw",
            "BARS_WATERMARK": "2 minutes",
            "RAW_TRIGGER": "250 ms",
            "BARS_TRIGGER": "2s",
            "MAX_OFFSETS_PER_TRIGGER": "0",
            "FAIL_ON_DATA_LOSS": "false",
            "STARTING_OFFSETS": "latest",
            "QUERY_MAX_RESTARTS": "3",
        }
    )
    assert s.max_restarts == 3
    assert s.checkpoint("trades_raw") == "hdfs://nn:8020/cp/trades_raw"
    assert (s.trades_topic, s.dlq_topic) == ("t1", "t1.dlq")
    assert s.queries == ("trades_raw", "bars_5s")
    assert s.bars_trigger_ms == 2000
    assert (s.watermark_ms, s.raw_trigger_ms, s.max_offsets_per_trigger) == (120_000, 250, 0)
    assert s.fail_on_data_loss is False and s.starting_offsets == "latest"


def test_dedupe_has_its_own_bars_checkpoint() -> None:
    s = StreamSettings.from_env({**BASE, "BARS_DEDUPE": "false"})
    assert s.bars_dedupe is False
    assert s.checkpoint("bars_5s") == "/tmp/sp-state/checkpoints/bars_5s"
    assert s.checkpoint("trades_raw") == "/tmp/sp-state/checkpoints/trades_raw"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BARS_WATERMARK": "soon"}, "BARS_WATERMARK='soon': expected a duration"),
        ({"BARS_WATERMARK": "10 fortnights"}, "BARS_WATERMARK='10 fortnights'"),
        ({"RAW_TRIGGER": "5s"}, "RAW_TRIGGER=5000 ms: the raw query must trigger at least"),
        ({"STREAM_QUERIES": "bars_2s"}, "STREAM_QUERIES='bars_2s': choose from trades_raw"),
        (
            {"STREAM_QUERIES": "trades_raw,bars_1m"},
            "STREAM_QUERIES='trades_raw,bars_1m': bars_1m: no longer a separate query",
        ),
        ({"BARS_TRIGGER": "often"}, "BARS_TRIGGER='often': expected a duration"),
        ({"BARS_DEDUPE": "yes"}, "BARS_DEDUPE='yes': expected true or false"),
        ({"MAX_OFFSETS_PER_TRIGGER": "-1"}, "MAX_OFFSETS_PER_TRIGGER='-1' must be >= 0"),
        ({"STREAM_METRICS_PORT": "http"}, "STREAM_METRICS_PORT='http' is not an integer"),
        ({"STREAM_METRICS_PORT": "70000"}, "STREAM_METRICS_PORT=70000 is outside 0..65535"),
        ({"METRICS_PORT": "http"}, "METRICS_PORT='http' is not an integer"),  # the old name
        (
            {"METRICS_PORT": "9109", "STREAM_METRICS_PORT": "9200"},
            "STREAM_METRICS_PORT='9200' and METRICS_PORT='9109' are both set: METRICS_PORT is "
            "the old name of STREAM_METRICS_PORT; unset it",
        ),
        ({"SINK_RETRY_TIMEOUT": "a while"}, "SINK_RETRY_TIMEOUT='a while': expected a duration"),
        ({"QUERY_MAX_RESTARTS": "x"}, "QUERY_MAX_RESTARTS='x' is not an integer"),
        ({"FAIL_ON_DATA_LOSS": "yes"}, "FAIL_ON_DATA_LOSS='yes': expected true or false"),
        ({"STARTING_OFFSETS": "first"}, "STARTING_OFFSETS='first': use earliest, latest"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohost"}, "KAFKA_BOOTSTRAP_SERVERS='nohost'"),
        ({"CASSANDRA_PORT": "99999"}, "CASSANDRA_PORT='99999' is outside"),
        ({"TRADE_MAX_PRICE": "inf"}, "TRADE_MAX_PRICE='inf' must be a finite number >= 0"),
        (
            {"TRADE_MIN_VOLUME": "2", "TRADE_MAX_VOLUME": "1"},
            "TRADE_MIN_VOLUME=2.0 and TRADE_MAX_VOLUME=1.0: need finite bounds",
        ),
        ({"TRADE_MIN_PRICE": "0"}, "TRADE_MIN_PRICE=0.0 and TRADE_MAX_PRICE=1000000000000.0"),
        (
            {"TRADE_MAX_FUTURE_SKEW": "10s"},
            "TRADE_MAX_FUTURE_SKEW=10000 ms must be below BARS_WATERMARK=10000 ms",
        ),
        (
            {"TRADE_MAX_FUTURE_SKEW": "5s", "BARS_WATERMARK": "3s"},
            "TRADE_MAX_FUTURE_SKEW=5000 ms must be below BARS_WATERMARK=3000 ms",
        ),
    ],
)
def test_bad_values_name_variable_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        StreamSettings.from_env({**BASE, **env})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_repr_hides_password() -> None:
    s = StreamSettings.from_env({**BASE, "CASSANDRA_USERNAME": "u", "CASSANDRA_PASSWORD": "s3cr3t"})
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in f"{s} {s.cassandra.password}"
    assert s.cassandra.password is not None
    assert s.cassandra.password.get_secret_value() == "s3cr3t"


@pytest.mark.parametrize(("old", "new"), [("METRICS_HOST", "0.0.0.0"), ("METRICS_PORT", "0")])
def test_the_metrics_endpoint_variables_got_the_service_prefix(
    old: str, new: str, caplog: pytest.LogCaptureFixture
) -> None:
    attr = "metrics_host" if old == "METRICS_HOST" else "metrics_port"
    expected = new if attr == "metrics_host" else int(new)
    assert getattr(StreamSettings.from_env({**BASE, f"STREAM_{old}": new}), attr) == expected
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert getattr(StreamSettings.from_env({**BASE, old: new}), attr) == expected
    assert f"{old} is deprecated, set STREAM_{old} instead" in caplog.text


def test_on_off_dedupe_is_read_for_one_release(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert StreamSettings.from_env({**BASE, "BARS_DEDUPE": "off"}).bars_dedupe is False
    assert "BARS_DEDUPE=off is deprecated, write BARS_DEDUPE=false" in caplog.text


def test_unset_variables_keep_the_declared_defaults() -> None:
    s = StreamSettings.from_env(BASE)
    declared = StreamSettings(
        kafka=s.kafka,
        cassandra=s.cassandra,
        trades_topic=s.trades_topic,
        dlq_topic=s.dlq_topic,
        checkpoint_dir=s.checkpoint_dir,
    )
    assert s == declared


def test_no_single_trade_can_move_the_watermark_past_its_arrival() -> None:
    """The policy: a trade may be at most TRADE_MAX_FUTURE_SKEW ahead of its Kafka time, and that
    is below the watermark delay, so the watermark stays behind every record's arrival."""
    s = StreamSettings.from_env(BASE)
    assert 0 < s.max_future_skew_ms < s.watermark_ms
    assert s.watermark_ms - s.max_future_skew_ms >= 5_000  # lag an on-time trade may have


def test_collector_rejects_future_trades_with_the_same_default() -> None:
    from collector.config import CollectorConfig

    collector = CollectorConfig.from_env({**BASE, "FINNHUB_WS_URL": "ws://127.0.0.1:1"})
    assert collector.max_future_skew_s * 1000 == StreamSettings.from_env(BASE).max_future_skew_ms


def test_price_and_volume_bounds() -> None:
    default = StreamSettings.from_env(BASE).limits
    assert (default.min_price, default.max_price) == (1e-12, 1e12)
    assert (default.min_volume, default.max_volume) == (1e-12, 1e18)
    s = StreamSettings.from_env({**BASE, "TRADE_MAX_PRICE": "5e6", "TRADE_MIN_VOLUME": "1e-8"})
    assert (s.limits.max_price, s.limits.min_volume) == (5e6, 1e-8)
