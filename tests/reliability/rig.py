"""The whole pipeline as an operator runs it, for the fault matrix: the offline feed, the
collector and the stream processor, each a supervised program (``infra.supervisor``) of a
private STATE_DIR, writing to a private topic and keyspace of the running stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.config import InfraConfig
from infra.pipeline import PipelineProcess
from infra.supervisor import Supervisor
from schemas.runtime.cassandra import connect, driver_errors
from schemas.settings import CassandraSettings
from tests.conftest import Stack, run_infra
from tests.infra.test_stack import free_port
from tests.reliability.accounting import (
    Gap,
    Outcome,
    TradeKey,
    account,
    dead_letter_keys,
    key_of,
    sent_times,
)
from tests.stream_processor.conftest import create_topic, read_table
from tests.stream_processor.oracle import assert_bars_equal, expected_bars

SYMBOLS = "BINANCE:BTCUSDT,BINANCE:ETHUSDT,AAPL,MSFT"
RATE = 200  # trades/s offered by the feed


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Seconds it took ``condition`` to hold."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - start


def create_replicated_topic(
    bootstrap: str, topic: str, partitions: int, replication_factor: int, min_insync: int
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="reliability")
    try:
        admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs={"min.insync.replicas": str(min_insync)},
                )
            ]
        )
    finally:
        admin.close()


class Rig:
    """``replication``: (copies, min.insync.replicas) of the rig's topic on a Kafka cluster; one
    copy on the single-node stack."""

    def __init__(
        self,
        stack: Stack,
        cassandra: CassandraSettings,
        home: Path,
        replication: tuple[int, int] = (1, 1),
    ) -> None:
        self.stack, self.cassandra, self.home = stack, cassandra, home
        state = home / "state"
        state.mkdir(parents=True)
        print(f"fault matrix: logs under {state / 'demo'}")
        # The stack's generated roles: the collector and stream processor read them from here.
        shutil.copy(stack.state_dir / "credentials.env", state / "credentials.env")
        self.config = InfraConfig.from_env({**os.environ, "STATE_DIR": str(state)})
        self.topic = f"reliability-{uuid.uuid4().hex[:8]}"
        if replication == (1, 1):
            create_topic(stack.kafka.bootstrap_servers, self.topic, partitions=2)
        else:
            create_replicated_topic(stack.kafka.bootstrap_servers, self.topic, 2, *replication)
        self.feed_port = free_port()
        self.checkpoints = home / "checkpoints"
        self.env = {
            **os.environ,
            "STATE_DIR": str(state),
            "TRADES_TOPIC": self.topic,
            "CASSANDRA_KEYSPACE": cassandra.keyspace,
            "CHECKPOINT_DIR": str(self.checkpoints),
            "STREAM_METRICS_PORT": "0",
            "COLLECTOR_METRICS_PORT": "0",
            "FINNHUB_WS_URL": f"ws://127.0.0.1:{self.feed_port}",
            "SYMBOLS": SYMBOLS,
            "COLLECTOR_BACKOFF_MAX": "2",
            "COLLECTOR_STALL_TIMEOUT": "5",
            "SINK_RETRY_TIMEOUT": "90s",
            # A restarted job catches up in bounded batches, not one giant one, so a batch
            # running 2 minutes is wedged: after a Cassandra restart the connector's Java
            # driver can block forever in Session.refreshSchema (scylladb/java-driver#343);
            # the job then exits 3 and supervisord restarts it from its checkpoint. A restarted
            # job's first batch took 17-24 s in the clean-clone run of 2026-11-30, so 75 s is
            # three times that; every second of it adds to the Cassandra row's recovery.
            "MAX_OFFSETS_PER_TRIGGER": "20000",
            "BATCH_STALL_TIMEOUT": "75s",
            "SPARK_DRIVER_MEMORY": "1g",
            "LOG_LEVEL": "WARNING",
        }
        self.collector = PipelineProcess(self.config, "collector", [], self.env)
        self.stream_processor = PipelineProcess(self.config, "stream_processor", [], self.env)
        self.feed: PipelineProcess | None = None
        self.segment = 0
        self.sent_log: Path | None = None

    # --- the long-running steps -----------------------------------------------------------
    def start(self) -> None:
        self.stream_processor.start()
        self.collector.start()

    def stop(self) -> None:
        for step in (self.feed, self.collector, self.stream_processor):
            if step is not None:
                step.stop()
        Supervisor(self.config).shutdown()

    def start_feed(self, *fault_args: str) -> None:
        """A new feed segment on the same port: its own sent log, so each fault is counted
        over the trades sent while it was in play."""
        self.segment += 1
        self.sent_log = self.home / f"sent-{self.segment}.jsonl"
        self.feed = PipelineProcess(
            self.config,
            "feed",
            [
                "--simulate",
                "--symbols",
                SYMBOLS,
                "--rate",
                str(RATE),
                "--seed",
                str(self.segment),
                "--port",
                str(self.feed_port),
                "--sent-log",
                str(self.sent_log),
                "--ping-interval",
                "2",
                *fault_args,
            ],
            self.env,
            {"feed": self.feed_port},
        )
        self.feed.start()

    def stop_feed(self) -> None:
        assert self.feed is not None
        self.feed.stop()

    def feed_stat(self, name: str) -> int:
        """A figure from the last feed's closing line ("...; junk 0, hostile 10915, ...")."""
        assert self.feed is not None
        lines = [
            line for line in self.feed.stdout_log.read_text().splitlines() if "stopped:" in line
        ]
        match = re.search(rf"\b{name} (\d+)", lines[-1]) if lines else None
        assert match, f"no '{name}' in the feed's closing line"
        return int(match.group(1))

    def sent(self) -> list[TradeKey]:
        return [key for key, _ in self.sent_at()]

    def sent_at(self) -> list[tuple[TradeKey, int]]:
        assert self.sent_log is not None
        return sent_times(self.sent_log.read_text(encoding="utf-8").splitlines())

    def trade_frames_sent(self) -> int:
        if self.sent_log is None or not self.sent_log.exists():
            return 0
        return len(self.sent_log.read_text(encoding="utf-8").splitlines())

    def trades_sent(self) -> int:
        if self.sent_log is None or not self.sent_log.exists():
            return 0
        return len(self.sent())

    # --- what the pipeline stored ---------------------------------------------------------
    def stored(self) -> list[TradeKey]:
        rows = read_table(self.cassandra, "trades")
        if rows.empty:
            return []
        ts = rows["trade_ts"].map(_epoch_ms)
        return [
            key_of(s, t, p, v, c)
            for s, t, p, v, c in zip(
                rows["symbol"], ts, rows["price"], rows["volume"], rows["conditions"], strict=True
            )
        ]

    def stored_count(self) -> int:
        cluster, session = connect(self.cassandra, keyspace=self.cassandra.keyspace)
        try:
            return int(session.execute("SELECT count(*) FROM trades", timeout=60).one()[0])
        finally:
            cluster.shutdown()

    def stored_after(self, since_ms: int) -> bool:
        """A trade the collector received after ``since_ms`` is in Cassandra. (Arrival time: the
        feed's market clock pauses while no collector listens, so event time lags behind.)"""
        symbol = SYMBOLS.split(",")[0]
        today = datetime.now(UTC).date()
        cluster, session = connect(self.cassandra, keyspace=self.cassandra.keyspace)
        try:
            for day in (today, today - timedelta(days=1)):
                rows = session.execute(
                    "SELECT ingest_ts FROM trades WHERE symbol = %s AND day = %s LIMIT 200",
                    (symbol, day),
                    timeout=30,
                )
                if any(_epoch_ms(row.ingest_ts) > since_ms for row in rows):
                    return True
            return False
        finally:
            cluster.shutdown()

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every record of the DLQ topic, read up to its end offsets (not until a quiet
        period, which a loaded machine can outlast)."""
        from kafka import KafkaConsumer, TopicPartition

        topic = f"{self.topic}.dlq"
        consumer = KafkaConsumer(
            bootstrap_servers=self.stack.kafka.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions)
            letters: list[dict[str, Any]] = []
            deadline = time.monotonic() + 300
            while any(consumer.position(tp) < n for tp, n in end.items()):
                assert time.monotonic() < deadline, "the DLQ did not read to its end"
                for batch in consumer.poll(timeout_ms=1000).values():
                    letters.extend(json.loads(record.value) for record in batch)
            return letters
        finally:
            consumer.close()

    def gaps(self) -> list[Gap]:
        rows = read_table(self.cassandra, "collector_gaps")
        return (
            [
                Gap(_epoch_ms(r.gap_start), _epoch_ms(r.gap_end), tuple(r.symbols or ()))
                for r in rows.itertuples()
            ]
            if not rows.empty
            else []
        )

    def drain(self, timeout_s: float = 900) -> None:
        """Wait until both queries of the stream processor have committed every record of the
        topic and either every trade this segment sent is accounted for or nothing new was
        stored for 10 s. (Spark's own commits, not a quiet period: a restarted job's first
        batch can take minutes on a loaded machine, and the bars query runs behind the raw
        one.)"""
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                count = self.stored_count()
            except driver_errors():
                # A full count is one request: on a loaded three-node ring it can time out.
                time.sleep(3)
                continue
            if count != last:
                last, since = count, time.monotonic()
            if self.job_caught_up() and (
                time.monotonic() - since > 10 or self.outcome("drain", None, bars=False).lost == 0
            ):
                return
            time.sleep(3)

    def job_caught_up(self) -> bool:
        """Every query's last committed batch ends at the topic's end offsets."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.stack.kafka.bootstrap_servers)
        try:
            partitions = [
                TopicPartition(self.topic, p)
                for p in consumer.partitions_for_topic(self.topic) or ()
            ]
            end = {str(tp.partition): n for tp, n in consumer.end_offsets(partitions).items()}
        finally:
            consumer.close()
        queries = [d for d in self.checkpoints.iterdir() if (d / "offsets").is_dir()]
        if len(queries) < 2:  # the raw trades and the bars
            return False
        for query in queries:
            commits = [int(n.name) for n in (query / "commits").glob("[0-9]*")]
            if not commits:
                return False
            offsets = json.loads(
                (query / "offsets" / str(max(commits))).read_text().splitlines()[-1]
            )
            if any(offsets[self.topic].get(p, 0) < n for p, n in end.items()):
                return False
        return True

    def outcome(
        self, fault: str, recover_s: float | None, note: str = "", bars: bool = True
    ) -> Outcome:
        """Accounting for this segment's trades (the feed's seed differs per segment)."""
        sent_at = self.sent_at()
        sent = [key for key, _ in sent_at]
        stored_now = self.stored()
        segment_keys = set(sent)
        stored = [k for k in stored_now if k in segment_keys]
        letters = [k for k in dead_letter_keys(self.dead_letters()) if k in segment_keys]
        result = account(fault, sent, stored, letters, self.gaps(), sent_at=dict(sent_at))
        return Outcome(
            **{
                **result.as_dict(),
                "recover_s": recover_s,
                "bars_match": self.bars_match() if bars else None,
                "note": note,
            }
        )

    def bars_match(self) -> bool:
        trades = read_table(self.cassandra, "trades")
        bars = read_table(self.cassandra, "trades_agg_5s")
        if trades.empty or bars.empty:
            return False
        # In the order they reached Kafka (one symbol, one partition): the bars' open and close
        # of trades in the same millisecond follow it.
        frame = trades.assign(trade_ts=trades["trade_ts"].map(_epoch_ms)).sort_values(
            ["symbol", "kafka_offset"], kind="mergesort"
        )
        try:
            assert_bars_equal(bars, expected_bars(frame, "5s"))
        except AssertionError:
            return False
        return True


def restart_engine(service: str) -> None:
    """``python -m infra restart`` retried while the old listener's port is still held."""
    deadline = time.monotonic() + 180
    while True:
        try:
            run_infra("restart", service)
            return
        except RuntimeError as exc:
            if "already in use" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(5)


def now_ms() -> int:
    return int(time.time() * 1000)


def _epoch_ms(value: Any) -> int:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(stamp.timestamp() * 1000)
    return int(value)
