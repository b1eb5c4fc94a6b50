from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import websocket

from collector.config import CollectorConfig, SecretStr
from collector.connection import FinnhubConnection, backoff_delay
from collector.exceptions import AuthenticationError, DeliveryError
from collector.metrics import CollectorMetrics
from collector.models import Gap

TOKEN = "tok-SECRET-42"
TEXT = websocket.ABNF.OPCODE_TEXT
CLOSE = websocket.ABNF.OPCODE_CLOSE


class ScriptedSocket:
    """Replays scripted events; when the script is exhausted it behaves like a silent socket."""

    def __init__(self, *events: Any) -> None:
        self.events = list(events)
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def send(self, payload: str) -> None:
        self.sent.append(json.loads(payload))

    def recv_data(self) -> tuple[int, Any]:
        if not self.events:
            time.sleep(0.02)
            raise websocket.WebSocketTimeoutException("timed out")
        event = self.events.pop(0)
        if isinstance(event, BaseException):
            raise event
        if event == "close":
            return CLOSE, (1001).to_bytes(2, "big") + b"bye"
        return TEXT, event

    def settimeout(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Connector:
    """Hands out the scripted outcomes of successive connection attempts."""

    def __init__(self, *outcomes: ScriptedSocket | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float) -> ScriptedSocket:
        self.urls.append(url)
        outcome = self.outcomes.pop(0) if self.outcomes else ScriptedSocket()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class GapList:
    def __init__(self) -> None:
        self.gaps: list[Gap] = []

    def record(self, gap: Gap) -> None:
        self.gaps.append(gap)

    def close(self) -> None:
        pass


def config(**kw: Any) -> CollectorConfig:
    base: dict[str, Any] = dict(
        ws_url="ws://127.0.0.1:1",
        token=SecretStr(TOKEN),
        symbols=("AAPL", "MSFT"),
        source="feed",
        stall_timeout_s=0.3,
        backoff_initial_s=0.01,
        backoff_max_s=0.04,
    )
    base.update(kw)
    return CollectorConfig(**base)


def run(
    connector: Connector,
    *,
    frames_wanted: int,
    on_frame: Callable[[bytes, int], None] | None = None,
    timeout_s: float = 5.0,
    **kw: Any,
) -> tuple[FinnhubConnection, list[tuple[bytes, int]], GapList]:
    received: list[tuple[bytes, int]] = []
    gaps = GapList()
    handler = on_frame or (lambda raw, ms: received.append((raw, ms)))
    conn = FinnhubConnection(
        config(**kw), handler, gaps=gaps, metrics=CollectorMetrics(), connect=connector
    )
    deadline = time.monotonic() + timeout_s
    conn.run(should_stop=lambda: len(received) >= frames_wanted or time.monotonic() > deadline)
    assert time.monotonic() <= deadline, "run() did not reach the wanted frames in time"
    return conn, received, gaps


def subscriptions(sock: ScriptedSocket, kind: str = "subscribe") -> list[str]:
    return [m["symbol"] for m in sock.sent if m["type"] == kind]


def test_frames_are_delivered_in_order_after_subscribing_every_symbol() -> None:
    sock = ScriptedSocket(b'{"type":"ping"}', b"f1", b"f2")
    before = time.time() * 1000
    conn, received, gaps = run(Connector(sock), frames_wanted=3)
    assert [raw for raw, _ in received] == [b'{"type":"ping"}', b"f1", b"f2"]
    assert all(before - 1 <= ms <= time.time() * 1000 + 1 for _, ms in received)
    assert subscriptions(sock) == ["AAPL", "MSFT"]
    assert subscriptions(sock, "unsubscribe") == ["AAPL", "MSFT"]  # clean stop
    assert sock.closed
    assert gaps.gaps == [] and conn.connections == 1


def test_a_server_close_reconnects_resubscribes_and_records_the_gap() -> None:
    first = ScriptedSocket(b"a", "close")
    second = ScriptedSocket(b"b")
    conn, received, gaps = run(Connector(first, second), frames_wanted=2)
    assert [raw for raw, _ in received] == [b"a", b"b"]
    assert subscriptions(second) == ["AAPL", "MSFT"]
    (gap,) = gaps.gaps
    assert gap.reason == "server_closed" and "1001" in gap.detail
    assert gap.start_ms == received[0][1]  # from the last frame before the loss...
    assert gap.start_ms <= gap.end_ms <= received[1][1]  # ...to the resubscribe
    assert gap.symbols == ("AAPL", "MSFT") and gap.source == "feed"
    assert conn.metrics.value("collector_reconnects_total", {"reason": "server_closed"}) == 1


def test_a_silent_socket_is_closed_by_the_watchdog_and_replaced() -> None:
    first = ScriptedSocket(b"a")  # then silence
    second = ScriptedSocket(b"b")
    started = time.monotonic()
    _, received, gaps = run(Connector(first, second), frames_wanted=2)
    assert time.monotonic() - started >= 0.3
    assert first.closed
    (gap,) = gaps.gaps
    assert gap.reason == "stall" and "stall timeout 0.3 s" in gap.detail
    assert gap.duration_ms >= 300


def test_socket_errors_reconnect_with_a_redacted_reason(caplog: pytest.LogCaptureFixture) -> None:
    err = websocket.WebSocketException(f"boom at ws://127.0.0.1:1/?token={TOKEN}")
    with caplog.at_level(logging.DEBUG):
        _, received, gaps = run(
            Connector(ScriptedSocket(b"a", err), ScriptedSocket(b"b")), frames_wanted=2
        )
    (gap,) = gaps.gaps
    assert gap.reason == "disconnect"
    assert TOKEN not in gap.detail and "token=***" in gap.detail
    assert TOKEN not in caplog.text
    assert "lost (disconnect" in caplog.text


def test_failed_connects_back_off_and_the_outage_is_one_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = ConnectionRefusedError(111, f"refused ws://x/?token={TOKEN}")
    connector = Connector(refused, refused, refused, ScriptedSocket(b"a"))
    with caplog.at_level(logging.WARNING):
        _, received, gaps = run(connector, frames_wanted=1)
    assert len(connector.urls) == 4
    assert all(url.endswith(f"token={TOKEN}") for url in connector.urls)  # only the socket sees it
    (gap,) = gaps.gaps
    assert gap.reason == "connect_failed"
    assert "attempt 3" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in gap.detail


def test_a_refused_token_is_fatal_and_not_retried() -> None:
    refused = websocket.WebSocketBadStatusException("Handshake status %d %s", 401, "Unauthorized")
    connector = Connector(refused, ScriptedSocket(b"never"))
    with pytest.raises(AuthenticationError) as info:
        run(connector, frames_wanted=1)
    assert len(connector.urls) == 1
    assert "HTTP 401" in str(info.value) and TOKEN not in str(info.value)


def test_stopping_while_disconnected_still_records_the_gap() -> None:
    connector = Connector(ScriptedSocket(b"a", "close"), *[OSError("down")] * 1000)
    gaps = GapList()
    seen: list[bytes] = []
    conn = FinnhubConnection(
        config(),
        lambda raw, ms: seen.append(raw),
        gaps=gaps,
        metrics=CollectorMetrics(),
        connect=connector,
    )
    deadline = time.monotonic() + 0.5
    conn.run(should_stop=lambda: time.monotonic() > deadline)
    (gap,) = gaps.gaps
    assert gap.reason == "server_closed" and "stopped before reconnecting" in gap.detail
    assert seen == [b"a"]


def test_an_error_from_the_handler_stops_the_connection_and_propagates() -> None:
    sock = ScriptedSocket(b"a", b"b")

    def fail(raw: bytes, ms: int) -> None:
        raise DeliveryError("kafka refused")

    with pytest.raises(DeliveryError):
        run(Connector(sock), frames_wanted=5, on_frame=fail)
    assert sock.closed and sock.events == [b"b"]


def test_stop_from_another_thread_ends_run() -> None:
    import threading

    conn = FinnhubConnection(
        config(stall_timeout_s=30),
        lambda r, m: None,
        gaps=GapList(),
        metrics=CollectorMetrics(),
        connect=Connector(ScriptedSocket()),
    )
    timer = threading.Timer(0.2, conn.stop)
    timer.start()
    started = time.monotonic()
    conn.run()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_grows_exponentially_is_capped_and_jittered(attempt: int) -> None:
    import random

    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, initial_s=0.5, max_s=30, rng=rng) for _ in range(200)]
    ceiling = min(30, 0.5 * 2**attempt)
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # jitter: not all the same
