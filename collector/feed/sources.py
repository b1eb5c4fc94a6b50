"""What the offline feed serves: a simulated market, or a replay of recorded trades or frames.

Every source yields :class:`Tick` s: a due time (seconds after the stream started, on the feed's
paused-aware clock) and the frames to send then. Trade times are always "now-based": the
simulator stamps trades with their due time, and replays shift the recorded times so the first
trade happens at the start of the stream (``start_ms``). Sources are deterministic for a seed.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from collector.exceptions import FeedError

__all__ = [
    "CsvReplay",
    "JsonlReplay",
    "SimulatedMarket",
    "Tick",
    "TradeSource",
    "is_equity",
    "us_market_open",
]

# Trades of one symbol in one tick go out as frames of at most this many trades.
MAX_TRADES_PER_FRAME = 1000


@dataclass(frozen=True, slots=True)
class Tick:
    """Frames due ``due_s`` seconds after the stream started.

    ``frames`` are Finnhub-shaped dicts; a ``str``/``bytes`` element is sent verbatim (recorded
    frames that are not JSON). ``trades`` counts the trades in them.
    """

    due_s: float
    frames: list[dict[str, Any] | str | bytes] = field(default_factory=list)
    trades: int = 0


class TradeSource:
    """Base of sources: iterate to get ticks."""

    symbols: tuple[str, ...] = ()

    def ticks(self, start_ms: int) -> Iterator[Tick]:
        raise NotImplementedError


def is_equity(symbol: str) -> bool:
    """Finnhub crypto and FX symbols carry an exchange prefix (``BINANCE:BTCUSDT``).

    >>> is_equity("AAPL"), is_equity("BINANCE:BTCUSDT")
    (True, False)
    """
    return ":" not in symbol


def us_market_open(ms: int) -> bool:
    """Regular US trading hours, simplified: Monday to Friday 13:30-20:00 UTC (EDT; no holidays).

    >>> us_market_open(1680286537580)  # Fri 2023-03-31 18:15 UTC
    True
    >>> us_market_open(1680386537580)  # Sat 2023-04-01
    False
    """
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    minutes = t.hour * 60 + t.minute
    return t.weekday() < 5 and 13 * 60 + 30 <= minutes < 20 * 60


def _frames(trades: list[dict[str, Any]]) -> list[dict[str, Any] | str | bytes]:
    """Finnhub-style trade frames of at most ``MAX_TRADES_PER_FRAME`` trades each."""
    return [
        {"data": trades[i : i + MAX_TRADES_PER_FRAME], "type": "trade"}
        for i in range(0, len(trades), MAX_TRADES_PER_FRAME)
    ]


_BASE_PRICES = {
    "BINANCE:BTCUSDT": 61_000.0,
    "BINANCE:ETHUSDT": 2_700.0,
    "BINANCE:XRPUSDT": 0.52,
    "BINANCE:DOGEUSDT": 0.105,
    "AAPL": 190.0,
    "AMZN": 180.0,
    "MSFT": 410.0,
}
_EQUITY_CONDITIONS = (["1", "12"], ["1"], ["1", "8", "12"], ["1", "8"], ["1", "24"])


@dataclass
class _SymbolState:
    symbol: str
    price: float
    variance: float  # GARCH(1,1) variance of the per-trade log return
    weight: float  # share of the market's trades
    tick_size: float
    equity: bool


class SimulatedMarket(TradeSource):
    """A multi-symbol market with the features real trade streams have.

    * **bursty arrivals**: the trade rate is modulated by a self-exciting intensity (a burst
      raises it, it decays back), so busy seconds carry many times the average;
    * **prices**: a random walk in log price with GARCH(1,1) volatility clustering and rare
      jumps, rounded to the symbol's tick size;
    * **sizes**: equities mix round lots (multiples of 100) and log-normal odd lots, crypto sizes
      are log-normal with 5 decimals; about 0.2 % of crypto prints are ``v = 0`` price updates;
    * **same-millisecond trades**: trades come in clusters that share one millisecond (a sweep
      through the book), often at the same price and size;
    * **market hours** (optional): equities trade only in regular US hours.

    :param symbols: what to simulate; unknown symbols start at price 100.
    :param rate: average trades per second over all symbols.
    :param seed: for the random generator (same seed, same start -> same stream).
    :param tick_s: granularity of the schedule (default 10 ms).
    :param market_hours: when true, equities are silent outside regular US hours.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        rate: float,
        seed: int = 0,
        tick_s: float = 0.01,
        market_hours: bool = False,
    ) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise FeedError(f"--rate {rate!r}: must be a positive number of trades per second")
        if not symbols:
            raise FeedError("--symbols: at least one symbol is needed")
        self.symbols = tuple(symbols)
        self.rate = rate
        self.seed = seed
        self.tick_s = tick_s
        self.market_hours = market_hours

    def _states(self, rng: np.random.Generator) -> list[_SymbolState]:
        raw_weights = rng.lognormal(0.0, 0.6, len(self.symbols))
        weights = raw_weights / raw_weights.sum()
        states = []
        for symbol, weight in zip(self.symbols, weights, strict=True):
            price = _BASE_PRICES.get(symbol, 100.0)
            tick = 0.01 if price >= 1 else 0.00001
            states.append(_SymbolState(symbol, price, 1e-8, float(weight), tick, is_equity(symbol)))
        return states

    def ticks(self, start_ms: int) -> Iterator[Tick]:
        rng = np.random.default_rng(self.seed)
        states = self._states(rng)
        intensity = 1.0  # burst multiplier, mean-reverting to 1
        n = 0
        tick_ms = self.tick_s * 1000
        while True:
            n += 1
            due_s = n * self.tick_s
            base_ms = start_ms + int((n - 1) * tick_ms)
            # Self-excitation: bursts arrive at random and decay within about a second.
            intensity = 1.0 + (intensity - 1.0) * math.exp(-self.tick_s / 0.8)
            if rng.random() < self.tick_s * 0.5:
                intensity += rng.exponential(6.0)
            # Keep the long-run average at `rate`: E[intensity] = 1 + 0.5 * 6 * 0.8 = 3.4.
            lam_total = self.rate * self.tick_s * intensity / 3.4
            frames: list[dict[str, Any] | str | bytes] = []
            trades = 0
            for st in states:
                if st.equity and self.market_hours and not us_market_open(base_ms):
                    continue
                count = int(rng.poisson(lam_total * st.weight))
                if count:
                    batch = self._trades(rng, st, count, base_ms, tick_ms)
                    frames.extend(_frames(batch))
                    trades += len(batch)
            yield Tick(due_s, frames, trades)

    def _trades(
        self, rng: np.random.Generator, st: _SymbolState, count: int, base_ms: int, tick_ms: float
    ) -> list[dict[str, Any]]:
        # Clusters of trades share a millisecond: sizes 1, 2, 3... with a geometric tail.
        out: list[dict[str, Any]] = []
        offsets = np.sort(rng.integers(0, max(1, int(tick_ms)), size=count)).tolist()
        shocks = rng.standard_normal(count).tolist()
        jumps = (rng.random(count) < 2e-4).tolist()
        same_ms = (rng.random(count) < 0.55).tolist()
        sizes = rng.lognormal(0.0, 1.2, count).tolist()
        if st.equity:
            lots = (100 * rng.geometric(0.6, count)).tolist()
            is_lot = (rng.random(count) < 0.4).tolist()
            conds = rng.integers(0, len(_EQUITY_CONDITIONS), count).tolist()
        else:
            updates = (rng.random(count) < 0.002).tolist()
            scale = 0.01 if st.price > 1000 else (1.0 if st.price > 10 else 1000.0)
        symbol, tick_size = st.symbol, st.tick_size
        t = base_ms + offsets[0]
        for i in range(count):
            if i and not same_ms[i]:
                t = max(t, base_ms + offsets[i])
            # GARCH(1,1): persistent volatility, unconditional per-trade sd about 1e-4.
            sd = math.sqrt(st.variance)
            r = sd * shocks[i]
            if jumps[i]:
                r += float(rng.normal(0.0, 50 * sd))
            st.variance = min(1e-4, 1e-10 + 0.08 * r * r + 0.91 * st.variance)
            if not (i and same_ms[i]):
                st.price = max(tick_size, st.price * math.exp(r))
            price = round(round(st.price / tick_size) * tick_size, 8)
            if st.equity:
                volume: float = lots[i] if is_lot[i] else max(1, int(sizes[i] * 20))
                out.append(
                    {
                        "c": _EQUITY_CONDITIONS[conds[i]],
                        "p": price,
                        "s": symbol,
                        "t": t,
                        "v": volume,
                    }
                )
            else:
                volume = 0 if updates[i] else (round(sizes[i] * scale, 5) or 0.00001)
                out.append({"c": None, "p": price, "s": symbol, "t": t, "v": volume})
        return out


