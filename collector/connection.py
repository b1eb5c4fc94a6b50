"""The websocket lifecycle: connect -> subscribe -> read, reconnecting forever until stopped.

One class, :class:`FinnhubConnection`, owns it:

* a stall watchdog: every read returns within ``_POLL_S``, whole frame or not (a server that
  drips a frame a byte at a time cannot hold a read), and when no complete frame at all (not even
  a Finnhub ``ping``) came for ``stall_timeout_s`` the socket is closed and reopened; a
  :meth:`~FinnhubConnection.stop` is seen within the same ``_POLL_S``;
* a frame size limit (``max_frame_bytes``, fragments of one message added up) checked on each
  frame's header, before its payload is read: a bigger frame is never buffered, it becomes a
  dead letter (``frame_too_large``) and, as the stream cannot be resynchronised, a reconnect;
* reconnects with capped exponential backoff and jitter (:func:`backoff_delay`); the backoff
  resets after a successful subscribe;
* every period without a connection is reported as a :class:`~collector.models.Gap`, from the
  last frame received to the moment the symbols were subscribed again;
* the token is only ever in the URL handed to the socket; every message we log or raise goes
  through :meth:`CollectorConfig.redact`.

The socket factory is injected, so tests can drive the lifecycle with a scripted socket.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import websocket
from websocket._abnf import frame_buffer  # no public hook sees a frame's length before its payload

from collector.config import CollectorConfig
from collector.exceptions import AuthenticationError, FeedConnectionError
from collector.gaps import GapSink
from collector.metrics import CollectorMetrics
from collector.models import Gap, GapReason

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "BoundedWebSocket",
    "ConnectFactory",
    "FinnhubConnection",
    "FrameTooLargeError",
    "WebSocketLike",
    "backoff_delay",
    "open_websocket",
]

logger = logging.getLogger(__name__)

OPCODE_TEXT = websocket.ABNF.OPCODE_TEXT
OPCODE_BINARY = websocket.ABNF.OPCODE_BINARY
OPCODE_CLOSE = websocket.ABNF.OPCODE_CLOSE
# How often a blocked read wakes up to check the stop flag and the stall watchdog.
_POLL_S = 0.5
# How long closing waits for the server's close frame.
_CLOSE_WAIT_S = 1.0
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
_DATA_OPCODES = (
    websocket.ABNF.OPCODE_TEXT,
    websocket.ABNF.OPCODE_BINARY,
    websocket.ABNF.OPCODE_CONT,
)


class FrameTooLargeError(websocket.WebSocketException):
    """A frame (or a fragmented message so far) announced more than the limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a frame of {size} bytes, more than the {limit}-byte limit")
        self.size = size
        self.limit = limit


class _BoundedFrameBuffer(frame_buffer):
    """websocket-client's frame reader, refusing a frame by its header (before its payload)."""

    def __init__(self, ws: BoundedWebSocket, skip_utf8_validation: bool) -> None:
        super().__init__(ws._recv, skip_utf8_validation)
        self._ws = ws

    def recv_length(self) -> None:
        super().recv_length()
        assert self.header is not None and self.length is not None
        opcode = self.header[4]
        so_far = self._ws.message_bytes if opcode == websocket.ABNF.OPCODE_CONT else 0
        if so_far + self.length > self._ws.max_frame_bytes:
            self._ws.broken = True  # the payload stays unread: the stream is lost
            raise FrameTooLargeError(so_far + self.length, self._ws.max_frame_bytes)


class BoundedWebSocket(websocket.WebSocket):
    """``websocket.WebSocket`` with a bounded frame size and reads that cannot be held open.

    * a frame, or the fragments of one message together, may not exceed ``max_frame_bytes``:
      :class:`FrameTooLargeError` is raised on its header, so memory stays bounded;
    * :meth:`recv_data` raises ``WebSocketTimeoutException`` once ``read_budget_s`` has passed,
      also in the middle of a frame that trickles in (websocket-client keeps the partial frame,
      so the next call resumes it); the socket timeout alone only bounds each ``recv()``;
    * :meth:`close` waits at most ``_CLOSE_WAIT_S`` for the server, and aborts the socket after
      an oversized frame instead of reading it.
    """

    max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
    read_budget_s = _POLL_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_buffer = _BoundedFrameBuffer(self, self.frame_buffer.skip_utf8_validation)
        self.message_bytes = 0  # fragments of the message being received
        self.broken = False
        self._deadline = float("inf")

    def _recv(self, bufsize: int) -> bytes:
        if time.monotonic() >= self._deadline:
            raise websocket.WebSocketTimeoutException("read budget used up")
        data: bytes = super()._recv(bufsize)
        return data

    def recv_frame(self) -> Any:
        frame = super().recv_frame()
        if frame.opcode in _DATA_OPCODES:
            self.message_bytes = 0 if frame.fin else self.message_bytes + len(frame.data)
        return frame

    def recv_data(self, control_frame: bool = False) -> tuple[int, Any]:
        self._deadline = time.monotonic() + self.read_budget_s
        try:
            return super().recv_data(control_frame)
        finally:
            self._deadline = float("inf")

    def close(self, *args: Any, **kwargs: Any) -> None:
        if self.broken:
            self.shutdown()
            return
        self._deadline = time.monotonic() + _CLOSE_WAIT_S
        try:
            super().close(timeout=_CLOSE_WAIT_S)
        finally:
            self._deadline = float("inf")


