from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.feed import JsonlReplay, SimulatedMarket
from collector.finnhub import FrameParser
from collector.metrics import CollectorMetrics
from collector.recorder import FrameRecorder
from tests.conftest import REPO_ROOT, Stack


def test_the_recorder_writes_json_frames_as_lines_that_replay(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = FrameRecorder(path)
    frames = [
        b'{"type":"trade","data":[{"s":"AAPL","p":1.5,"t":1000,"v":2,"c":["1"]}]}',
        b'{"type":"ping"}',
        b"not json",
        b"[1]",
        b'{"type":"trade",\n"data":[{"s":"AAPL","p":1.6,"t":1200,"v":1}]}',
    ]
    for raw in frames:
        recorder.write(raw)
    recorder.close()
    lines = path.read_bytes().splitlines()
    assert lines[0] == frames[0] and lines[1] == frames[1]  # byte for byte
    assert json.loads(lines[2]) == json.loads(frames[4])  # re-serialised on one line
    assert (recorder.written, recorder.skipped) == (3, 2)
    replay = JsonlReplay(path)
    ticks = list(replay.ticks(5000))
    assert [
        d["t"] for t in ticks for f in t.frames if f.get("type") == "trade" for d in f["data"]
    ] == [5000, 5200]


REPLAY_SYMBOLS = ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "AAPL")
LIVE_START_MS = 1_700_000_000_000


def _replayed_ids(replay: JsonlReplay, start_ms: int) -> list[str]:
    # every frame parsed as if it arrived at start_ms: any trade time is accepted
    parser = FrameParser(
        REPLAY_SYMBOLS, source="replay", max_past_skew_ms=10**13, max_future_skew_ms=10**13
    )
    ids = []
    for tick in replay.ticks(start_ms):
        for f in tick.frames:
            raw = f if isinstance(f, bytes) else json.dumps(f).encode()
            ids += [t.trade_id for t in parser.parse(raw, received_ms=start_ms).trades]
    return ids


def test_a_replay_without_rebasing_gives_the_ids_of_the_live_run_it_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "live.jsonl"
    recorder = FrameRecorder(path)
    live = FrameParser(REPLAY_SYMBOLS, source="finnhub")
    live_ids = []
    market = SimulatedMarket(REPLAY_SYMBOLS, rate=5000, seed=11).ticks(LIVE_START_MS)
    for tick in itertools.islice(market, 300):
        for frame in tick.frames:
            raw = json.dumps(frame).encode()
            recorder.write(raw)
            result = live.parse(raw, received_ms=LIVE_START_MS + int(tick.due_s * 1000))
            live_ids += [t.trade_id for t in result.trades]
    recorder.close()
    assert len(live_ids) > 1000 and len(set(live_ids)) == len(live_ids)
    # an hour later, as the recorded times are: every row of the live run is overwritten
    kept = _replayed_ids(JsonlReplay(path, rebase=False), LIVE_START_MS + 3_600_000)
    assert kept == live_ids
    # rebased to a new start: new trade times, so new ids (new rows), the same for the same start
    rebased = _replayed_ids(JsonlReplay(path), LIVE_START_MS + 3_600_000)
    assert len(rebased) == len(live_ids) and not set(rebased) & set(live_ids)
    assert _replayed_ids(JsonlReplay(path), LIVE_START_MS + 3_600_000) == rebased


def test_the_metrics_endpoint_serves_prometheus_text() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = CollectorMetrics()
    metrics.trades.inc(7)
    metrics.reconnects.labels("stall").inc()
    metrics.serve("127.0.0.1", port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "collector_trades_total 7.0" in body
    assert 'collector_reconnects_total{reason="stall"} 1.0' in body
    assert "collector_produce_latency_seconds_bucket" in body


@pytest.mark.live
def test_the_live_finnhub(stack: Stack, unique_topic: Callable[[str], str], tmp_path: Path) -> None:
    token = os.environ.get("FINNHUB_TOKEN")
    if not token:
        pytest.skip("FINNHUB_TOKEN is not set")
    record = tmp_path / "live.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "FINNHUB_WS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "collector", "--duration", "20", "--record", str(record)],
        cwd=REPO_ROOT,
        env={**env, "TRADES_TOPIC": unique_topic("coll-live"), "COLLECTOR_METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert token not in result.stdout + result.stderr
    assert "subscribed 7 symbol(s)" in result.stderr
    assert record.exists()
