"""An offline server of the Finnhub websocket protocol (asyncio, ``websockets``).

Protocol, as Finnhub speaks it: the client connects to ``ws://host:port/?token=T``; it sends
``{"type":"subscribe","symbol":"AAPL"}`` (or ``unsubscribe``); the server sends
``{"type":"trade","data":[{"s","p","t","v","c"}, ...]}`` frames for subscribed symbols,
``{"type":"ping"}`` keep-alives and ``{"type":"error","msg":...}`` frames (e.g. when a client
subscribes to more symbols than allowed). A wrong token gets HTTP 401 at the handshake.

The feed plays one market for everyone: each tick of the source is split by subscription and
sent to each client. The market clock pauses while nobody is subscribed, so no trade is generated
for nobody; with ``max_trades`` the feed stops after exactly that many trades were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from collector.feed.faults import FaultPlan, hostile_frame, junk_frame
from collector.feed.sources import Tick, TradeSource
from schemas.settings import SecretStr

__all__ = ["FeedOptions", "FeedServer", "FeedStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FeedOptions:
    """How the feed listens and behaves.

    :param host: interface (default loopback); :param port: 0 picks a free port.
    :param token: when set, connections must carry ``?token=<this>``; otherwise any is accepted.
    :param ping_interval_s: seconds between ``{"type":"ping"}`` frames (default 15).
    :param max_symbols: subscriptions per connection before an ``error`` frame (Finnhub: 50).
    :param max_trades: stop sending trades after exactly this many (pings go on).
    :param sent_log: write every trade frame sent here, one JSON line each.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: SecretStr | None = None
    ping_interval_s: float = 15.0
    max_symbols: int = 50
    max_trades: int | None = None
    sent_log: Path | None = None


@dataclass
class FeedStats:
    connections: int = 0
    trades_sent: int = 0
    trade_frames_sent: int = 0
    pings_sent: int = 0
    errors_sent: int = 0
    drops: int = 0
    stalls: int = 0
    junk_sent: Counter[str] = field(default_factory=Counter)
    hostile_sent: Counter[str] = field(default_factory=Counter)
    drips: int = 0
    finished: bool = False


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    symbols: set[str] = field(default_factory=set)


