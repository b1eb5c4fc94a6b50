"""Fixtures of the collector tests: an in-process offline feed, the collector as a real
subprocess (``python -m collector``), and Kafka topic readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from collector.feed import FaultPlan, FeedOptions, FeedServer, TradeSource
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT, Stack


@dataclass
class CollectorRun:
    """A ``python -m collector`` subprocess; its combined output goes to ``log``."""

    process: subprocess.Popen[bytes]
    log: Path
    _fh: IO[bytes]

    def wait(self, timeout_s: float = 120) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"collector did not finish in {timeout_s} s:\n{self.output()}"
            ) from None
        finally:
            self._fh.close()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def feed() -> Iterator[Callable[..., FeedServer]]:
    """Factory: start an offline feed on a free port in this process; stopped after the test."""
    servers: list[FeedServer] = []

    def start(source: TradeSource, faults: FaultPlan | None = None, **options: Any) -> FeedServer:
        server = FeedServer(source, FeedOptions(port=0, **options), faults)
        server.start_in_thread()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def run_collector(
    tmp_path: Path,
) -> Iterator[Callable[..., CollectorRun]]:
    """Factory: start ``python -m collector`` against a feed port with extra env and args."""
    runs: list[CollectorRun] = []

    def start(port: int, env: dict[str, str], *args: str) -> CollectorRun:
        log = tmp_path / f"collector-{len(runs)}.log"
        fh = open(log, "wb")  # closed by CollectorRun.wait
        full_env = {
            **os.environ,
            "FINNHUB_WS_URL": f"ws://127.0.0.1:{port}",
            "COLLECTOR_METRICS_PORT": "0",
            "COLLECTOR_PROGRESS_INTERVAL": "1",
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "collector", *args],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        run = CollectorRun(process, log, fh)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(10)


def create_topic(stack: Stack, name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def topic_size(stack: Stack, topic: str) -> int:
    """Records in ``topic`` so far (the sum of its partitions' end offsets; 0 before it exists)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=stack.kafka.bootstrap_servers, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def read_topic(stack: Stack, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the beginning to the current end)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=stack.kafka.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: could not read to the end in {timeout_s} s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def sent_trades(log: Path, frames: int | None = None) -> list[dict[str, Any]]:
    """Trades of the feed's sent log, in order (of the first ``frames`` frames if given)."""
    lines = log.read_text(encoding="utf-8").splitlines()
    if frames is not None:
        lines = lines[:frames]
    return [d for line in lines for d in json.loads(line)["data"]]


def gaps_in(settings: CassandraSettings) -> list[Any]:
    from schemas.runtime.cassandra import connect

    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        return list(session.execute("SELECT * FROM collector_gaps"))
    finally:
        cluster.shutdown()
