"""``stream_processor.rebuild`` on the replayed 6-market capture, against the real Kafka, Spark
and Cassandra: after the streaming job left late trades out of the bars, the rebuilt bars equal
the live bars where no trade was late, and an offline recompute of every stored trade."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from stream_processor.jobs.rebuild import _trades, rebuild_range, run_rebuild
from tests.conftest import REPO_ROOT, Stack
from tests.stream_processor.conftest import (
    TABLES,
    StreamedCapture,
    encode_trades,
    produce,
    read_table,
    stream_once,
)
from tests.stream_processor.oracle import (
    BAR_MS,
    assert_bars_equal,
    cassandra_bars,
    cassandra_trades,
    expected_bars,
)

pytestmark = pytest.mark.integration

GHOST = "TEST:GHOST"


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _late_trades(capture: list[dict[str, Any]], n: int = 80) -> list[dict[str, Any]]:
    """Trades at random times of the capture, but at least two minutes before its end: far
    behind the watermark once the capture has streamed, so the bars leave every one out."""
    rng = np.random.default_rng(7)
    times = np.array([t["trade_ts"] for t in capture])
    symbols = sorted({t["symbol"] for t in capture})
    last_price = {t["symbol"]: t["price"] for t in capture}
    out = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        ts = int(rng.integers(times.min(), times.max() - 120_000))
        out.append(
            {
                "trade_id": hashlib.sha1(f"late|{i}".encode()).hexdigest(),
                "symbol": symbol,
                "price": round(last_price[symbol] * (1 + rng.normal(0, 0.002)), 2),
                "volume": round(float(rng.exponential(0.5)), 4),
                "trade_ts": ts,
                "conditions": [],
                "source": "replay",
                "ingest_ts": int(times.max()) + 1_000,
            }
        )
    return out


def _bars(cassandra: CassandraSettings) -> dict[str, pd.DataFrame]:
    return {bar: read_table(cassandra, table) for bar, table in TABLES.items()}


def _in_windows(trades: pd.DataFrame, bar: str) -> set[tuple[str, int]]:
    size = BAR_MS[bar]
    return set(zip(trades["symbol"], trades["trade_ts"] // size * size, strict=True))


@pytest.fixture(scope="module")
def streamed(stack: Stack, spark: Any, streamed_capture: StreamedCapture) -> dict[str, Any]:
    """The capture streamed through the job (shared with the replay test), then late trades:
    stored in ``trades``, left out of the bars. Returns the trades, the late ones, the live bars
    and the job's settings."""
    capture = streamed_capture.trades
    late = _late_trades(capture)
    cassandra, settings = streamed_capture.cassandra, streamed_capture.settings
    produce(stack.kafka.bootstrap_servers, streamed_capture.topic, encode_trades(late))
    stream_once(spark, settings)  # resumes with the watermark of the first run
    return {
        "cassandra": cassandra,
        "settings": settings,
        "capture": pd.DataFrame(capture),
        "late": pd.DataFrame(late),
        "live": _bars(cassandra),
    }


def test_the_stream_left_the_late_trades_out_of_the_bars(streamed: dict[str, Any]) -> None:
    every = pd.concat([streamed["capture"], streamed["late"]], ignore_index=True)
    stored = cassandra_trades(read_table(streamed["cassandra"], "trades"))
    assert len(stored) == len(every)
    for bar, rows in streamed["live"].items():
        assert_bars_equal(rows, expected_bars(streamed["capture"], bar))


