from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from collector.config import DEFAULT_SYMBOLS, CollectorConfig, SecretStr
from collector.exceptions import ConfigError
from schemas.settings import RENAMED

FEED = {"FINNHUB_WS_URL": "ws://127.0.0.1:8765"}


def test_defaults_point_at_finnhub_and_need_only_a_token() -> None:
    config = CollectorConfig.from_env({"FINNHUB_TOKEN": "tok123"})
    assert config.ws_url == "wss://ws.finnhub.io"
    assert config.symbols == DEFAULT_SYMBOLS
    assert config.source == "finnhub"
    assert (config.trades_topic, config.dlq_topic) == ("trades", "trades.dlq")
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.connect_url == "wss://ws.finnhub.io/?token=tok123"


def test_the_live_finnhub_without_a_token_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="FINNHUB_TOKEN is not set"):
        CollectorConfig.from_env({})


def test_the_offline_feed_needs_no_token() -> None:
    config = CollectorConfig.from_env(FEED)
    assert config.token is None
    assert config.connect_url == "ws://127.0.0.1:8765"
    assert config.source == "feed"


def test_the_token_never_shows() -> None:
    config = CollectorConfig.from_env({**FEED, "FINNHUB_TOKEN": "s3cr3t-tok"})
    for text in (repr(config), str(config), f"{config.token}", repr(config.token)):
        assert "s3cr3t-tok" not in text
    assert "s3cr3t-tok" in config.connect_url
    assert config.redact(f"failed {config.connect_url}") == "failed ws://127.0.0.1:8765/?token=***"
    assert SecretStr("a") == SecretStr("a") and SecretStr("a") != SecretStr("b")


def test_a_token_inside_the_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not contain the token"):
        CollectorConfig.from_env({"FINNHUB_WS_URL": "wss://ws.finnhub.io?token=abc"})


def test_symbols_are_split_trimmed_and_deduplicated() -> None:
    config = CollectorConfig.from_env({**FEED, "SYMBOLS": " AAPL, BINANCE:BTCUSDT ,AAPL,"})
    assert config.symbols == ("AAPL", "BINANCE:BTCUSDT")


def test_topics_follow_the_shared_contract() -> None:
    config = CollectorConfig.from_env({**FEED, "TRADES_TOPIC": "t1"})
    assert (config.trades_topic, config.dlq_topic) == ("t1", "t1.dlq")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYMBOLS": " , "}, "SYMBOLS=',' names no symbol"),
        ({"SYMBOLS": "A B"}, "SYMBOLS: 'A B' is not a symbol"),
        ({"FINNHUB_WS_URL": "http://x"}, "FINNHUB_WS_URL='http://x'"),
        ({"COLLECTOR_STALL_TIMEOUT": "soon"}, "COLLECTOR_STALL_TIMEOUT='soon': expected a dur"),
        ({"COLLECTOR_STALL_TIMEOUT": "0"}, "COLLECTOR_STALL_TIMEOUT='0' must be at least 0.1 s"),
        ({"COLLECTOR_MAX_FUTURE_SKEW": "nan"}, "COLLECTOR_MAX_FUTURE_SKEW='nan'"),
        ({"COLLECTOR_MAX_FUTURE_SKEW": "-1s"}, "COLLECTOR_MAX_FUTURE_SKEW='-1s'"),
        ({"COLLECTOR_LINGER": "1.5ms"}, "COLLECTOR_LINGER='1.5ms': expected a duration"),
        ({"COLLECTOR_MAX_FRAME_BYTES": "8 megs"}, "COLLECTOR_MAX_FRAME_BYTES='8 megs': expected"),
        ({"COLLECTOR_BATCH_BYTES": "1"}, "COLLECTOR_BATCH_BYTES='1' must be at least 1024 bytes"),
        ({"COLLECTOR_COMPRESSION": "brotli"}, "allowed values are none, gzip"),
        ({"COLLECTOR_GAPS": "maybe"}, "COLLECTOR_GAPS='maybe': expected true or false"),
        ({"COLLECTOR_SOURCE": "x"}, "COLLECTOR_SOURCE='x': allowed values are finnhub"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohost"}, "KAFKA_BOOTSTRAP_SERVERS='nohost'"),
        ({"COLLECTOR_BACKOFF_INITIAL": "5", "COLLECTOR_BACKOFF_MAX": "1"}, "backoff_max_s=1"),
        # a bad value under a renamed variable's old name is reported under that name
        ({"COLLECTOR_STALL_TIMEOUT_S": "soon"}, "COLLECTOR_STALL_TIMEOUT_S='soon': expected"),
    ],
)
def test_bad_values_name_the_variable_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        CollectorConfig.from_env({**FEED, **env})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_are_read_from_the_environment() -> None:
    config = CollectorConfig.from_env(
        {
            **FEED,
            "COLLECTOR_STALL_TIMEOUT": "2.5",
            "COLLECTOR_MAX_PAST_SKEW": "10",
            "COLLECTOR_MAX_FUTURE_SKEW": "500ms",
            "COLLECTOR_LINGER": "0.1s",
            "COLLECTOR_PROGRESS_INTERVAL": "1m",
            "COLLECTOR_MAX_FRAME_BYTES": "1m",
            "COLLECTOR_COMPRESSION": "NONE",
            "COLLECTOR_GAPS": "false",
            "COLLECTOR_METRICS_PORT": "0",
            "COLLECTOR_SOURCE": "replay",
        }
    )
    assert config.stall_timeout_s == 2.5
    assert config.max_past_skew_s == 10.0
    assert config.max_future_skew_s == 0.5
    assert config.linger_ms == 100
    assert config.progress_interval_s == 60.0
    assert config.max_frame_bytes == 1024 * 1024
    assert config.compression == "none"
    assert config.record_gaps is False
    assert config.metrics_port == 0
    assert config.source == "replay"


