"""The feed's hostile-input faults the fault matrix uses: hostile frames, a slow drip, a TCP
reset in the middle of a frame. Over a real socket, against the feed in this process."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest
import websocket

from collector.feed import FaultPlan, FeedServer, SimulatedMarket
from collector.feed.faults import HOSTILE, HOSTILE_LARGE, HOSTILE_LARGE_EVERY, hostile_frame
from tests.collector.test_feed import client  # noqa: F401 - fixture

SYMBOLS = ("AAPL", "MSFT")


def test_hostile_frames_cover_every_class_and_the_large_ones_exceed_a_kafka_record() -> None:
    kinds = {hostile_frame(i, "AAPL", 0)[0] for i in range(2 * HOSTILE_LARGE_EVERY + 1)}
    assert kinds == {k for k, _ in HOSTILE} | {k for k, _ in HOSTILE_LARGE}
    large = hostile_frame(HOSTILE_LARGE_EVERY, "AAPL", 0)[1]
    assert len(large) > 1024 * 1024
    with pytest.raises(OverflowError):
        float(json.loads(hostile_frame(0, "AAPL", 0)[1])["data"][0]["p"])
    with pytest.raises(UnicodeEncodeError):
        json.loads(hostile_frame(4, "AAPL", 0)[1])["data"][0]["c"][0].encode()


def test_the_feed_sends_a_hostile_frame_after_each_trade_frame(
    feed: Callable[..., FeedServer],
    client: Callable[..., websocket.WebSocket],  # noqa: F811
) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=500, seed=1), FaultPlan(hostile_every=1))
    ws = client(server.port)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    frames = [ws.recv() for _ in range(40)]
    assert sum(server.stats.hostile_sent.values()) >= 19
    assert any("9" * 400 in frame for frame in frames)


def test_a_dripped_frame_arrives_a_byte_at_a_time(
    feed: Callable[..., FeedServer],
    client: Callable[..., websocket.WebSocket],  # noqa: F811
) -> None:
    server = feed(
        SimulatedMarket(SYMBOLS, rate=200, seed=1),
        FaultPlan(drip_after=5, drip_s=2.0),
        ping_interval_s=0.1,
    )
    ws = client(server.port)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    arrivals: list[tuple[float, dict[str, object]]] = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        arrivals.append((time.monotonic(), json.loads(ws.recv())))
    gaps = [(b[0] - a[0], b[1]) for a, b in zip(arrivals, arrivals[1:], strict=False)]
    longest, frame_after = max(gaps, key=lambda gap: gap[0])
    assert server.stats.drips == 1
    assert longest >= 1.5, "no pause while the frame dripped (pings every 0.1 s otherwise)"
    assert frame_after["type"] == "trade"  # it arrived whole after the drip


def test_a_connection_is_reset_in_the_middle_of_a_frame(feed: Callable[..., FeedServer]) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=500, seed=1), FaultPlan(abort_mid_frame_after=20))
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/", timeout=5)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    with pytest.raises(
        (websocket.WebSocketConnectionClosedException, ConnectionError, socket.error)
    ):
        for _ in range(1000):
            ws.recv()
    assert server.stats.drops == 1


def test_new_fault_plans_are_validated() -> None:
    with pytest.raises(ValueError, match="--drip-seconds"):
        FaultPlan(drip_after=3)
    with pytest.raises(ValueError, match="--hostile-every 0"):
        FaultPlan(hostile_every=0)