class CsvReplay(TradeSource):
    """Replays a CSV of trades (columns ``symbol, t_ms, price, volume``; ``recv_ns`` when
    present gives the arrival order's pacing) rebased to the stream start.

    Trade time ``t`` becomes ``start_ms + (t - t0) / speed``; trades go out in file order, paced
    by arrival time (``recv_ns``, else ``t_ms``), one frame per symbol per 10 ms tick, as
    Finnhub batches them.

    :param speed: replay speed (1 = real time); ignored when ``rate`` is given.
    :param rate: pace to this many trades per second instead; the time axis is compressed by the
        same factor, so trade times still match the moment they are sent.
    :param loop: start again at the end (each pass continues the clock).
    :param limit: serve at most this many rows per pass.
    """

    def __init__(
        self,
        path: Path,
        *,
        speed: float = 1.0,
        rate: float | None = None,
        loop: bool = False,
        limit: int | None = None,
        tick_s: float = 0.01,
    ) -> None:
        self.path = path
        self.rows = self._load(path, limit)
        self.symbols = tuple(dict.fromkeys(r[0] for r in self.rows))
        self.loop = loop
        self.tick_s = tick_s
        first, last = self.rows[0][4], self.rows[-1][4]
        span_ms = max(1.0, float(last - first))
        if rate is not None:
            if rate <= 0:
                raise FeedError(f"--rate {rate!r}: must be > 0")
            speed = span_ms / (len(self.rows) / rate * 1000)
        if speed <= 0 or not math.isfinite(speed):
            raise FeedError(f"--speed {speed!r}: must be > 0")
        self.speed = speed
        self.span_ms = span_ms

    @staticmethod
    def _load(path: Path, limit: int | None) -> list[tuple[str, int, float, float, float]]:
        rows: list[tuple[str, int, float, float, float]] = []
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                missing = {"symbol", "t_ms", "price", "volume"} - set(reader.fieldnames or ())
                if missing:
                    raise FeedError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
                has_recv = "recv_ns" in (reader.fieldnames or ())
                for lineno, row in enumerate(reader, start=2):
                    try:
                        t = int(row["t_ms"])
                        pace = int(row["recv_ns"]) / 1e6 if has_recv else float(t)
                        rows.append(
                            (row["symbol"], t, float(row["price"]), float(row["volume"]), pace)
                        )
                    except (TypeError, ValueError):
                        raise FeedError(f"{path}:{lineno}: not a trade row: {row}") from None
                    if limit is not None and len(rows) >= limit:
                        break
        except OSError as exc:
            raise FeedError(f"{path}: cannot read ({exc.strerror})") from None
        if not rows:
            raise FeedError(f"{path}: no trades")
        return rows

    def ticks(self, start_ms: int) -> Iterator[Tick]:
        pass_start_s = 0.0
        t0 = self.rows[0][1]
        pace0 = self.rows[0][4]
        while True:
            offset_ms = start_ms + pass_start_s * 1000
            tick_index = 0
            batch: dict[str, list[dict[str, Any]]] = {}
            trades = 0
            for symbol, t, price, volume, pace in self.rows:
                index = int(max(0.0, (pace - pace0) / self.speed / 1000) / self.tick_s)
                if index != tick_index and batch:
                    yield self._tick(pass_start_s, tick_index, batch, trades)
                    batch, trades = {}, 0
                tick_index = index
                new_t = int(offset_ms + (t - t0) / self.speed)
                batch.setdefault(symbol, []).append(
                    {"c": None, "p": price, "s": symbol, "t": new_t, "v": volume}
                )
                trades += 1
            if batch:
                yield self._tick(pass_start_s, tick_index, batch, trades)
            if not self.loop:
                return
            pass_start_s += self.span_ms / self.speed / 1000 + self.tick_s

    def _tick(
        self, pass_start_s: float, index: int, batch: dict[str, list[dict[str, Any]]], trades: int
    ) -> Tick:
        # Like Finnhub: one frame per symbol per interval, trades in arrival order.
        frames: list[dict[str, Any] | str | bytes] = []
        for rows in batch.values():
            frames.extend(_frames(rows))
        return Tick(pass_start_s + (index + 1) * self.tick_s, frames, trades)


