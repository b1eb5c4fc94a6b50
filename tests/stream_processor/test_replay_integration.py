"""Replay of the real 6-market capture: uninterrupted, after kill -9, and through restarts of
Kafka and Cassandra. Every run must end with tables equal to an independent pandas computation."""

from __future__ import annotations

import hashlib
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
from stream_processor.config import StreamSettings
from stream_processor.jobs.pipeline import EXIT_STALLED
from stream_processor.queries import start_queries
from tests.conftest import REPO_ROOT, Stack, run_infra
from tests.stream_processor.conftest import create_topic, encode_trades, produce, read_table
from tests.stream_processor.oracle import assert_bars_equal, cassandra_trades, expected_bars

pytestmark = pytest.mark.integration

CAPTURE = "binance_6sym_20240808.csv"


def _capture_trades(shared_data: Path) -> list[dict[str, Any]]:
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


@pytest.fixture(scope="module")
def capture(shared_data: Path) -> list[dict[str, Any]]:
    return _capture_trades(shared_data)


@pytest.fixture(scope="module")
def capture_topic(stack: Stack, capture: list[dict[str, Any]]) -> str:
    """The capture produced once, in arrival order, to a fresh 2-partition topic."""
    topic = f"sp-capture-{os.urandom(5).hex()}"
    create_topic(stack.kafka.bootstrap_servers, topic)
    produce(stack.kafka.bootstrap_servers, topic, encode_trades(capture))
    return topic


def _count(settings: CassandraSettings, table: str) -> int:
    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        return int(session.execute(f"SELECT count(*) FROM {table}", timeout=60).one()[0])
    finally:
        cluster.shutdown()


def assert_tables_match(cassandra: CassandraSettings, trades: list[dict[str, Any]]) -> None:
    want = pd.DataFrame(trades).sort_values(["symbol", "trade_ts", "trade_id"])
    want = want.reset_index(drop=True)
    raw = cassandra_trades(read_table(cassandra, "trades"))
    assert len(raw) == len(want)
    assert raw.groupby("symbol").size().to_dict() == want.groupby("symbol").size().to_dict()
    for col in ("symbol", "trade_ts", "trade_id", "ingest_ts"):
        assert raw[col].tolist() == want[col].tolist(), col
    np.testing.assert_array_equal(raw["price"], want["price"])
    np.testing.assert_array_equal(raw["volume"], want["volume"])
    # the capture crosses midnight UTC, so both days must be there
    assert sorted(raw["day"].astype(str).unique()) == ["2024-08-08", "2024-08-09"]
    frame = pd.DataFrame(trades)
    for bar, table in (("5s", "trades_agg_5s"), ("1m", "trades_agg_1m"), ("1h", "trades_agg_1h")):
        assert_bars_equal(read_table(cassandra, table), expected_bars(frame, bar))


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
        self.hold = threading.Event()
        self.hold.set()

    def run(self) -> None:
        bootstrap, topic, trades, chunk, pause_s = self.args
        try:
            for start in range(0, len(trades), chunk):
                self.hold.wait()
                produce(bootstrap, topic, encode_trades(trades[start : start + chunk]))
                time.sleep(pause_s)
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def _restart(service: str) -> None:
    """``python -m infra restart <service>``. Its free-port check can still see the old
    listener's TIME_WAIT connections right after the stop; ``up`` is retried until they expire."""
    try:
        run_infra("restart", service)
        return
    except RuntimeError as exc:
        if "already in use" not in str(exc):
            raise
    deadline = time.monotonic() + 180
    while True:
        try:
            run_infra("up")
            return
        except RuntimeError as exc:
            if "already in use" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(5)


def _stop_job(job: subprocess.Popen[bytes], timeout_s: float = 120) -> int:
    """SIGTERM, then SIGKILL of the whole process group if it does not exit in time."""
    job.send_signal(signal.SIGTERM)
    try:
        return job.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
        raise


@pytest.fixture
def job_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "job.log"
    yield log
    if log.exists():
        print(log.read_text(errors="replace")[-4000:])


def test_replay_of_real_capture_matches_pandas(
    stack: Stack,
    spark: Any,
    capture: list[dict[str, Any]],
    capture_topic: str,
    keyspace_factory: Callable[[], CassandraSettings],
    tmp_path: Path,
) -> None:
    cassandra = keyspace_factory()
    settings = StreamSettings.from_env(_job_env(cassandra, capture_topic, tmp_path / "cp"))
    queries = start_queries(spark, settings, once=True)
    try:
        for q in queries:
            q.awaitTermination(600)
            assert q.exception() is None
    finally:
        for q in queries:
            q.stop()
    assert_tables_match(cassandra, capture)


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


class ServiceManager(threading.Thread):
    """Keeps the job running the way systemd or Kubernetes would: a job that exits with the
    stall status (3) is started again; it resumes from its checkpoints."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(daemon=True)
        self.env, self.log = env, log
        self.job = _start_job(env, log)
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            code = self.job.poll()
            if code is None:
                time.sleep(0.5)
                continue
            self.exit_codes.append(code)
            if code != EXIT_STALLED or self.stopping.is_set():
                return
            self.restarts += 1
            self.job = _start_job(self.env, self.log)

    def stop(self) -> int:
        self.stopping.set()
        self.join(10)
        return _stop_job(self.job)


def test_kafka_and_cassandra_restart_while_running(
    stack: Stack,
    capture: list[dict[str, Any]],
    keyspace_factory: Callable[[], CassandraSettings],
    tmp_path: Path,
    job_log: Path,
) -> None:
    cassandra = keyspace_factory()
    topic = f"sp-restart-{os.urandom(5).hex()}"
    create_topic(stack.kafka.bootstrap_servers, topic)
    env = {
        **_job_env(cassandra, topic, tmp_path / "cp"),
        "SINK_RETRY_TIMEOUT": "60s",
        "BATCH_STALL_TIMEOUT": "150s",
    }
    feed = PacedProducer(stack.kafka.bootstrap_servers, topic, capture, pause_s=0.5)
    manager = ServiceManager(env, job_log)
    manager.start()
    feed.start()
    try:
        _wait_for(lambda: _count(cassandra, "trades") >= 5_000, 300, "the first rows")
        feed.hold.clear()  # a feed holds back while its broker is down; so does this one
        _restart("kafka")
        feed.hold.set()
        before = _count(cassandra, "trades")
        _wait_for(lambda: _count(cassandra, "trades") > before, 300, "rows after kafka")
        _restart("cassandra")
        feed.join(600)
        assert feed.error is None and not feed.is_alive()
        _wait_for(lambda: _count(cassandra, "trades") == len(capture), 600, "every trade")
        want_1m = len(expected_bars(pd.DataFrame(capture), "1m"))
        # the rollups run on a slower trigger; let them catch up with the last batch
        _wait_for(lambda: _count(cassandra, "trades_agg_1m") == want_1m, 300, "1-minute bars")
        time.sleep(12)
        assert manager.is_alive(), f"the job exited with {manager.exit_codes}"
    finally:
        code = manager.stop()
    assert code == 0
    assert set(manager.exit_codes) <= {EXIT_STALLED}
    print(f"job restarts after a stall: {manager.restarts}")
    assert_tables_match(cassandra, capture)
