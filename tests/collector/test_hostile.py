"""Hostile input (issue 12, items 1-4): whatever a server sends, the collector keeps running with
bounded memory, and every frame ends as trades or a dead letter that fits a Kafka record."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.config import CollectorConfig
from collector.connection import FinnhubConnection
from collector.delivery import DeliveryBacklog, PendingFrame
from collector.encoding import TradeEncoder
from collector.finnhub import FrameParser
from collector.metrics import CollectorMetrics
from collector.models import DLQ_RECORD_LIMIT_BYTES, DeadLetter, Gap, Trade
from collector.pipeline import FrameHandler
from collector.recorder import FrameRecorder

NOW = 1_700_000_000_000
SYMBOLS = ("AAPL", "BINANCE:BTCUSDT")
MIB = 1 << 20


def frame(*trades: Any) -> bytes:
    return json.dumps({"type": "trade", "data": list(trades)}).encode()


def good(**override: Any) -> dict[str, Any]:
    trade: dict[str, Any] = {"s": "AAPL", "p": 164.06, "t": NOW - 5, "v": 100, "c": ["1", "12"]}
    trade.update(override)
    return trade


class RecordingSink:
    """A sink that does what Kafka's client does to every record: encode the key, and refuse a
    record larger than the topic's limit; Kafka acknowledges at once."""

    trades_topic = "trades"
    dlq_topic = "trades.dlq"
    bootstrap_servers = "127.0.0.1:9092"

    def __init__(self) -> None:
        self.backlog = DeliveryBacklog(metrics=CollectorMetrics())
        self.values: list[bytes] = []
        self.letters: list[dict[str, Any]] = []
        self.sent = 0
        self.dead_letters_sent = 0
        self.failed = 0

    def _record(self, key: bytes | None, value: bytes) -> None:
        size = len(value) + len(key or b"")
        assert size <= DLQ_RECORD_LIMIT_BYTES, f"a {size}-byte record exceeds the topic limit"

    def send_trades(
        self, trades: Sequence[Trade], values: Sequence[bytes], pending: PendingFrame | None = None
    ) -> None:
        for trade, value in zip(trades, values, strict=True):
            self._record(trade.symbol.encode("utf-8"), value)
            if pending is not None:
                pending.done()
        self.values += values
        self.sent += len(values)

    def send_dead_letters(
        self, letters: Sequence[DeadLetter], pending: PendingFrame | None = None
    ) -> None:
        for letter in letters:
            value = letter.to_json()
            self._record(letter.symbol.encode("utf-8") if letter.symbol else None, value)
            self.letters.append(json.loads(value))
            if pending is not None:
                pending.done()
        self.dead_letters_sent += len(letters)

    def poll(self) -> None:
        return None

    def raise_if_failed(self) -> None:
        return None


def handler(**kw: Any) -> tuple[FrameHandler, RecordingSink]:
    sink = RecordingSink()
    parser = FrameParser(SYMBOLS, source="feed")
    return FrameHandler(parser, sink, CollectorMetrics(), progress_interval_s=0, **kw), sink


# -- item 1: one frame must not kill the collector ----------------------------------------------
HUGE = 10**401  # the audit's 401-digit price


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (good(p=HUGE), "invalid_price"),
        (good(v=HUGE), "invalid_volume"),
        (good(t=HUGE), "timestamp_out_of_range"),
        (good(t=-HUGE), "timestamp_out_of_range"),
        (good(p=2**1024 - 1), "invalid_price"),  # the largest int that still overflows a float
        (good(c=["1", "\ud800"]), "wrong_type"),  # a lone surrogate in a condition
        (good(s="\ud800"), "unsubscribed_symbol"),  # ...in an unsubscribed symbol
        (good(s="TSLA\udfff"), "unsubscribed_symbol"),
    ],
)
def test_one_hostile_trade_is_a_dead_letter_and_its_neighbours_are_trades(
    item: dict[str, Any], reason: str
) -> None:
    h, sink = handler()
    h(frame(good(), item, good(v=7)), NOW)
    assert h.trades == 2 and h.dead_letters == 1
    (letter,) = sink.letters
    assert letter["reason"] == reason
    assert "\n" not in letter["detail"] and len(letter["detail"]) <= 1024
    # the next frame is processed as usual
    h(frame(good(p=1.25)), NOW)
    assert h.trades == 3


