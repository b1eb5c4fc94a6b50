"""Replay of the real 6-market capture: uninterrupted, and after kill -9. Every run must end with
tables equal to an independent pandas computation. (Restarts of Kafka and Cassandra under a running
job are rows of the fault matrix, ``tests/reliability``, which restarts the engines alone.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT, Stack
from tests.stream_processor.conftest import (
    TABLES,
    StreamedCapture,
    capture_trades,
    create_topic,
    encode_trades,
    produce,
    read_table,
)
from tests.stream_processor.oracle import assert_bars_equal, cassandra_trades, expected_bars

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def capture(shared_data: Path) -> list[dict[str, Any]]:
    return capture_trades(shared_data)


def _count(settings: CassandraSettings, table: str) -> int:
    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        return int(session.execute(f"SELECT count(*) FROM {table}", timeout=60).one()[0])
    finally:
        cluster.shutdown()


def assert_tables_match(cassandra: CassandraSettings, trades: list[dict[str, Any]]) -> None:
    assert_tables_equal(
        read_table(cassandra, "trades"),
        {bar: read_table(cassandra, table) for bar, table in TABLES.items()},
        trades,
    )


def assert_tables_equal(
    raw_rows: pd.DataFrame, bars: dict[str, pd.DataFrame], trades: list[dict[str, Any]]
) -> None:
    """The raw table holds exactly ``trades`` and every bar table equals a pandas recompute."""
    want = pd.DataFrame(trades).sort_values(["symbol", "trade_ts", "trade_id"])
    want = want.reset_index(drop=True)
    raw = cassandra_trades(raw_rows)
    assert len(raw) == len(want)
    assert raw.groupby("symbol").size().to_dict() == want.groupby("symbol").size().to_dict()
    for col in ("symbol", "trade_ts", "trade_id", "ingest_ts"):
        assert raw[col].tolist() == want[col].tolist(), col
    np.testing.assert_array_equal(raw["price"], want["price"])
    np.testing.assert_array_equal(raw["volume"], want["volume"])
    # the capture crosses midnight UTC, so both days must be there
    assert sorted(raw["day"].astype(str).unique()) == ["2024-08-08", "2024-08-09"]
    frame = pd.DataFrame(trades)
    for bar, rows in bars.items():
        assert_bars_equal(rows, expected_bars(frame, bar))


def _job_env(cassandra: CassandraSettings, topic: str, checkpoints: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TRADES_TOPIC": topic,
        "CASSANDRA_KEYSPACE": cassandra.keyspace,
        "CHECKPOINT_DIR": str(checkpoints),
        "STREAM_METRICS_PORT": "0",
        "SPARK_DRIVER_MEMORY": "1g",
        "LOG_LEVEL": "WARNING",
    }


def _start_job(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_processor", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class PacedProducer(threading.Thread):
    """Produces trades in arrival order in small chunks, the way a live feed arrives: each
    chunk spans a few seconds of event time, well inside the watermark."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        trades: list[dict[str, Any]],
        chunk: int = 500,
        pause_s: float = 0.25,
    ) -> None:
        super().__init__(daemon=True)
        self.args = (bootstrap, topic, trades, chunk, pause_s)
        self.error: BaseException | None = None

    def run(self) -> None:
        bootstrap, topic, trades, chunk, pause_s = self.args
        try:
            for start in range(0, len(trades), chunk):
                produce(bootstrap, topic, encode_trades(trades[start : start + chunk]))
                time.sleep(pause_s)
        except BaseException as exc:  # reported by the test thread
            self.error = exc


@pytest.fixture
def job_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "job.log"
    yield log
    if log.exists():
        print(log.read_text(errors="replace")[-4000:])


def test_replay_of_real_capture_matches_pandas(streamed_capture: StreamedCapture) -> None:
    """One uninterrupted run of the job over the whole capture (the tables right after it)."""
    assert_tables_equal(streamed_capture.raw, streamed_capture.bars, streamed_capture.trades)


def test_kill_9_mid_stream_then_restart_gives_identical_tables(
    stack: Stack,
    capture: list[dict[str, Any]],
    keyspace_factory: Callable[[], CassandraSettings],
    tmp_path: Path,
    job_log: Path,
) -> None:
    cassandra = keyspace_factory()
    topic = f"sp-kill-{os.urandom(5).hex()}"
    create_topic(stack.kafka.bootstrap_servers, topic)
    env = _job_env(cassandra, topic, tmp_path / "cp")
    feed = PacedProducer(stack.kafka.bootstrap_servers, topic, capture)
    job = _start_job(env, job_log)
    feed.start()
    try:
        _wait_for(lambda: _count(cassandra, "trades") >= 8_000, 300, "the first batches")
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
    killed_at = _count(cassandra, "trades")
    feed.join(300)
    assert feed.error is None and not feed.is_alive()
    assert killed_at < len(capture), "killed too late to test a restart"
    restarted = _start_job(env, job_log, "--once")
    assert restarted.wait(600) == 0
    assert_tables_match(cassandra, capture)