class WebSocketLike(Protocol):
    """The part of ``websocket.WebSocket`` the connection uses."""

    def send(self, payload: str) -> Any: ...

    def recv_data(self) -> tuple[int, Any]: ...

    def settimeout(self, timeout: float | None) -> None: ...

    def close(self) -> None: ...


ConnectFactory = Callable[[str, float], WebSocketLike]


def open_websocket(
    url: str, timeout: float, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> WebSocketLike:
    """Open a :class:`BoundedWebSocket`. UTF-8 is checked by the parser, not by the socket, so
    a bad frame becomes a dead letter instead of a broken connection."""
    ws = cast(
        BoundedWebSocket,
        websocket.create_connection(
            url,
            timeout=timeout,
            skip_utf8_validation=True,
            enable_multithread=False,
            class_=BoundedWebSocket,
        ),
    )
    ws.max_frame_bytes = max_frame_bytes
    ws.read_budget_s = min(_POLL_S, timeout)
    return ws


def backoff_delay(attempt: int, *, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): ``initial_s * 2**attempt``, capped
    at ``max_s``, with "equal jitter" (a uniform half of it), so many collectors that lost the
    same server do not come back in lockstep, and no delay is ever near zero.

    >>> rng = random.Random(1)
    >>> delays = [backoff_delay(a, initial_s=1, max_s=8, rng=rng) for a in range(6)]
    >>> [(min(8, 2**a) / 2 <= d <= min(8, 2**a)) for a, d in enumerate(delays)]
    [True, True, True, True, True, True]
    """
    base = min(max_s, initial_s * 2 ** min(attempt, 62))
    return base / 2 + rng.uniform(0, base / 2)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FinnhubConnection:
    """Keeps one websocket subscribed to ``config.symbols`` and hands every data frame to
    ``on_frame(raw_bytes, received_ms)``.

    :param config: URL, token, symbols, timeouts and backoff.
    :param on_frame: called on the reading thread for each text/binary frame; exceptions it
        raises stop the connection and propagate from :meth:`run`.
    :param gaps: where gaps are recorded.
    :param metrics: reconnects and the ``connected`` gauge.
    :param connect: socket factory ``(url, timeout) -> socket`` (default
        :func:`open_websocket` with ``config.max_frame_bytes``).
    :param on_idle: called about twice a second when no frame arrives (progress reports).
    :param resume_gap: ``(start_ms, reason, detail)`` of a gap that began before this run (a
        restart, Kafka unreachable at start); recorded at the first subscribe, like a reconnect.
    :param on_oversized: ``(size, received_ms)`` of each frame refused for its size, before the
        reconnect (the pipeline makes it a dead letter).
    :raises AuthenticationError: from :meth:`run`, when the server refuses the token.
    """

    def __init__(
        self,
        config: CollectorConfig,
        on_frame: Callable[[bytes, int], None],
        *,
        gaps: GapSink,
        metrics: CollectorMetrics,
        connect: ConnectFactory | None = None,
        on_idle: Callable[[], None] | None = None,
        on_oversized: Callable[[int, int], None] | None = None,
        resume_gap: tuple[int, GapReason, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.resume_gap = resume_gap
        self.config = config
        self.on_frame = on_frame
        self.gaps = gaps
        self.metrics = metrics
        self._connect = connect or functools.partial(
            open_websocket, max_frame_bytes=config.max_frame_bytes
        )
        self._on_idle = on_idle or (lambda: None)
        self._on_oversized = on_oversized or (lambda size, ms: None)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.connections = 0
        self.last_frame_ms = 0
        self._open_gap: tuple[int, GapReason, str] | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return soon (safe from a signal handler or another thread)."""
        self._stop.set()

    def wait_stopped(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True as soon as :meth:`stop` was called."""
        return self._stop.wait(timeout_s)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- one connection ------------------------------------------------------------------------
    def _open(self) -> WebSocketLike:
        url = self.config.ws_url
        try:
            ws = self._connect(self.config.connect_url, self.config.connect_timeout_s)
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code in (401, 403):
                raise AuthenticationError(
                    f"{url}: HTTP {exc.status_code}: the server refused the token "
                    "(check FINNHUB_TOKEN)"
                ) from None
            raise FeedConnectionError(
                f"{url}: handshake refused with HTTP {exc.status_code}"
            ) from None
        # `from None`: the original exception may quote the URL, which holds the token.
        except (websocket.WebSocketException, OSError) as exc:
            raise FeedConnectionError(
                f"{url}: cannot connect: {type(exc).__name__}: {self.config.redact(str(exc))}"
            ) from None
        try:
            for symbol in self.config.symbols:
                ws.send(json.dumps({"type": "subscribe", "symbol": symbol}))
        except (websocket.WebSocketException, OSError) as exc:
            ws.close()
            raise FeedConnectionError(
                f"{url}: subscribe failed: {type(exc).__name__}: {self.config.redact(str(exc))}"
            ) from None
        ws.settimeout(min(_POLL_S, self.config.stall_timeout_s))
        return ws

    def _read(self, ws: WebSocketLike, should_stop: Callable[[], bool]) -> tuple[GapReason, str]:
        """Read until the connection ends (returns why) or a stop is requested (returns "")."""
        stall_s = self.config.stall_timeout_s
        last_frame = time.monotonic()
        on_frame = self.on_frame
        while not self._stop.is_set() and not should_stop():
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                self._on_idle()
                silent = time.monotonic() - last_frame
                if silent >= stall_s:
                    return "stall", f"no frame for {silent:.1f} s (stall timeout {stall_s:g} s)"
                continue
            except websocket.WebSocketConnectionClosedException:
                return "disconnect", "connection closed without a close frame"
            except FrameTooLargeError as exc:
                self._on_oversized(exc.size, _now_ms())
                return "frame_too_large", f"{exc} (COLLECTOR_MAX_FRAME_BYTES)"
            except (websocket.WebSocketException, OSError) as exc:
                return "disconnect", f"{type(exc).__name__}: {self.config.redact(str(exc))}"
            if opcode == OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                return "server_closed", f"close frame from server (code {code})"
            if opcode in (OPCODE_TEXT, OPCODE_BINARY):
                self.last_frame_ms = _now_ms()
                last_frame = time.monotonic()
                on_frame(data, self.last_frame_ms)
        return "disconnect", ""

    def _close(self, ws: WebSocketLike, *, unsubscribe: bool) -> None:
        try:
            if unsubscribe:
                for symbol in self.config.symbols:
                    ws.send(json.dumps({"type": "unsubscribe", "symbol": symbol}))
        except (websocket.WebSocketException, OSError):
            pass  # closing anyway; the server forgets subscriptions of a closed socket
        finally:
            ws.close()

    def _record_gap(self, start_ms: int, reason: GapReason, detail: str) -> None:
        self.gaps.record(
            Gap(
                start_ms=start_ms,
                end_ms=_now_ms(),
                symbols=self.config.symbols,
                reason=reason,
                detail=detail,
                source=self.config.source,
                collector_id=self.config.collector_id,
            )
        )

    # -- the lifecycle -------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Connect, subscribe and read until :meth:`stop` or ``should_stop()``; reconnect after
        every disconnect or stall and record the gap once subscribed again."""
        # The gap being lived through, (start_ms, reason, detail): recorded at the next
        # subscribe, or at the stop if none comes.
        self._open_gap = self.resume_gap
        attempt = 0
        try:
            while not self._stop.is_set() and not should_stop():
                try:
                    ws = self._open()
                except AuthenticationError:
                    raise
                except FeedConnectionError as exc:
                    self._connect_failed(exc, attempt)
                    attempt += 1
                    continue
                self._subscribed()
                reason, detail = self._read_and_close(ws, should_stop)
                if not detail:  # stopped on request
                    break
                self._connection_lost(reason, detail)
                attempt = 1
        finally:
            if self._open_gap is not None:
                start_ms, reason, detail = self._open_gap
                self._record_gap(start_ms, reason, f"{detail}; stopped before reconnecting")

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt,
            initial_s=self.config.backoff_initial_s,
            max_s=self.config.backoff_max_s,
            rng=self._rng,
        )

    def _connect_failed(self, exc: FeedConnectionError, attempt: int) -> None:
        if self._open_gap is None:
            self._open_gap = (_now_ms(), "connect_failed", str(exc))
        delay = self._backoff(attempt)
        logger.warning("%s (attempt %d); retrying in %.2f s", exc, attempt + 1, delay)
        self._stop.wait(delay)

    def _subscribed(self) -> None:
        self.connections += 1
        self.metrics.connected.set(1)
        if self._open_gap is not None:
            start_ms, reason, detail = self._open_gap
            self.metrics.reconnects.labels(reason).inc()
            self._record_gap(start_ms, reason, detail)
            self._open_gap = None
        logger.info(
            "connection %d to %s: subscribed %d symbol(s)",
            self.connections,
            self.config.ws_url,
            len(self.config.symbols),
        )
        # The last sign of life: a connection that never sends a frame is silent from its
        # subscribe on.
        self.last_frame_ms = _now_ms()

    def _read_and_close(
        self, ws: WebSocketLike, should_stop: Callable[[], bool]
    ) -> tuple[GapReason, str]:
        try:
            return self._read(ws, should_stop)
        finally:
            self.metrics.connected.set(0)
            self._close(ws, unsubscribe=self._stop.is_set() or should_stop())

    def _connection_lost(self, reason: GapReason, detail: str) -> None:
        self._open_gap = (self.last_frame_ms, reason, detail)
        delay = self._backoff(0)
        logger.warning(
            "connection %d to %s lost (%s: %s); reconnecting in %.2f s",
            self.connections,
            self.config.ws_url,
            reason,
            detail,
            delay,
        )
        self._stop.wait(delay)
