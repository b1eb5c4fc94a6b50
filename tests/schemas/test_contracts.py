from __future__ import annotations

import datetime as dt

import pytest

import schemas
from schemas import avro_codec, contracts
from schemas.settings import (
    CassandraSettings,
    KafkaSettings,
    SecretStr,
    SettingsError,
    secret_value,
)

UTC = dt.UTC


def trade(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "trade_id": "abc",
        "symbol": "BINANCE:BTCUSDT",
        "price": 61837.63,
        "volume": 0.02,
        "trade_ts": dt.datetime(2024, 8, 8, 23, 54, 15, 342000, tzinfo=UTC),
        "conditions": [],
        "source": "feed",
        "ingest_ts": dt.datetime(2024, 8, 8, 23, 54, 15, 400000, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def test_public_surface_is_pinned() -> None:
    assert sorted(schemas.__all__) == sorted(
        [
            "AVRO_DIR",
            "CQL_DIR",
            "TABLE_AGG_1H",
            "TABLE_AGG_1M",
            "TABLE_AGG_5S",
            "TABLE_COLLECTOR_GAPS",
            "TABLE_TRADES",
            "CassandraSettings",
            "KafkaSettings",
            "TopicSpec",
            "load_avro_schema",
            "load_credentials_file",
            "topic_specs",
        ]
    )


def test_single_object_encoding_bytes_are_stable() -> None:
    # Pinned: a changed fingerprint means the writer schema changed; bump consumers knowingly.
    assert avro_codec.header() == bytes.fromhex("c30116e4f40b5634bcf9")
    payload = avro_codec.encode(trade(conditions=["1", "12"]))
    assert payload[:2] == b"\xc3\x01"
    assert payload[10:14] == b"\x06abc"  # zigzag length 3, then the id


@pytest.mark.parametrize(
    "record",
    [trade(), trade(conditions=["1", "8", "12"]), trade(volume=0.0, price=1e-8)],
)
def test_avro_round_trip(record: dict[str, object]) -> None:
    assert avro_codec.decode(avro_codec.encode(record)) == record


def test_decode_rejects_foreign_header() -> None:
    payload = b"\x00\x00\x00\x00\x01" + avro_codec.encode(trade())[10:]
    with pytest.raises(avro_codec.SchemaMismatchError, match="header"):
        avro_codec.decode(payload)


def test_topic_specs_defaults_and_overrides() -> None:
    default = contracts.topic_specs({})
    assert (default["trades"].name, default["dlq"].name) == ("trades", "trades.dlq")
    assert default["trades"].partitions >= 1
    named = contracts.topic_specs({"TRADES_TOPIC": "x", "DLQ_TOPIC": "y"})
    assert (named["trades"].name, named["dlq"].name) == ("x", "y")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "KAFKA_BOOTSTRAP_SERVERS='localhost'"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "a:1,b"}, "expected host:port"),
    ],
)
def test_kafka_settings_reject_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        KafkaSettings.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CASSANDRA_PORT": "nine"}, "CASSANDRA_PORT='nine' is not a port number"),
        ({"CASSANDRA_PORT": "70000"}, "outside 1..65535"),
        ({"CASSANDRA_KEYSPACE": "drop table"}, "CASSANDRA_KEYSPACE='drop table'"),
    ],
)
def test_cassandra_settings_reject_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        CassandraSettings.from_env({**env, "STATE_DIR": "/nonexistent"})


def test_credentials_file_is_used_when_env_unset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "credentials.env").write_text("CASSANDRA_USERNAME=u\nCASSANDRA_PASSWORD=p\n")
    from_file = CassandraSettings.from_env({"STATE_DIR": str(tmp_path)})
    assert (from_file.username, secret_value(from_file.password)) == ("u", "p")
    from_env = CassandraSettings.from_env(
        {"STATE_DIR": str(tmp_path), "CASSANDRA_USERNAME": "e", "CASSANDRA_PASSWORD": "q"}
    )
    assert (from_env.username, secret_value(from_env.password)) == ("e", "q")


def test_password_is_not_in_repr() -> None:
    s = CassandraSettings(username="u", password=SecretStr("s3cr3t-value"))
    assert "s3cr3t-value" not in repr(s)


def test_readers_get_the_reader_role(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "credentials.env").write_text(
        "CASSANDRA_USERNAME=w\nCASSANDRA_PASSWORD=wp\n"
        "CASSANDRA_READER_USERNAME=r\nCASSANDRA_READER_PASSWORD=rp\n"
    )
    env = {"STATE_DIR": str(tmp_path)}
    reader = CassandraSettings.from_env(env, role="reader")
    assert (reader.username, secret_value(reader.password)) == ("r", "rp")
    writer = CassandraSettings.from_env(env)
    assert (writer.username, secret_value(writer.password)) == ("w", "wp")
    override = CassandraSettings.from_env(
        {**env, "CASSANDRA_READER_USERNAME": "r2", "CASSANDRA_READER_PASSWORD": "rp2"},
        role="reader",
    )
    assert (override.username, secret_value(override.password)) == ("r2", "rp2")
