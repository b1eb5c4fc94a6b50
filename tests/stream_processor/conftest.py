"""Fixtures of the stream processor tests: a Spark session with the connector jars, extra
Cassandra keyspaces, a Kafka producer of Avro trades, table readers, and the real 6-market
capture streamed once through the job for the replay and rebuild tests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from schemas import avro_codec
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from stream_processor.config import StreamSettings
from tests.conftest import Stack, migrated_keyspace

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture(scope="session", autouse=True)
def rollups_closed_at_the_end() -> Iterator[None]:
    """The streaming queries' shared rollup writers (one driver session per keyspace) closed
    when the session ends, as ``python -m stream_processor`` closes them when it stops."""
    yield
    from stream_processor.queries import close_rollups

    close_rollups()


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
    with ExitStack() as made:
        yield lambda: made.enter_context(migrated_keyspace("test_sp"))


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


CAPTURE = "binance_6sym_20240808.csv"
TABLES = {"5s": "trades_agg_5s", "1m": "trades_agg_1m", "1h": "trades_agg_1h"}


def capture_trades(shared_data: Path) -> list[dict[str, Any]]:
    """The recorded trades of six Binance markets around midnight UTC, as the collector sends
    them, in arrival order."""
    df = pd.read_csv(shared_data / CAPTURE)
    return [
        {
            "trade_id": hashlib.sha1(f"binance|{s}|{tid}".encode()).hexdigest(),
            "symbol": s,
            "price": float(p),
            "volume": float(v),
            "trade_ts": int(t),
            "conditions": [],
            "source": "replay",
            "ingest_ts": int(r) // 1_000_000,
        }
        for s, t, p, v, tid, r in zip(
            df["symbol"],
            df["t_ms"],
            df["price"],
            df["volume"],
            df["trade_id"],
            df["recv_ns"],
            strict=True,
        )
    ]


def stream_once(spark: SparkSession, settings: StreamSettings) -> None:
    """Run the job's queries until they have read everything in the topic."""
    from stream_processor.queries import start_queries

    queries = start_queries(spark, settings, once=True)
    try:
        for q in queries:
            q.awaitTermination(900)
            assert q.exception() is None
    finally:
        for q in queries:
            q.stop()


@dataclass(frozen=True)
class StreamedCapture:
    """The capture after one run of the job: its keyspace, topic and settings (checkpoints
    included, so a later run resumes), and the tables as they were right after that run."""

    trades: list[dict[str, Any]]
    cassandra: CassandraSettings
    topic: str
    settings: StreamSettings
    raw: pd.DataFrame
    bars: dict[str, pd.DataFrame]


@pytest.fixture(scope="session")
def streamed_capture(
    stack: Stack, spark: SparkSession, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamedCapture]:
    """The capture produced to a fresh topic and streamed once through the job into a fresh
    keyspace. Streaming it takes minutes, so the replay test (are the tables right?) and the
    rebuild tests (which go on from there) share the one run."""
    trades = capture_trades(shared_data)
    with migrated_keyspace("test_sp") as cassandra:
        yield _stream_capture(trades, cassandra, stack, spark, tmp_path_factory)


def _stream_capture(
    trades: list[dict[str, Any]],
    cassandra: CassandraSettings,
    stack: Stack,
    spark: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
) -> StreamedCapture:
    topic = f"sp-capture-{os.urandom(5).hex()}"
    create_topic(stack.kafka.bootstrap_servers, topic)
    produce(stack.kafka.bootstrap_servers, topic, encode_trades(trades))
    env = {
        **os.environ,
        "TRADES_TOPIC": topic,
        "CASSANDRA_KEYSPACE": cassandra.keyspace,
        "CHECKPOINT_DIR": str(tmp_path_factory.mktemp("capture") / "cp"),
        "STREAM_METRICS_PORT": "0",
    }
    settings = StreamSettings.from_env(env)
    stream_once(spark, settings)
    return StreamedCapture(
        trades=trades,
        cassandra=cassandra,
        topic=topic,
        settings=settings,
        raw=read_table(cassandra, "trades"),
        bars={bar: read_table(cassandra, table) for bar, table in TABLES.items()},
    )