def test_the_audit_frame_among_real_trades_no_longer_stops_the_collector() -> None:
    h, sink = handler()
    raw = b'{"type":"trade","data":[{"s":"AAPL","p":%s,"t":%d,"v":1}]}' % (b"9" * 401, NOW)
    for n in range(5):
        h(frame(good(p=100 + n)), NOW)
        h(raw, NOW)
    assert h.trades == 5 and [d["reason"] for d in sink.letters] == ["invalid_price"] * 5


# -- item 2: every record fits the topic's limit ------------------------------------------------
def test_a_huge_unsubscribed_symbol_makes_a_dead_letter_that_fits_one_record() -> None:
    h, sink = handler()
    h(frame(good(s="X" * 2 * MIB)), NOW)  # RecordingSink asserts the size
    (letter,) = sink.letters
    assert letter["reason"] == "unsubscribed_symbol"
    assert letter["symbol"].startswith("XXXX") and len(letter["symbol"]) <= 256
    assert letter["raw_truncated"] is True and letter["raw_bytes"] > 2 * MIB


def test_a_huge_condition_is_a_dead_letter_not_a_huge_trade() -> None:
    h, sink = handler()
    h(frame(good(c=["1", "C" * 2 * MIB]), good(c=[str(n) for n in range(1000)])), NOW)
    assert h.trades == 0
    assert [d["reason"] for d in sink.letters] == ["field_too_large", "field_too_large"]
    assert "data[0].c[1]" in sink.letters[0]["detail"]


def test_dead_letters_of_every_size_fit_the_record_limit() -> None:
    letter = DeadLetter(
        reason="invalid_json",
        detail="d" * MIB,
        raw=b"\xff" * MIB,  # invalid UTF-8: raw, replacement text and base64 all grow
        source="feed",
        received_ts_ms=NOW,
        symbol="\ud800" * MIB,
    )
    value = letter.to_json()
    assert len(value) + len(letter.symbol.encode("utf-8")) <= DLQ_RECORD_LIMIT_BYTES
    doc = json.loads(value)
    assert doc["raw_bytes"] == MIB and doc["raw_truncated"] is True


# -- item 4: error frames and --record ---------------------------------------------------------
def test_an_error_frame_message_is_logged_escaped_and_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h, _ = handler()
    msg = "bad\n2024-01-01 00:00:00 INFO collector: forged line\r\x1b[31m" + "x" * MIB
    with caplog.at_level(logging.ERROR, logger="collector.pipeline"):
        h(json.dumps({"type": "error", "msg": msg}).encode(), NOW)
    (record,) = caplog.records
    text = record.getMessage()
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert len(text) < 600
    assert "forged line" in text  # escaped, not dropped


@pytest.mark.parametrize("depth", [900, 990, 5000, 100_000])
def test_record_survives_deeply_nested_json(tmp_path: Path, depth: int) -> None:
    recorder = FrameRecorder(tmp_path / "frames.jsonl")
    h, sink = handler(recorder=recorder)
    nested = b'{"type":"trade","data":' + b"[" * depth + b"]" * depth + b"}"
    h(nested, NOW)
    h(frame(good()), NOW)
    recorder.close()
    assert h.trades == 1 and len(sink.letters) == 1
    lines = (tmp_path / "frames.jsonl").read_bytes().splitlines()
    assert lines[-1] == frame(good())


