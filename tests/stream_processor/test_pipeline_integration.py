"""The streaming queries against the real Kafka, Spark and Cassandra, compared with pandas."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from schemas import avro_codec
from schemas.settings import CassandraSettings
from stream_processor.config import StreamSettings
from stream_processor.queries import close_rollups, start_queries
from tests.conftest import Stack, open_cassandra_clusters
from tests.stream_processor.conftest import (
    consume_all,
    create_topic,
    encode_trades,
    make_trade,
    produce,
    read_table,
)
from tests.stream_processor.oracle import BAR_MS, assert_bars_equal, cassandra_trades, expected_bars

pytestmark = pytest.mark.integration

T0 = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC: a day and an hour boundary
WATERMARK_MS = 10_000


def _settings(
    stack: Stack, cassandra: CassandraSettings, topic: str, tmp: Path, **extra: str
) -> StreamSettings:
    env = {
        **extra,
        **os.environ,
        "TRADES_TOPIC": topic,
        "CASSANDRA_KEYSPACE": cassandra.keyspace,
        "CHECKPOINT_DIR": str(tmp / "checkpoints"),
        "BARS_WATERMARK": f"{WATERMARK_MS} ms",
        "STREAM_METRICS_PORT": "0",
    }
    return StreamSettings.from_env(env)


def _phase1() -> list[dict[str, Any]]:
    a, b, q = "TEST:AAA", "TEST:BBB", "TEST:QQQ"
    return [
        make_trade(q, T0 + 500, 7.0, 1.0),  # then QQQ goes quiet
        # three trades in one millisecond, sent in the exchange's order (not their ids' order):
        # the bar opens at the first one sent
        make_trade(a, T0 + 100, 10.0, 1.0, 0),
        make_trade(a, T0 + 100, 10.5, 2.0, 1),
        make_trade(a, T0 + 100, 9.5, 0.5, 2),
        make_trade(a, T0 + 1_200, 11.0, 3.0, conditions=["1", "12"]),
        make_trade(a, T0 + 7_300, 12.0, 1.0),  # out of order inside the watermark
        make_trade(a, T0 + 5_000, 11.5, 1.0),
        make_trade(a, T0 + 4_999, 11.2, 0.25),
        make_trade(b, T0 + 3_000, 100.0, 0.0),  # a bar with zero volume: vwap is null
        make_trade(b, T0 + 21_000, 101.0, 2.0),
        make_trade(b, T0 + 21_000, 101.0, 2.0, 1),  # identical trade, a different trade
        make_trade(a, T0 + 57_000, 13.0, 1.0),
        make_trade(a, T0 + 60_000, 14.0, 1.0),  # moves the watermark to T0 + 50 s
    ]


def _phase2() -> list[dict[str, Any]]:
    a = "TEST:AAA"
    return [
        make_trade(a, T0 + 2_000, 8.0, 1.0),  # 5-s bar closed, minute open: in no bar
        make_trade(a, T0 - 30_000, 5.0, 1.0),  # a closed hour: raw table only
        make_trade(a, T0 + 56_000, 15.0, 4.0),  # inside: corrects the [55 s, 60 s) bar
        make_trade(a, T0 + 57_000, 12.5, 1.0, 7),  # same ms as a phase-1 trade
    ]


def _malformed() -> list[tuple[bytes | None, bytes | None]]:
    good = make_trade("TEST:AAA", T0 + 1_000, 10.0, 1.0, 99)
    return [
        (b"TEST:AAA", b"not avro at all"),
        (b"TEST:AAA", avro_codec.header() + b"\xff\xff\xff"),
        (b"TEST:AAA", avro_codec.encode(good)[:14]),
        (b"TEST:AAA", avro_codec.encode({**good, "price": -1.0})),
        (b"TEST:AAA", avro_codec.encode({**good, "volume": float("nan")})),
        # two 5-s bars of one minute at 1e308 overflowed the 1-minute rollup and failed the query
        (b"TEST:AAA", avro_codec.encode({**good, "price": 1e308})),
        (b"TEST:AAA", avro_codec.encode({**good, "price": 1e308, "trade_ts": T0 + 6_000})),
        (b"TEST:AAA", avro_codec.encode({**good, "volume": 1e300, "trade_ts": T0 + 7_000})),
        (b"TEST:AAA", None),  # a tombstone
    ]


def _late_mask(trades: pd.DataFrame, phase: pd.Series, watermark: int) -> pd.Series:
    """The phase-2 trades whose 5-s bar had closed: the 1-m and 1-h bars are rolled up from
    the 5-s bars, so these are left out of every bar size."""
    size = BAR_MS["5s"]
    window_end = (trades["trade_ts"] // size) * size + size
    return (phase == 2) & (window_end <= watermark)


def test_known_trade_set_matches_pandas(
    stack: Stack,
    spark: Any,
    keyspace_factory: Callable[[], CassandraSettings],
    unique_topic: Callable[[str], str],
    tmp_path: Path,
) -> None:
    cassandra = keyspace_factory()
    topic = unique_topic("sp-known")
    create_topic(stack.kafka.bootstrap_servers, topic)
    settings = _settings(stack, cassandra, topic, tmp_path)
    p1, p2 = _phase1(), _phase2()
    produce(stack.kafka.bootstrap_servers, topic, encode_trades(p1) + _malformed())
    clusters_before = open_cassandra_clusters()
    queries = start_queries(spark, settings)
    try:
        for q in queries:
            q.processAllAvailable()
        produce(stack.kafka.bootstrap_servers, topic, encode_trades(p2))
        for q in queries:
            q.processAllAvailable()
        late = {
            q.name: sum(
                op["numRowsDroppedByWatermark"]
                for p in q.recentProgress
                for op in p["stateOperators"]
            )
            for q in queries
        }
    finally:
        for q in queries:
            q.stop()
    # the rollups' driver session closes with the job, as python -m stream_processor does
    close_rollups()
    assert open_cassandra_clusters() <= clusters_before

    trades = pd.DataFrame(p1 + p2)
    phase = pd.Series([1] * len(p1) + [2] * len(p2))
    watermark = max(t["trade_ts"] for t in p1) - WATERMARK_MS

    raw = cassandra_trades(read_table(cassandra, "trades"))
    want = trades.sort_values(["symbol", "trade_ts", "trade_id"]).reset_index(drop=True)
    assert len(raw) == len(trades) == 17
    for col in ("symbol", "trade_ts", "trade_id", "source", "ingest_ts", "conditions"):
        assert raw[col].tolist() == want[col].tolist(), col
    np.testing.assert_array_equal(raw["price"], want["price"])
    np.testing.assert_array_equal(raw["volume"], want["volume"])
    days = pd.to_datetime(want["trade_ts"], unit="ms", utc=True).dt.date.astype(str)
    assert raw["day"].astype(str).tolist() == days.tolist()

    dropped = _late_mask(trades, phase, watermark)
    for bar, table in (("5s", "trades_agg_5s"), ("1m", "trades_agg_1m"), ("1h", "trades_agg_1h")):
        assert_bars_equal(read_table(cassandra, table), expected_bars(trades, bar, dropped))
    assert late == {"trades_raw": 0, "bars_5s": int(dropped.sum())}
    assert dropped.sum() == 2  # one inside an open minute, one before the hour

    letters = consume_all(stack.kafka.bootstrap_servers, settings.dlq_topic)
    reasons = sorted(json.loads(v)["reason"].split(":")[0] for _, v in letters)
    assert reasons == ["avro", "avro", "header", *["price"] * 3, "value", "volume", "volume"]
    offsets = sorted(json.loads(v)["offset"] for _, v in letters)
    assert len(set(offsets)) == len(offsets)


def test_dedupe_counts_republished_trades_once(
    stack: Stack,
    spark: Any,
    keyspace_factory: Callable[[], CassandraSettings],
    unique_topic: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """By default: trades published twice, in one batch and across batches, inside the
    watermark, are counted once; the tables equal the oracle over the distinct trades."""
    cassandra = keyspace_factory()
    topic = unique_topic("sp-dedupe")
    create_topic(stack.kafka.bootstrap_servers, topic)
    settings = _settings(stack, cassandra, topic, tmp_path)
    p1, p2 = _phase1(), _phase2()
    again_now, again_later = p1[1:4], p1[-2:]  # same batch; next batch, still inside
    produce(stack.kafka.bootstrap_servers, topic, encode_trades(p1 + again_now))
    queries = start_queries(spark, settings)
    try:
        for q in queries:
            q.processAllAvailable()
        produce(stack.kafka.bootstrap_servers, topic, encode_trades(again_later + p2))
        for q in queries:
            q.processAllAvailable()
    finally:
        for q in queries:
            q.stop()

    trades = pd.DataFrame(p1 + p2)
    phase = pd.Series([1] * len(p1) + [2] * len(p2))
    dropped = _late_mask(trades, phase, max(t["trade_ts"] for t in p1) - WATERMARK_MS)
    assert len(read_table(cassandra, "trades")) == len(trades)
    for bar, table in (("5s", "trades_agg_5s"), ("1m", "trades_agg_1m"), ("1h", "trades_agg_1h")):
        assert_bars_equal(read_table(cassandra, table), expected_bars(trades, bar, dropped))
    assert (tmp_path / "checkpoints" / "bars_5s_dedup").is_dir()


def test_one_future_trade_cannot_drop_on_time_trades(
    stack: Stack,
    spark: Any,
    keyspace_factory: Callable[[], CassandraSettings],
    unique_topic: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """A trade stamped 59 s after its Kafka time goes to the DLQ instead of moving the watermark
    of every symbol 49 s ahead; one stamped just inside the skew limit moves it to at most its
    arrival + skew - watermark, so trades lagging their arrival by less than that still count."""
    cassandra = keyspace_factory()
    topic = unique_topic("sp-future")
    create_topic(stack.kafka.bootstrap_servers, topic)
    settings = _settings(stack, cassandra, topic, tmp_path)
    lag_ok = settings.watermark_ms - settings.max_future_skew_ms - 1_000
    a, b, c = "TEST:AAA", "TEST:BBB", "TEST:CCC"
    now = int(time.time() * 1000)
    p1 = [
        make_trade(a, now - 3_000, 10.0, 1.0),
        make_trade(b, now - 2_000, 20.0, 1.0),
        make_trade(c, now + settings.max_future_skew_ms - 300, 30.0, 1.0),  # inside the limit
    ]
    poison = make_trade(c, now + 59_000, 31.0, 1.0)
    produce(stack.kafka.bootstrap_servers, topic, encode_trades([*p1, poison]))
    queries = start_queries(spark, settings)
    try:
        for q in queries:
            q.processAllAvailable()
        now = int(time.time() * 1000)
        p2 = [
            make_trade(a, now, 11.0, 2.0),
            make_trade(b, now - 1, 21.0, 2.0),
            make_trade(a, now - lag_ok, 12.0, 0.5),  # late, but by less than the policy allows
        ]
        produce(stack.kafka.bootstrap_servers, topic, encode_trades(p2))
        for q in queries:
            q.processAllAvailable()
    finally:
        for q in queries:
            q.stop()

    trades = pd.DataFrame(p1 + p2)
    for bar, table in (("5s", "trades_agg_5s"), ("1m", "trades_agg_1m"), ("1h", "trades_agg_1h")):
        assert_bars_equal(read_table(cassandra, table), expected_bars(trades, bar))
    assert len(read_table(cassandra, "trades")) == len(trades)
    letters = [
        json.loads(v) for _, v in consume_all(stack.kafka.bootstrap_servers, settings.dlq_topic)
    ]
    assert [(d["trade_id"], d["reason"].split(":")[0]) for d in letters] == [
        (poison["trade_id"], "trade_ts")
    ]
