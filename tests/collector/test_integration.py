"""The collector against the offline feed and the real Kafka and Cassandra."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.feed import CsvReplay, FaultPlan, FeedServer, JsonlReplay, SimulatedMarket
from collector.finnhub import FrameParser
from collector.producer import partition_for
from schemas import avro_codec
from schemas.settings import CassandraSettings
from tests.collector.conftest import (
    CollectorRun,
    create_topic,
    gaps_in,
    read_topic,
    sent_trades,
    topic_size,
)
from tests.conftest import Stack

pytestmark = pytest.mark.integration

SYMBOLS = ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "AAPL", "MSFT")
NO_GAPS = {"COLLECTOR_GAPS": "false"}
# COLLECTOR_KAFKA_CLIENT values: both sinks must pass the end-to-end tests parametrised with this.
KAFKA_CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent"])


def _ms(value: datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000 + 0.5)


def _key(trade: dict[str, Any]) -> tuple[Any, ...]:
    return (trade["s"], float(trade["p"]), float(trade["v"]), trade["t"], tuple(trade["c"] or ()))


def _decoded_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["symbol"],
        record["price"],
        record["volume"],
        _ms(record["trade_ts"]),
        tuple(record["conditions"]),
    )


def _expected_ids(log: Path, frames: int | None = None) -> list[str]:
    parser = FrameParser(SYMBOLS, source="feed", max_future_skew_ms=10**12, max_past_skew_ms=10**12)
    lines = log.read_text(encoding="utf-8").splitlines()[:frames]
    now = int(time.time() * 1000)
    return [t.trade_id for line in lines for t in parser.parse(line, received_ms=now).trades]


@KAFKA_CLIENTS
def test_n_trades_in_exactly_n_records_out_decoded_equal(
    stack: Stack,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
    tmp_path: Path,
    client: str,
) -> None:
    n = 5000
    topic = unique_topic("coll-n")
    create_topic(stack, topic, 2)
    log = tmp_path / "sent.jsonl"
    server = feed(SimulatedMarket(SYMBOLS, rate=5000, seed=7), max_trades=n, sent_log=log)
    run = run_collector(
        server.port,
        {
            **NO_GAPS,
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(SYMBOLS),
            "COLLECTOR_KAFKA_CLIENT": client,
        },
        "--max-trades",
        str(n),
    )
    assert run.wait() == 0, run.output()
    assert f"client {client})" in run.output()
    assert server.stats.trades_sent == n
    records = read_topic(stack, topic)
    assert len(records) == n
    decoded = [avro_codec.decode(r.value) for r in records]
    sent = sent_trades(log)
    assert Counter(_decoded_key(d) for d in decoded) == Counter(_key(t) for t in sent)
    assert sorted(d["trade_id"] for d in decoded) == sorted(_expected_ids(log))
    assert {d["source"] for d in decoded} == {"feed"}
    for record, d in zip(records, decoded, strict=True):
        assert record.key == d["symbol"].encode()
        assert record.partition == partition_for(record.key, 2)
    # per-symbol order is kept: each symbol's records come in the order the feed sent them
    for symbol in SYMBOLS:
        in_kafka = sorted(
            ((r.partition, r.offset), _decoded_key(d))
            for r, d in zip(records, decoded, strict=True)
            if d["symbol"] == symbol
        )
        assert [k for _, k in in_kafka] == [_key(t) for t in sent if t["s"] == symbol]
    assert read_topic(stack, f"{topic}.dlq") == []
    assert "stopped cleanly: 5000 trades" in run.output()


def test_junk_goes_to_the_dlq_with_reasons_and_trades_are_unaffected(
    stack: Stack,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
) -> None:
    n = 1500
    topic = unique_topic("coll-junk")
    server = feed(
        SimulatedMarket(SYMBOLS, rate=3000, seed=3),
        FaultPlan(junk_every=4, error_every=50),
        max_trades=n,
    )
    run = run_collector(
        server.port,
        {**NO_GAPS, "TRADES_TOPIC": topic, "SYMBOLS": ",".join(SYMBOLS)},
        "--max-trades",
        str(n),
    )
    assert run.wait() == 0, run.output()
    assert len(read_topic(stack, topic)) == n
    letters = [json.loads(r.value) for r in read_topic(stack, f"{topic}.dlq")]
    # junk sent after the collector's last trade may not have been read: compare what was read
    reasons = Counter(letter["reason"] for letter in letters)
    assert sum(reasons.values()) >= sum(server.stats.junk_sent.values()) - 1
    assert reasons <= server.stats.junk_sent
    assert len(reasons) >= 9  # the catalogue's reasons all show up
    for letter in letters:
        assert {"reason", "detail", "raw", "source", "received_at", "stage"} <= letter.keys()
        assert letter["source"] == "feed" and letter["stage"] == "collector"
        assert letter["detail"] and "\n" not in letter["detail"]
        datetime.fromisoformat(letter["received_at"])
    unsub = [x for x in letters if x["reason"] == "unsubscribed_symbol"]
    assert unsub and all(json.loads(x["raw"])["s"] == "NOT:SUBSCRIBED" for x in unsub)
    assert "server error frame: Feed fault injection" in run.output()


def test_a_dropped_connection_reconnects_and_records_the_gap(
    stack: Stack,
    test_keyspace: CassandraSettings,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
) -> None:
    n = 3000
    topic = unique_topic("coll-drop")
    server = feed(
        SimulatedMarket(SYMBOLS, rate=3000, seed=5), FaultPlan(drop_every=1000), max_trades=n
    )
    started = datetime.now(UTC)
    run = run_collector(
        server.port,
        {
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(SYMBOLS),
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "COLLECTOR_BACKOFF_INITIAL": "0.2",
        },
        "--max-trades",
        str(n),
    )
    assert run.wait() == 0, run.output()
    assert server.stats.drops >= 2 and server.stats.connections >= 3
    assert len(read_topic(stack, topic)) == n  # the feed pauses while nobody listens: no loss
    pid = run.process.pid
    gaps = [g for g in gaps_in(test_keyspace) if g.collector_id.endswith(f":{pid}")]
    assert len(gaps) >= 2
    for gap in gaps:
        assert gap.reason == "server_closed"
        assert list(gap.symbols) == list(SYMBOLS)
        assert _ms(started) - 1000 <= _ms(gap.gap_start) <= _ms(gap.gap_end)
        assert gap.duration_ms == _ms(gap.gap_end) - _ms(gap.gap_start)
        assert gap.day == gap.gap_start.date()
    assert re.search(r"recorded gap .* reason server_closed", run.output())


def test_a_stalled_feed_is_detected_and_replaced(
    stack: Stack,
    test_keyspace: CassandraSettings,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
) -> None:
    n = 1000
    topic = unique_topic("coll-stall")
    server = feed(
        SimulatedMarket(SYMBOLS, rate=2000, seed=9),
        FaultPlan(stall_after=300, stall_s=4.0),
        max_trades=n,
        ping_interval_s=0.2,
    )
    run = run_collector(
        server.port,
        {
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(SYMBOLS),
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "COLLECTOR_STALL_TIMEOUT": "1.5",
            "COLLECTOR_BACKOFF_INITIAL": "0.2",
        },
        "--max-trades",
        str(n),
    )
    assert run.wait() == 0, run.output()
    pid = run.process.pid
    gaps = sorted(
        (g for g in gaps_in(test_keyspace) if g.collector_id.endswith(f":{pid}")),
        key=lambda g: g.gap_start,
    )
    assert gaps and all(g.reason == "stall" for g in gaps)
    # the feed is silent for 4 s: back-to-back gaps (one per stalled connection) cover it, but
    # for the tail the last connection was up and had not yet been silent for the stall timeout
    assert all(g.duration_ms >= 1500 for g in gaps)
    assert _ms(gaps[-1].gap_end) - _ms(gaps[0].gap_start) >= 4000 - 1500
    for before, after in zip(gaps, gaps[1:], strict=False):
        assert _ms(after.gap_start) == _ms(before.gap_end) or after.gap_start > before.gap_end
    # trades lost in a stall are the server's; here the feed was paused, so all arrive
    assert len(read_topic(stack, topic)) == n


@KAFKA_CLIENTS
def test_sigterm_mid_stream_loses_nothing(
    stack: Stack,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
    tmp_path: Path,
    client: str,
) -> None:
    topic = unique_topic("coll-term")
    log = tmp_path / "sent.jsonl"
    server = feed(SimulatedMarket(SYMBOLS, rate=4000, seed=11), sent_log=log)
    run = run_collector(
        server.port,
        {
            **NO_GAPS,
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(SYMBOLS),
            "COLLECTOR_LINGER": "200ms",
            "COLLECTOR_KAFKA_CLIENT": client,
        },
    )
    # Mid-stream by what the collector has produced, not by what the feed has sent: under load
    # the collector can be thousands of trades behind the feed.
    deadline = time.monotonic() + 90
    while topic_size(stack, topic) < 3000 and time.monotonic() < deadline:
        time.sleep(0.2)
    run.terminate()
    assert run.wait() == 0, run.output()
    match = re.search(
        r"stopped cleanly: (\d+) trades in [\d.]+ s \(\d+/s\), (\d+) frames", run.output()
    )
    assert match, run.output()
    produced = int(match.group(1))
    assert produced >= 3000
    records = read_topic(stack, topic)
    assert len(records) == produced
    # what reached Kafka is exactly the first frames the feed sent, none missing
    decoded = Counter(_decoded_key(avro_codec.decode(r.value)) for r in records)
    lines = log.read_text(encoding="utf-8").splitlines()
    count, frames = 0, 0
    while count < produced:
        count += len(json.loads(lines[frames])["data"])
        frames += 1
    assert Counter(_key(t) for t in sent_trades(log, frames)) == decoded


def test_real_recorded_trades_replay_through_the_collector(
    stack: Stack,
    shared_data: Path,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
) -> None:
    source = CsvReplay(shared_data / "binance_6sym_20240808.csv", rate=20000, limit=8000)
    topic = unique_topic("coll-csv")
    server = feed(source, max_trades=8000)
    run = run_collector(
        server.port,
        {
            **NO_GAPS,
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(source.symbols),
            "COLLECTOR_SOURCE": "replay",
        },
        "--max-trades",
        "8000",
    )
    assert run.wait() == 0, run.output()
    records = read_topic(stack, topic)
    assert len(records) == 8000
    decoded = [avro_codec.decode(r.value) for r in records]
    # identical trades in one frame are separate trades: ids stay unique
    assert len({d["trade_id"] for d in decoded}) == 8000
    assert Counter(d["symbol"] for d in decoded) == Counter(r[0] for r in source.rows)


def test_a_recorded_run_replayed_without_rebasing_overwrites_its_own_ids(
    stack: Stack,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
    tmp_path: Path,
) -> None:
    n = 3000
    record = tmp_path / "live.jsonl"
    env = {**NO_GAPS, "SYMBOLS": ",".join(SYMBOLS)}

    def collect(server: FeedServer, topic: str, *args: str, **extra: str) -> list[dict[str, Any]]:
        run = run_collector(server.port, {**env, **extra, "TRADES_TOPIC": topic}, *args)
        assert run.wait() == 0, run.output()
        return [avro_codec.decode(r.value) for r in read_topic(stack, topic)]

    live_server = feed(SimulatedMarket(SYMBOLS, rate=3000, seed=11), max_trades=n)
    live = collect(
        live_server, unique_topic("coll-rec"), "--max-trades", str(n), "--record", str(record)
    )
    replayed = collect(
        feed(JsonlReplay(record, rebase=False), max_trades=n),
        unique_topic("coll-replay"),
        "--max-trades",
        str(n),
        COLLECTOR_SOURCE="replay",
    )
    rebased = collect(
        feed(JsonlReplay(record), max_trades=n),
        unique_topic("coll-rebased"),
        "--max-trades",
        str(n),
        COLLECTOR_SOURCE="replay",
    )
    live_ids = sorted(d["trade_id"] for d in live)
    assert len(live_ids) == n and len(set(live_ids)) == n
    assert {d["source"] for d in live} == {"feed"} and {d["source"] for d in replayed} == {"replay"}
    # the same (symbol, day), trade time and id: each replayed trade overwrites its live row
    assert sorted((d["symbol"], d["trade_ts"], d["trade_id"]) for d in replayed) == sorted(
        (d["symbol"], d["trade_ts"], d["trade_id"]) for d in live
    )
    # a rebased replay is new trades at new times: new ids, added next to the live rows
    assert len(rebased) == n and not {d["trade_id"] for d in rebased} & set(live_ids)