class FeedServer:
    """Serves ``source`` over the Finnhub protocol, with ``faults`` injected.

    Use :meth:`run` inside asyncio, or :meth:`start_in_thread` / :meth:`stop` from sync code::

        server = FeedServer(SimulatedMarket(["AAPL"], rate=100), FeedOptions(port=0))
        port = server.start_in_thread()
        ...
        server.stop()
    """

    def __init__(
        self, source: TradeSource, options: FeedOptions, faults: FaultPlan | None = None
    ) -> None:
        self.source = source
        self.options = options
        self.faults = faults or FaultPlan()
        self.stats = FeedStats()
        self.port = options.port
        self._clients: set[_Client] = set()
        self._subscribed = asyncio.Event()
        self._stall_until = 0.0
        self._paused_s = 0.0
        self._stalled_once = False
        self._next_drop = self.faults.drop_every
        self._junk_index = 0
        self._hostile_index = 0
        self._dripped = False
        self._dripping = False
        self._aborted_mid_frame = False
        self._sent_log: IO[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- handshake and client messages ---------------------------------------------------------
    def _check_token(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.options.token is None:
            return None
        given = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        if given != self.options.token.get_secret_value():
            logger.warning("handshake from %s refused: wrong or missing token", conn.remote_address)
            return conn.respond(HTTPStatus.UNAUTHORIZED, "Invalid API key\n")
        return None

    async def _send_error(self, client: _Client, msg: str) -> None:
        self.stats.errors_sent += 1
        with contextlib.suppress(ConnectionClosed):
            await client.conn.send(json.dumps({"type": "error", "msg": msg}))

    async def _handle(self, conn: ServerConnection) -> None:
        client = _Client(conn)
        self._clients.add(client)
        self.stats.connections += 1
        logger.info("client %s connected (%d open)", conn.remote_address, len(self._clients))
        try:
            async for message in conn:
                try:
                    request = json.loads(message)
                    kind, symbol = request["type"], request["symbol"]
                except (ValueError, TypeError, KeyError):
                    await self._send_error(client, "Invalid message")
                    continue
                if kind == "subscribe" and isinstance(symbol, str) and symbol:
                    if (
                        symbol not in client.symbols
                        and len(client.symbols) >= self.options.max_symbols
                    ):
                        await self._send_error(client, "Subscribing to too many symbols")
                        continue
                    client.symbols.add(symbol)
                    self._subscribed.set()
                elif kind == "unsubscribe" and isinstance(symbol, str):
                    client.symbols.discard(symbol)
                else:
                    await self._send_error(client, "Invalid message")
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            if not any(c.symbols for c in self._clients):
                self._subscribed.clear()
            logger.info("client %s disconnected", conn.remote_address)

    # -- sending -------------------------------------------------------------------------------
    def _stalled(self) -> bool:
        return time.monotonic() < self._stall_until

    async def _wait_for_audience(self) -> None:
        """Hold the market clock while nobody is subscribed or a stall is being injected."""
        while not self._subscribed.is_set() or self._stalled():
            wait_from = time.monotonic()
            if self._stalled():
                await asyncio.sleep(self._stall_until - time.monotonic())
            else:
                await self._subscribed.wait()
            self._paused_s += time.monotonic() - wait_from

    async def _broadcast_tick(self, tick: Tick) -> None:
        remaining = (
            None
            if self.options.max_trades is None
            else self.options.max_trades - self.stats.trades_sent
        )
        for frame in tick.frames:
            if remaining is not None and remaining <= 0:
                return
            # A fault may have dropped everyone mid-tick: the rest waits for the next client.
            await self._wait_for_audience()
            clients = [c for c in self._clients if c.symbols]
            if not isinstance(frame, dict) or frame.get("type") != "trade":
                for c in clients:
                    await self._send(c, frame)
                continue
            data = [
                d
                for d in frame["data"]
                if not isinstance(d, dict) or any(d.get("s") in c.symbols for c in clients)
            ]
            if remaining is not None:
                data = data[:remaining]
                remaining -= len(data)
            if not data:
                continue
            sent = {**frame, "data": data}
            self.stats.trades_sent += len(data)
            self.stats.trade_frames_sent += 1
            drip = self._drip_due()
            abort = self._abort_due()
            for c in clients:
                mine = [d for d in data if not isinstance(d, dict) or d.get("s") in c.symbols]
                if not mine:
                    continue
                payload = {**frame, "data": mine} if len(mine) < len(data) else sent
                if drip or abort:
                    await self._drip(c, payload, abort_halfway=abort)
                else:
                    await self._send(c, payload)
            if self._sent_log is not None:
                # sent_ms: when the frame left (the feed's clock pauses, so it can differ from t).
                logged = {**sent, "sent_ms": int(time.time() * 1000)}
                self._sent_log.write(json.dumps(logged, separators=(",", ":")) + "\n")
            await self._after_trade_frame(clients)

    async def _send(self, client: _Client, frame: dict[str, Any] | str | bytes) -> None:
        payload = (
            frame if isinstance(frame, str | bytes) else json.dumps(frame, separators=(",", ":"))
        )
        with contextlib.suppress(ConnectionClosed):
            await client.conn.send(payload)

    def _drip_due(self) -> bool:
        f = self.faults
        if f.drip_after is None or self._dripped or self.stats.trades_sent < f.drip_after:
            return False
        self._dripped = True
        self.stats.drips += 1
        return True

    def _abort_due(self) -> bool:
        after = self.faults.abort_mid_frame_after
        if after is None or self._aborted_mid_frame or self.stats.trades_sent < after:
            return False
        self._aborted_mid_frame = True
        self.stats.drops += 1
        return True

    async def _drip(self, client: _Client, frame: dict[str, Any], abort_halfway: bool) -> None:
        """One unmasked text frame written to the socket a byte at a time over ``drip_s``;
        pings and other frames wait (they would corrupt the half-sent frame). With
        ``abort_halfway``, half of it at once, then a TCP reset."""
        payload = json.dumps(frame, separators=(",", ":")).encode()
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([len(payload)])
        elif len(payload) < 65536:
            header += bytes([126]) + len(payload).to_bytes(2, "big")
        else:
            header += bytes([127]) + len(payload).to_bytes(8, "big")
        raw = header + payload
        transport = client.conn.transport
        if abort_halfway:
            logger.warning("fault: aborting the connection in the middle of a frame")
            transport.write(raw[: len(raw) // 2])
            transport.abort()
            self._clients.discard(client)
            if not any(c.symbols for c in self._clients):
                self._subscribed.clear()
            return
        pause = self.faults.drip_s / len(raw)
        logger.warning("fault: dripping a %d-byte frame over %.1f s", len(raw), self.faults.drip_s)
        # Until the last byte, however late: on a loaded machine each sleep overruns its pause.
        self._dripping = True
        try:
            for i in range(len(raw)):
                if transport.is_closing():
                    break
                transport.write(raw[i : i + 1])
                await asyncio.sleep(pause)
        finally:
            self._dripping = False

    async def _after_trade_frame(self, clients: list[_Client]) -> None:
        f = self.faults
        frames = self.stats.trade_frames_sent
        if f.hostile_every and frames % f.hostile_every == 0:
            for c in clients:
                symbol = next(iter(sorted(c.symbols)))
                kind, frame = hostile_frame(self._hostile_index, symbol, int(time.time() * 1000))
                await self._send(c, frame)
                self.stats.hostile_sent[kind] += 1
            self._hostile_index += 1
        if f.junk_every and frames % f.junk_every == 0:
            for c in clients:
                symbol = next(iter(sorted(c.symbols)))
                reason, junk = junk_frame(self._junk_index, symbol, int(time.time() * 1000))
                await self._send(c, junk)
                self.stats.junk_sent[reason] += 1
            self._junk_index += 1
        if f.error_every and frames % f.error_every == 0:
            for c in clients:
                await self._send_error(c, "Feed fault injection: this is a test error")
        if self._next_drop is not None and self.stats.trades_sent >= self._next_drop:
            self._next_drop += f.drop_every or 0
            self.stats.drops += 1
            logger.warning("fault: dropping %d connection(s) (%s)", len(clients), f.drop_mode)
            for c in clients:
                if f.drop_mode == "abort":
                    c.conn.transport.abort()
                else:
                    await c.conn.close(1001, "feed fault: drop")
                self._clients.discard(c)
            if not any(c.symbols for c in self._clients):
                self._subscribed.clear()
        if (
            f.stall_after is not None
            and not self._stalled_once
            and self.stats.trades_sent >= f.stall_after
        ):
            self._stalled_once = True
            self.stats.stalls += 1
            self._stall_until = time.monotonic() + f.stall_s
            logger.warning("fault: stalling for %.1f s (no frames at all)", f.stall_s)

    async def _pump(self) -> None:
        started = time.monotonic()
        ticks: Iterator[Tick] = self.source.ticks(int(time.time() * 1000))
        for tick in ticks:
            await self._wait_for_audience()
            delay = started + self._paused_s + tick.due_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._broadcast_tick(tick)
            if self._sent_log is not None:
                self._sent_log.flush()  # readers follow the log while the feed runs
            if (
                self.options.max_trades is not None
                and self.stats.trades_sent >= self.options.max_trades
            ):
                break
        self.stats.finished = True
        if self._sent_log is not None:
            self._sent_log.flush()
        logger.info("source finished: %d trades sent", self.stats.trades_sent)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.options.ping_interval_s)
            for c in list(self._clients):
                # checked before each send: the previous one may have yielded to a drip's start
                if self._stalled() or self._dripping:
                    break
                await self._send(c, '{"type":"ping"}')
                self.stats.pings_sent += 1

    # -- running -------------------------------------------------------------------------------
    async def run(self, ready: threading.Event | None = None) -> None:
        """Serve until :meth:`stop` (or cancellation)."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._subscribed = asyncio.Event()
        if self.options.sent_log is not None:
            self._sent_log = open(self.options.sent_log, "w", encoding="utf-8")
        server: Server
        async with serve(
            self._handle,
            self.options.host,
            self.options.port,
            process_request=self._check_token,
            compression=None,
            max_size=65_536,
            ping_interval=None,
            close_timeout=2,
            write_limit=4 * 1024 * 1024,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            logger.info("feed listening on ws://%s:%d", self.options.host, self.port)
            if ready is not None:
                ready.set()
            tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._pinger())]
            for task in tasks:
                task.add_done_callback(self._on_task_done)
            try:
                await self._stopped.wait()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if self._sent_log is not None:
                    self._sent_log.close()

    @property
    def client_count(self) -> int:
        """Connections open right now."""
        return len(self._clients)

    @property
    def error(self) -> BaseException | None:
        """Why the server stopped on its own (a source or task failure), if it did."""
        return self._error

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._error = task.exception()
            logger.error("feed task %s failed; stopping", task.get_coro(), exc_info=self._error)
            if self._stopped is not None:
                self._stopped.set()

    def start_in_thread(self, timeout_s: float = 10.0) -> int:
        """Run the server on a daemon thread; returns the port once it listens."""

        def target() -> None:
            try:
                asyncio.run(self.run(self._ready))
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
                self._ready.set()

        self._thread = threading.Thread(target=target, name="feed", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"feed did not start listening within {timeout_s:g} s")
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` (or from another thread)."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout_s)