# -- a local websocket server that can send anything --------------------------------------------
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_header(length: int, opcode: int = 1, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes([first, length])
    if length < 1 << 16:
        return bytes([first, 126]) + struct.pack("!H", length)
    return bytes([first, 127]) + struct.pack("!Q", length)


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    return ws_header(len(payload), opcode, fin) + payload


class RawWebSocketServer:
    """Accepts websocket handshakes on loopback, then runs ``script(conn, n)`` for the n-th
    connection on its own thread; the script writes raw bytes, so it can send what no library
    would (a 64 MiB frame from a 1 MiB buffer, a frame dripped a byte at a time)."""

    def __init__(self, script: Callable[[socket.socket, int], None]) -> None:
        self.script = script
        self.stopped = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            n, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            found = re.search(rb"sec-websocket-key:\s*(\S+)", request, re.IGNORECASE)
            assert found is not None
            accept = base64.b64encode(hashlib.sha1(found.group(1) + _GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            try:
                self.script(conn, n)
            except OSError:
                pass  # the collector closed the connection: what most scripts wait for

    def close(self) -> None:
        self.stopped.set()
        self._thread.join(5)
        self._server.close()


class Gaps:
    def __init__(self) -> None:
        self.gaps: list[Gap] = []

    def record(self, gap: Gap) -> None:
        self.gaps.append(gap)

    def close(self) -> None:
        pass


def connection_to(
    server: RawWebSocketServer, on_frame: Callable[[bytes, int], None], **config: Any
) -> tuple[FinnhubConnection, Gaps, list[tuple[int, int]]]:
    gaps = Gaps()
    rejected: list[tuple[int, int]] = []
    settings: dict[str, Any] = dict(
        ws_url=f"ws://127.0.0.1:{server.port}",
        symbols=("AAPL",),
        source="feed",
        backoff_initial_s=0.05,
        backoff_max_s=0.1,
    )
    settings.update(config)
    conn = FinnhubConnection(
        CollectorConfig(**settings),
        on_frame,
        gaps=gaps,
        metrics=CollectorMetrics(),
        on_oversized=lambda size, ms: rejected.append((size, ms)),
    )
    return conn, gaps, rejected


def run_in_thread(conn: FinnhubConnection) -> threading.Thread:
    thread = threading.Thread(target=conn.run, daemon=True)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- item 3: frame size limit and slow drip, through the real websocket client -----------------
def test_an_oversized_frame_is_never_buffered_and_becomes_a_dead_letter_and_a_gap() -> None:
    announced = 64 * MIB
    chunk = b"a" * MIB

    def script(conn: socket.socket, n: int) -> None:
        if n == 0:  # a 64 MiB text frame, sent whole from one 1 MiB buffer
            conn.sendall(ws_header(announced))
            for _ in range(announced // MIB):
                conn.sendall(chunk)
        conn.sendall(ws_frame(b'{"type":"ping"}'))
        server.stopped.wait(5)  # holds the connection open until the test closes the server

    server = RawWebSocketServer(script)
    received: list[bytes] = []
    conn, gaps, rejected = connection_to(
        server, lambda raw, ms: received.append(raw), max_frame_bytes=MIB, stall_timeout_s=5
    )
    tracemalloc.start()
    try:
        thread = run_in_thread(conn)
        got_ping = wait_for(lambda: received == [b'{"type":"ping"}'], 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        conn.stop()
        thread.join(5)
        server.close()
    assert got_ping, f"no frame after the oversized one: {received[:1]!r:.80}"
    assert peak < 8 * MIB, f"{peak / MIB:.0f} MiB allocated while a 64 MiB frame arrived"
    assert [size for size, _ in rejected] == [announced]
    (gap,) = gaps.gaps
    assert gap.reason == "frame_too_large" and str(announced) in gap.detail
    assert not thread.is_alive()


def test_fragments_that_add_up_past_the_limit_are_one_oversized_frame() -> None:
    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            conn.sendall(ws_frame(b"[" * 1000, fin=False))
            for _ in range(2000):  # 2 MB in continuation frames of 1000 bytes
                conn.sendall(ws_frame(b"[" * 1000, opcode=0, fin=False))
        conn.sendall(ws_frame(b'{"type":"ping"}'))
        server.stopped.wait(5)  # holds the connection open until the test closes the server

    server = RawWebSocketServer(script)
    received: list[bytes] = []
    conn, gaps, rejected = connection_to(
        server, lambda raw, ms: received.append(raw), max_frame_bytes=MIB, stall_timeout_s=5
    )
    thread = run_in_thread(conn)
    try:
        assert wait_for(lambda: received == [b'{"type":"ping"}'], 20), received[:1]
    finally:
        conn.stop()
        thread.join(5)
        server.close()
    assert len(rejected) == 1 and rejected[0][0] > MIB
    assert [g.reason for g in gaps.gaps] == ["frame_too_large"]


def _drip(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(ws_header(1000))  # a 1000-byte frame, one byte every 0.1 s: 100 s in all
    for _ in range(1000):
        if stop.wait(0.1):
            return
        conn.sendall(b" ")


def test_a_slow_drip_is_detected_as_a_stall_and_replaced() -> None:
    def script(conn: socket.socket, n: int) -> None:
        if n == 0:
            _drip(conn, server.stopped)
        else:
            conn.sendall(ws_frame(b'{"type":"ping"}'))
            server.stopped.wait(10)

    server = RawWebSocketServer(script)
    received: list[bytes] = []
    conn, gaps, _ = connection_to(server, lambda raw, ms: received.append(raw), stall_timeout_s=1.0)
    started = time.monotonic()
    thread = run_in_thread(conn)
    try:
        assert wait_for(lambda: received == [b'{"type":"ping"}'], 6), "the drip was not cut"
        elapsed = time.monotonic() - started
    finally:
        conn.stop()
        thread.join(5)
        server.close()
    assert 1.0 <= elapsed < 4.0
    (gap,) = gaps.gaps
    assert gap.reason == "stall"


def test_stop_returns_promptly_while_a_frame_drips_in() -> None:
    server = RawWebSocketServer(lambda conn, n: _drip(conn, server.stopped))
    conn, _, _ = connection_to(server, lambda raw, ms: None, stall_timeout_s=30)
    thread = run_in_thread(conn)
    try:
        assert wait_for(lambda: conn.connections == 1, 5)
        time.sleep(0.5)  # well inside the drip
        stopped = time.monotonic()
        conn.stop()
        thread.join(5)
        took = time.monotonic() - stopped
    finally:
        server.close()
    assert not thread.is_alive(), "run() did not return after stop()"
    assert took < 2.5


def test_encoded_trades_stay_small() -> None:
    # the bounds on conditions keep every accepted trade far below a record
    h, sink = handler(encoder=TradeEncoder())
    h(frame(good(c=["X" * 32] * 32)), NOW)
    assert h.trades == 1 and len(sink.values[0]) < 4096


# -- the hostile classes through the real Kafka ------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_every_hostile_class_reaches_the_real_kafka_as_trades_or_dead_letters(
    stack: Any, unique_topic: Callable[[str], str], client: str
) -> None:
    from collector.producer import KafkaSink
    from collector.producer_confluent import ConfluentKafkaSink
    from tests.collector.conftest import create_topic, read_topic

    trades_topic, dlq_topic = unique_topic("hostile"), unique_topic("hostile-dlq")
    create_topic(stack, trades_topic, 2)
    create_topic(stack, dlq_topic, 1)
    sink_class = ConfluentKafkaSink if client == "confluent" else KafkaSink
    sink = sink_class(
        bootstrap_servers=stack.kafka.bootstrap_servers,
        trades_topic=trades_topic,
        dlq_topic=dlq_topic,
    )
    sink.setup()
    h = FrameHandler(
        FrameParser(SYMBOLS, source="feed"), sink, CollectorMetrics(), progress_interval_s=0
    )
    now = int(time.time() * 1000)
    hostile = [
        good(p=HUGE, t=now),
        good(v=HUGE, t=now),
        good(t=HUGE),
        good(c=["\ud800"], t=now),
        good(s="\ud800" + "X" * 2 * MIB, t=now),
        good(c=["C" * 2 * MIB], t=now),
    ]
    for item in hostile:
        h(frame(good(t=now), item), now)
    h(b'{"type":"trade","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", now)
    h.reject_oversized(300 * MIB, now)
    sink.close(30)  # raises DeliveryError if Kafka refused any record
    assert len(read_topic(stack, trades_topic)) == len(hostile)
    letters = [json.loads(r.value) for r in read_topic(stack, dlq_topic)]
    assert sorted(d["reason"] for d in letters) == sorted(
        [
            "invalid_price",
            "invalid_volume",
            "timestamp_out_of_range",
            "wrong_type",
            "unsubscribed_symbol",
            "field_too_large",
            "invalid_json",
            "frame_too_large",
        ]
    )
