"""The feed's hostile-input faults the fault matrix uses: hostile frames, a slow drip, a TCP
reset in the middle of a frame. Over a real socket, against the feed in this process."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import websocket

from collector.feed import FaultPlan, FeedOptions, FeedServer, SimulatedMarket
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


@pytest.fixture
def busy_feed() -> Iterator[Callable[..., FeedServer]]:
    """Factory: a feed whose event loop also runs a task that holds it 20 ms at a time, as a
    loaded machine delays each of the loop's turns."""
    started: list[tuple[FeedServer, threading.Thread]] = []

    async def hog() -> None:
        while True:
            time.sleep(0.02)
            await asyncio.sleep(0)

    async def serve(server: FeedServer, ready: threading.Event) -> None:
        task = asyncio.create_task(hog())
        try:
            await server.run(ready)
        finally:
            task.cancel()

    def start(faults: FaultPlan, **options: float) -> FeedServer:
        server = FeedServer(
            SimulatedMarket(SYMBOLS, rate=200, seed=1), FeedOptions(port=0, **options), faults
        )
        ready = threading.Event()
        thread = threading.Thread(target=asyncio.run, args=(serve(server, ready),), daemon=True)
        thread.start()
        started.append((server, thread))
        assert ready.wait(10), "the feed did not start listening"
        return server

    yield start
    for server, thread in started:
        server.stop()
        thread.join(10)


def test_pings_wait_for_a_drip_that_outlasts_its_planned_time(
    busy_feed: Callable[..., FeedServer],
    client: Callable[..., websocket.WebSocket],  # noqa: F811
) -> None:
    # 0.3 s planned; one byte per turn of the busy loop takes about 100 bytes * 20 ms
    server = busy_feed(FaultPlan(drip_after=1, drip_s=0.3), ping_interval_s=0.05)
    ws = client(server.port)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    arrivals: list[tuple[float, str]] = []
    while sum(kind == "trade" for _, kind in arrivals) < 3:  # the second is the dripped one
        # a ping written into the dripped frame corrupts it: this raises
        arrivals.append((time.monotonic(), json.loads(ws.recv())["type"]))
    longest = max(b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False))
    assert server.stats.drips == 1
    assert longest > 0.3 + 1, "the drip took no longer than planned: the test shows nothing"
    assert {kind for _, kind in arrivals} == {"trade", "ping"}


def test_a_connection_is_reset_in_the_middle_of_a_frame(
    feed: Callable[..., FeedServer],
    client: Callable[..., websocket.WebSocket],  # noqa: F811
) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=500, seed=1), FaultPlan(abort_mid_frame_after=20))
    # the fixture closes the socket, which websocket-client leaves open after a reset
    ws = client(server.port)
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