def test_trades_are_read_by_partition_key(spark: Any, streamed: dict[str, Any]) -> None:
    lo = datetime(2024, 8, 8, 23, 58, tzinfo=UTC)
    frame = _trades(spark, streamed["cassandra"].keyspace, ["A:B", "C:D"], lo, lo + timedelta(1))
    plan = frame._jdf.queryExecution().executedPlan().toString()
    # the connector's scan names the filters it sends to Cassandra
    assert "Cassandra Filters" in plan, plan
    pushed = plan.split("Cassandra Filters", 1)[1].splitlines()[0]
    for column in ('"symbol" IN', '"day" =', '"trade_ts" >=', '"trade_ts" <'):
        assert column in pushed, plan


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_processor.rebuild", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_a_partial_range_rebuilt_from_the_command_line(streamed: dict[str, Any]) -> None:
    """Minutes and hours around an unaligned range roll up rebuilt and live 5-s bars alike."""
    capture, late = streamed["capture"], streamed["late"]
    # 23:55:22.6 to 23:57:22.6: parts of three minutes and of one hour, inside a 5-s window
    start_ms = int(capture["trade_ts"].min()) + 67_300
    end_ms = start_ms + 2 * 60_000
    result = _run_cli(
        "--from",
        _dt(start_ms).isoformat(),
        "--to",
        _dt(end_ms).isoformat().replace("+00:00", "Z"),
        "--keyspace",
        streamed["cassandra"].keyspace,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lo, hi = start_ms // 5000 * 5000, -(-end_ms // 5000) * 5000
    window = (late["trade_ts"] // 5000 * 5000).between(lo, hi - 1)
    every = pd.concat([capture, late[window]], ignore_index=True)
    in_range = every["trade_ts"].between(lo, hi - 1)
    lines = result.stdout.splitlines()
    assert lines[1].startswith("[1/1] 2024-08-0"), result.stdout
    assert f" {int(in_range.sum()):,} trades -> " in lines[1], result.stdout
    assert lines[-1].startswith(f"done: {int(in_range.sum()):,} trades, "), result.stdout
    rebuilt = _bars(streamed["cassandra"])
    for bar, rows in rebuilt.items():
        assert_bars_equal(rows, expected_bars(every, bar))
    # the bars without a late trade are the live bars (to the last bits of a float sum: the
    # stream and the batch read add the same trades in another order)
    for bar, rows in rebuilt.items():
        touched = _in_windows(late[window], bar)
        assert touched, bar
        pd.testing.assert_frame_equal(
            _without(rows, touched), _without(streamed["live"][bar], touched), rtol=1e-12
        )


def _without(rows: pd.DataFrame, windows: set[tuple[str, int]]) -> pd.DataFrame:
    bars = cassandra_bars(rows).drop(columns="day")
    keys = zip(bars["symbol"], bars["window_start"], strict=True)
    return bars[[key not in windows for key in keys]].reset_index(drop=True)


def _insert_ghosts(cassandra: CassandraSettings, trades: pd.DataFrame) -> int:
    """Bars without any trade: a symbol that has no trades at all, and a 5-s bar of a real
    symbol in a window where it did not trade."""
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    start = _dt(int(trades["trade_ts"].min()) + 60_000).replace(tzinfo=None)
    windows = trades["trade_ts"] // 5000 * 5000
    busy = set(zip(trades["symbol"], windows, strict=True))
    quiet, empty = next(
        (symbol, w)
        for symbol in sorted(trades["symbol"].unique())
        for w in range(int(windows.min()), int(windows.max()), 5000)
        if (symbol, w) not in busy
    )
    rows = [
        ("trades_agg_5s", GHOST, start.replace(second=start.second // 5 * 5, microsecond=0), 5),
        ("trades_agg_1m", GHOST, start.replace(second=0, microsecond=0), 60),
        ("trades_agg_1h", GHOST, start.replace(minute=0, second=0, microsecond=0), 3600),
        ("trades_agg_5s", quiet, _dt(empty).replace(tzinfo=None), 5),
    ]
    try:
        for table, symbol, ws, seconds in rows:
            session.execute(
                f"INSERT INTO {table} (symbol, day, window_start, window_end, open, high, low, "
                "close, volume, vwap, trade_count) VALUES (%s, %s, %s, %s, 1, 1, 1, 1, 1, 1, 1)",
                (symbol, ws.date(), ws, ws + timedelta(seconds=seconds)),
            )
    finally:
        cluster.shutdown()
    return len(rows)


def test_the_whole_range_rebuilt_equals_an_offline_recompute_of_every_trade(
    spark: Any, streamed: dict[str, Any]
) -> None:
    capture, late = streamed["capture"], streamed["late"]
    every = pd.concat([capture, late], ignore_index=True)
    ghosts = _insert_ghosts(streamed["cassandra"], every)
    request = rebuild_range(
        _dt(int(every["trade_ts"].min())), _dt(int(every["trade_ts"].max()) + 1)
    )
    lines: list[str] = []
    results = run_rebuild(spark, streamed["settings"], request, report=lines.append)
    assert [r.start.date().isoformat() for r in results] == ["2024-08-08", "2024-08-09"]
    assert sum(r.trades for r in results) == len(every)
    assert len(lines) == 2 and lines[0].startswith("[1/2] 2024-08-08 23:"), lines
    # the ghost symbol's 5-s, 1-m and 1-h bars and the stray BTC 5-s bar
    assert sum(r.deleted_5s + r.deleted_1m + r.deleted_1h for r in results) == ghosts
    rebuilt = _bars(streamed["cassandra"])
    for bar, rows in rebuilt.items():
        assert_bars_equal(rows, expected_bars(every, bar))
    # the bars that took in a late trade changed; running it again changes nothing
    assert len(_in_windows(late, "5s")) > 40
    again = run_rebuild(spark, streamed["settings"], request, report=lines.append)
    assert sum(r.deleted_5s + r.deleted_1m + r.deleted_1h for r in again) == 0
    for bar, rows in _bars(streamed["cassandra"]).items():
        pd.testing.assert_frame_equal(cassandra_bars(rows), cassandra_bars(rebuilt[bar]))


def test_spark_submit_runs_the_same_job(streamed: dict[str, Any]) -> None:
    """The documented spark-submit command, on one symbol's last minute before midnight."""
    every = pd.concat([streamed["capture"], streamed["late"]], ignore_index=True)
    symbol = "BINANCE:ETHUSDT"
    start, end = datetime(2024, 8, 8, 23, 59, tzinfo=UTC), datetime(2024, 8, 9, tzinfo=UTC)
    jars = ",".join(str(p) for p in sorted((REPO_ROOT / ".cache/jars/spark").glob("*.jar")))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            "local[2]",
            "--driver-memory",
            "1g",
            "--jars",
            jars,
            "stream_processor/rebuild.py",
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
            "--symbols",
            symbol,
            "--keyspace",
            streamed["cassandra"].keyspace,
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "SPARK_SUBMIT_MODE": "1",
            "PYSPARK_PYTHON": sys.executable,
            "LOG_LEVEL": "WARNING",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ms = every["trade_ts"]
    inside = (ms >= start.timestamp() * 1000) & (ms < end.timestamp() * 1000)
    n = int(((every["symbol"] == symbol) & inside).sum())
    assert n > 100
    assert f"[1/1] 2024-08-08 23:59:00..00:00:00 UTC: 1 symbol, {n:,} trades -> 12 5-s bars, " in (
        result.stdout
    ), result.stdout
    for bar, rows in _bars(streamed["cassandra"]).items():
        assert_bars_equal(rows, expected_bars(every, bar))