def test_unset_variables_keep_the_declared_defaults(tmp_path: Path) -> None:
    """from_env passes each field's declared default, so the two never differ."""
    env = {**FEED, "COLLECTOR_HEARTBEAT_FILE": "off", "STATE_DIR": str(tmp_path)}
    from_env = CollectorConfig.from_env(env)
    declared = CollectorConfig(ws_url=FEED["FINNHUB_WS_URL"], source="feed")
    assert from_env == dataclasses.replace(declared, collector_id=from_env.collector_id)


# The collector's renamed variables: old name, value, the field and the value it reads as.
COLLECTOR_RENAMES = [
    ("COLLECTOR_MAX_FUTURE_SKEW_S", "1.5", "max_future_skew_s", 1.5),
    ("COLLECTOR_MAX_PAST_SKEW_S", "10", "max_past_skew_s", 10.0),
    ("COLLECTOR_STALL_TIMEOUT_S", "1.5", "stall_timeout_s", 1.5),
    ("COLLECTOR_CONNECT_TIMEOUT_S", "3", "connect_timeout_s", 3.0),
    ("COLLECTOR_BACKOFF_INITIAL_S", "0.2", "backoff_initial_s", 0.2),
    ("COLLECTOR_BACKOFF_MAX_S", "2", "backoff_max_s", 2.0),
    ("COLLECTOR_FLUSH_TIMEOUT_S", "5", "flush_timeout_s", 5.0),
    ("COLLECTOR_PROGRESS_S", "1", "progress_interval_s", 1.0),
    ("COLLECTOR_LINGER_MS", "200", "linger_ms", 200),
]


@pytest.mark.parametrize(("old", "value", "attr", "expected"), COLLECTOR_RENAMES)
def test_old_names_are_read_for_one_release_with_a_warning(
    old: str, value: str, attr: str, expected: float, caplog: pytest.LogCaptureFixture
) -> None:
    new = next(n for n, o in RENAMED.items() if o == old)
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        config = CollectorConfig.from_env({**FEED, old: value})
    assert getattr(config, attr) == expected
    assert f"{old} is deprecated, set {new} instead" in caplog.text
    # the new name reads the same value as a duration; a plain number is seconds, so the old
    # COLLECTOR_LINGER_MS=200 (milliseconds) is COLLECTOR_LINGER=200ms
    new_value = f"{value}ms" if old == "COLLECTOR_LINGER_MS" else value
    assert getattr(CollectorConfig.from_env({**FEED, new: new_value}), attr) == expected


@pytest.mark.parametrize(("old", "value", "attr", "expected"), COLLECTOR_RENAMES)
def test_an_old_and_a_new_name_that_disagree_are_an_error(
    old: str, value: str, attr: str, expected: float
) -> None:
    new = next(n for n, o in RENAMED.items() if o == old)
    with pytest.raises(ConfigError) as info:
        CollectorConfig.from_env({**FEED, old: value, new: "7"})
    assert str(info.value) == (
        f"{new}='7' and {old}={value!r} are both set: {old} is the old name of {new}; unset it"
    )


def test_on_off_booleans_are_read_for_one_release_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert CollectorConfig.from_env({**FEED, "COLLECTOR_GAPS": "off"}).record_gaps is False
        assert CollectorConfig.from_env({**FEED, "COLLECTOR_GAPS": "on"}).record_gaps is True
    assert "COLLECTOR_GAPS=off is deprecated, write COLLECTOR_GAPS=false" in caplog.text
    assert "COLLECTOR_GAPS=on is deprecated, write COLLECTOR_GAPS=true" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert CollectorConfig.from_env({**FEED, "COLLECTOR_GAPS": "TRUE"}).record_gaps is True
    assert caplog.text == ""


def test_config_is_frozen() -> None:
    config = CollectorConfig.from_env(FEED)
    with pytest.raises(AttributeError):
        config.symbols = ("X",)  # type: ignore[misc]


def test_logging_the_config_does_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    config = CollectorConfig.from_env({**FEED, "FINNHUB_TOKEN": "leaky-token-1"})
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("config %s %r", config, config)
    assert "leaky-token-1" not in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "kafka-python"),
        ("kafka-python", "kafka-python"),
        ("confluent", "confluent"),
        (" Confluent ", "confluent"),
        ("", "kafka-python"),
    ],
)
def test_the_kafka_client_is_chosen_with_collector_kafka_client(
    value: str | None, expected: str
) -> None:
    env = FEED if value is None else {**FEED, "COLLECTOR_KAFKA_CLIENT": value}
    assert CollectorConfig.from_env(env).kafka_client == expected


@pytest.mark.parametrize("value", ["librdkafka", "kafka_python", "aiokafka"])
def test_an_unknown_kafka_client_is_a_one_line_error(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        CollectorConfig.from_env({**FEED, "COLLECTOR_KAFKA_CLIENT": value})
    assert str(info.value) == (
        f"COLLECTOR_KAFKA_CLIENT={value!r}: allowed values are kafka-python, confluent"
    )


def test_the_kafka_client_is_validated_on_construction() -> None:
    with pytest.raises(ConfigError, match="kafka_client='rdkafka': allowed values are kafka-py"):
        CollectorConfig(ws_url="ws://127.0.0.1:1", kafka_client="rdkafka")  # type: ignore[arg-type]
