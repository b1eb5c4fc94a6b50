"""Fixtures of the stream processor tests: a Spark session with the connector jars, extra
Cassandra keyspaces, a Kafka producer of Avro trades, and table readers."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from schemas import avro_codec
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from tests.conftest import Stack, run_infra

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from schemas.runtime.spark import build_session

    session = build_session(
        "stream-processor-tests",
        CassandraSettings.from_env(),
        extra_conf={"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"},
    )
    yield session
    for query in session.streams.active:
        query.stop()


@pytest.fixture(scope="module")
def keyspace_factory(stack: Stack) -> Iterator[Callable[[], CassandraSettings]]:
    """Fresh keyspaces with every migration applied, dropped when the module ends."""
    made: list[str] = []

    def make() -> CassandraSettings:
        name = f"test_sp_{uuid.uuid4().hex[:8]}"
        run_infra("migrate", "--keyspace", name)
        made.append(name)
        return CassandraSettings.from_env({**os.environ, "CASSANDRA_KEYSPACE": name})

    yield make
    for name in made:
        run_infra("drop-keyspace", name)


def trade_id(*parts: object) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def make_trade(
    symbol: str,
    ts_ms: int,
    price: float,
    volume: float,
    n: int = 0,
    conditions: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "trade_id": trade_id("test", symbol, ts_ms, price, volume, n),
        "symbol": symbol,
        "price": price,
        "volume": volume,
        "trade_ts": ts_ms,
        "conditions": conditions or [],
        "source": "replay",
        "ingest_ts": ts_ms + 5,
    }


def create_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sp-tests")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Send (key, value) records in order and wait until every one is acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024
    )
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close(timeout=10)


def encode_trades(trades: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(t["symbol"].encode(), avro_codec.encode(t)) for t in trades]


def read_table(settings: CassandraSettings, table: str) -> pd.DataFrame:
    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        rows = list(session.execute(f"SELECT * FROM {table}", timeout=60))
    finally:
        cluster.shutdown()
    return pd.DataFrame([r._asdict() for r in rows])


def consume_all(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[tuple[Any, bytes]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()
