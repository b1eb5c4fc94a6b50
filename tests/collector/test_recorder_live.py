from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.feed import JsonlReplay
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