class JsonlReplay(TradeSource):
    """Replays a file of Finnhub frames, one per line (what ``python -m collector --record``
    writes), rebasing trade times so the first trade happens at the stream start.

    Lines that are not JSON objects are sent verbatim, so recorded junk replays as junk.

    :param speed: replay speed (1 = real time).
    :param rebase: shift trade times to now (default); false sends them unchanged.
    """

    def __init__(self, path: Path, *, speed: float = 1.0, rebase: bool = True) -> None:
        if speed <= 0 or not math.isfinite(speed):
            raise FeedError(f"--speed {speed!r}: must be > 0")
        self.path = path
        self.speed = speed
        self.rebase = rebase
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise FeedError(f"{path}: cannot read ({exc.strerror})") from None
        self.frames: list[Any] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                self.frames.append(json.loads(line))
            except ValueError:
                self.frames.append(line)
        if not self.frames:
            raise FeedError(f"{path}: no frames")
        times = [t for f in self.frames for t in _trade_times(f)]
        self.t0 = min(times) if times else 0
        symbols = [
            d.get("s")
            for f in self.frames
            if _is_trade(f)
            for d in f["data"]
            if isinstance(d, dict)
        ]
        self.symbols = tuple(dict.fromkeys(s for s in symbols if isinstance(s, str)))

    def ticks(self, start_ms: int) -> Iterator[Tick]:
        due = 0.0
        for frame in self.frames:
            times = _trade_times(frame)
            if times:
                due = max(due, (min(times) - self.t0) / self.speed / 1000)
            out = frame
            trades = 0
            if _is_trade(frame):
                data = []
                for d in frame["data"]:
                    if isinstance(d, dict) and type(d.get("t")) is int and self.rebase:
                        d = {**d, "t": int(start_ms + (d["t"] - self.t0) / self.speed)}
                    data.append(d)
                out = {**frame, "data": data}
                trades = len(data)
            elif not isinstance(frame, dict | str | bytes):
                out = json.dumps(frame)
            yield Tick(due, [out], trades)


def _is_trade(frame: Any) -> bool:
    return (
        isinstance(frame, dict)
        and frame.get("type") == "trade"
        and isinstance(frame.get("data"), list)
    )


def _trade_times(frame: Any) -> list[int]:
    if not _is_trade(frame):
        return []
    return [d["t"] for d in frame["data"] if isinstance(d, dict) and type(d.get("t")) is int]
