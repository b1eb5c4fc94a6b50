"""The real Kafka and Cassandra that `python -m infra` runs."""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from pathlib import Path

import pytest

from infra.config import InfraConfig
from infra.supervisor import Supervisor
from schemas import avro_codec
from schemas.contracts import topic_specs
from schemas.runtime.cassandra import connect
from tests.conftest import Stack, run_infra
from tests.conftest import infra_cli as infra

pytestmark = pytest.mark.integration
UTC = dt.UTC


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_trade(n: int, ts: dt.datetime) -> dict[str, object]:
    return {
        "trade_id": f"id-{n}",
        "symbol": "AAPL",
        "price": 100.0 + n,
        "volume": float(n),
        "trade_ts": ts,
        "conditions": ["1", "12"] if n % 2 else [],
        "source": "test",
        "ingest_ts": ts,
    }


def produce(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for record in records:
        producer.send(topic, key=str(record["symbol"]).encode(), value=avro_codec.encode(record))
    producer.flush(timeout=30)
    producer.close()


def consume_all(bootstrap: str, topic: str, expected: int) -> list[dict[str, object]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
    )
    out = []
    for message in consumer:
        out.append(avro_codec.decode(message.value))
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_status_reports_every_service_healthy(stack: Stack) -> None:
    result = infra("status")
    assert result.returncode == 0, result.stdout
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("kafka", "cassandra", "trino"))
    ]
    assert len(lines) == 3 and all(line.endswith("healthy") for line in lines)


def test_second_up_is_a_noop(stack: Stack) -> None:
    before = infra("status").stdout
    result = infra("up")
    assert result.returncode == 0, result.stderr
    assert "kafka: already running" in result.stdout
    assert "cassandra: already running" in result.stdout
    assert "trino: already running" in result.stdout
    assert "schema up to date" in result.stdout
    assert infra("status").stdout == before  # same pids


def test_contract_topics_exist_with_their_partitions(stack: Stack) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    try:
        described = {
            t["name"]: t for t in admin.describe_topics([s.name for s in topic_specs().values()])
        }
    finally:
        admin.close()
    for spec in topic_specs().values():
        assert len(described[spec.name]["partitions"]) == spec.partitions


def test_avro_produce_consume_round_trip(stack: Stack, unique_topic) -> None:  # type: ignore[no-untyped-def]
    topic = unique_topic("roundtrip")
    now = dt.datetime.now(UTC).replace(microsecond=123000)
    records = [sample_trade(n, now) for n in range(1, 51)]
    produce(stack.kafka.bootstrap_servers, topic, records)
    assert consume_all(stack.kafka.bootstrap_servers, topic, len(records)) == records


def test_cql_round_trip_keeps_same_millisecond_trades(test_keyspace) -> None:  # type: ignore[no-untyped-def]
    cluster, session = connect(test_keyspace, keyspace=test_keyspace.keyspace)
    ts = dt.datetime(2024, 8, 8, 23, 54, 15, 342000)
    try:
        insert = session.prepare(
            "INSERT INTO trades (symbol, day, trade_ts, trade_id, price, volume, conditions, "
            "source, ingest_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        for trade_id, price in (("a", 1.5), ("b", 1.5), ("a", 1.5)):
            session.execute(insert, ("AAPL", ts.date(), ts, trade_id, price, 2.0, ["1"], "t", ts))
        rows = list(
            session.execute(
                "SELECT trade_id, price, conditions FROM trades WHERE symbol='AAPL' AND day=%s",
                (ts.date(),),
            )
        )
    finally:
        cluster.shutdown()
    assert [(r.trade_id, r.price, r.conditions) for r in rows] == [
        ("a", 1.5, ["1"]),
        ("b", 1.5, ["1"]),
    ]


def test_migrate_is_idempotent(test_keyspace) -> None:  # type: ignore[no-untyped-def]
    result = infra("migrate", "--keyspace", test_keyspace.keyspace)
    assert result.returncode == 0 and "schema up to date" in result.stdout


def test_data_survives_down_and_up(stack: Stack, test_keyspace, unique_topic) -> None:  # type: ignore[no-untyped-def]
    topic = unique_topic("durable")
    ts = dt.datetime.now(UTC).replace(microsecond=0)
    produce(stack.kafka.bootstrap_servers, topic, [sample_trade(7, ts)])
    cluster, session = connect(test_keyspace, keyspace=test_keyspace.keyspace)
    try:
        session.execute(
            "INSERT INTO trades (symbol, day, trade_ts, trade_id, price, volume) "
            "VALUES ('MSFT', %s, %s, 'durable', 3.25, 1.0)",
            (ts.date(), ts),
        )
    finally:
        cluster.shutdown()

    result = infra("down")
    assert result.returncode == 0 and "kafka: stopped" in result.stdout
    assert infra("status").returncode == 1
    run_infra("up")

    assert consume_all(stack.kafka.bootstrap_servers, topic, 1) == [sample_trade(7, ts)]
    cluster, session = connect(test_keyspace, keyspace=test_keyspace.keyspace)
    try:
        row = session.execute(
            "SELECT price FROM trades WHERE symbol='MSFT' AND day=%s", (ts.date(),)
        ).one()
    finally:
        cluster.shutdown()
    assert row.price == 3.25


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "CASSANDRA_", "TRINO_", "JAVA17"))
    }
    env.update(
        STATE_DIR=str(tmp_path / "state"),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        CASSANDRA_PORT=str(free_port()),
        CASSANDRA_STORAGE_PORT=str(free_port()),
        TRINO_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def test_port_already_taken_gives_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        env = isolated_env(tmp_path, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
        result = infra("up", "kafka", env=env)
    assert result.returncode == 4
    assert result.stderr.strip().count("\n") == 0
    assert f"kafka: port 127.0.0.1:{port} (client) is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_jdk_gives_one_line_error(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, JAVA17_HOME=str(tmp_path / "no-jdk"))
    result = infra("up", "cassandra", env=env)
    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"infra: error: JAVA17_HOME={tmp_path / 'no-jdk'} has no bin/java; install OpenJDK 17 "
        "(apt-get install openjdk-17-jdk-headless) or point JAVA17_HOME at one"
    )


def test_service_that_does_not_answer_in_time_is_named_with_its_log(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, KAFKA_START_TIMEOUT="0")
    result = infra("up", "kafka", env=env)
    assert result.returncode == 1
    first_line = result.stderr.splitlines()[0]
    assert first_line == "infra: error: kafka did not answer within 0 s"
    assert f"--- {tmp_path / 'state' / 'kafka' / 'logs'}" in result.stderr
    # The half-started broker was stopped again.
    assert "kafka" in infra("status", env=env).stdout
    assert infra("status", env=env).stdout.splitlines()[1].split()[1] == "-"
    # ...and supervisord with it: nothing is left running behind a failed `up`.
    assert not Supervisor(InfraConfig.from_env(env)).is_running()
