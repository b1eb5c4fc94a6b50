"""Finnhub websocket frames -> normalised trades or dead letters. Pure: no I/O, no clock.

Finnhub sends four kinds of text frame; each has one function here. Nothing after this module
sees Finnhub's field names (``s, p, t, v, c``).

Decisions:

* ``v == 0`` trades are Finnhub *price updates* (a last price without size). They are kept as
  trades with ``volume = 0``: the price is real information, VWAP and volume sums are unchanged
  by a zero weight, and consumers that want executions only filter ``volume > 0``.
* ``c`` missing or ``null`` (crypto) becomes an empty tuple of conditions.
* A bad trade inside a batch does not spoil the batch: it alone goes to the DLQ.
* Unknown frame types go to the DLQ (reason ``unknown_type``) and are logged by the caller.
* Hostile input is input like any other: a number no float can hold, a lone surrogate, a field
  of megabytes, nesting deeper than the JSON decoder goes, all end as dead letters with a reason,
  and a frame this module fails on anyway ends as one (``unprocessable``); :meth:`FrameParser.parse`
  never raises. Trades are bounded (``MAX_CONDITIONS`` of ``MAX_CONDITION_CHARS``), so every
  record fits Kafka's record limit.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from collector.ids import trade_id
from collector.models import DeadLetter, FrameResult, Reason, Trade, bounded_text
from schemas.limits import MAX_FUTURE_SKEW_MS, MAX_PAST_SKEW_MS

__all__ = [
    "MAX_CONDITIONS",
    "MAX_CONDITION_CHARS",
    "FrameParser",
    "error_from_frame",
    "ping_from_frame",
    "trades_from_frame",
    "unknown_from_frame",
]

logger = logging.getLogger(__name__)

# Finnhub's trade conditions are a few short codes ("1", "12"); more or longer is not a trade.
MAX_CONDITIONS = 32
MAX_CONDITION_CHARS = 32
# An error frame's message is logged at most this long.
_MESSAGE_CHARS = 200
_VALUE_CHARS = 80
_INF = float("inf")
# What parse() turns into an ``unprocessable`` dead letter instead of raising: anything a value
# can make Python's own conversions raise (none is expected; this is the last line of defence).
_HOSTILE_VALUE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, UnicodeError)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, float) else repr(value)
    except (ValueError, RecursionError):  # an int of > 4300 digits, nesting past the limit
        text = f"<{_type_name(value)} too large to show>"
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _seconds_from(t: int, received: int) -> str:
    delta = t - received
    if abs(delta) > 10**15:  # a float division would overflow, and no clock is that far off
        return "more than 10^12 s" + (" after" if delta > 0 else " before")
    return f"{delta / 1000:+.3f} s from"


def _type_name(value: Any) -> str:
    return {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class _Rules:
    symbols: frozenset[str]
    source: str
    received_ms: int
    min_ts_ms: int
    max_ts_ms: int
    # identical-trade counts carried across frames (see collector.ids), and the key of every
    # trade this frame accepted
    seen: dict[tuple[Any, ...], int] = field(default_factory=dict)
    touched: list[tuple[Any, ...]] = field(default_factory=list)


def _reject(
    rules: _Rules, reason: Reason, detail: str, raw: bytes, symbol: str | None = None
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        raw=raw,
        source=rules.source,
        received_ts_ms=rules.received_ms,
        symbol=symbol,
    )


def _item_raw(item: Any, frame_raw: bytes) -> bytes:
    try:
        return json.dumps(item, separators=(",", ":"), allow_nan=True).encode("utf-8")
    except (ValueError, RecursionError):  # nested as deep as the decoder went: keep the frame
        return frame_raw


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _check_trade(item: Any, where: str) -> tuple[Reason, str, str | None] | None:
    """The first rule ``item`` breaks (reason, detail, symbol), or None. Timestamps and the
    subscription are checked by the caller, which knows the clock."""
    if not isinstance(item, dict):
        return "wrong_type", f"{where}: {_type_name(item)} {_show(item)} is not an object", None
    for key in ("s", "p", "t", "v"):
        if key not in item:
            return "missing_field", f"{where}.{key}: missing", None
    s, p, t, v = item["s"], item["p"], item["t"], item["v"]
    if type(s) is not str or not s:
        return "wrong_type", f"{where}.s: {_show(s)} is not a non-empty string", None
    if type(p) not in (int, float):
        return "wrong_type", f"{where}.p: {_type_name(p)} {_show(p)} is not a number", s
    if type(t) is not int:
        return "wrong_type", f"{where}.t: {_type_name(t)} {_show(t)} is not integer ms", s
    if type(v) not in (int, float):
        return "wrong_type", f"{where}.v: {_type_name(v)} {_show(v)} is not a number", s
    if not _finite(p) or p <= 0:
        return "invalid_price", f"{where}.p: {_show(p)} is not a finite price > 0", s
    if not _finite(v) or v < 0:
        return "invalid_volume", f"{where}.v: {_show(v)} is not a finite volume >= 0", s
    c = item.get("c")
    if c is not None and (not isinstance(c, list) or any(type(x) is not str for x in c)):
        return "wrong_type", f"{where}.c: {_show(c)} is not null or a list of strings", s
    if c and len(c) > MAX_CONDITIONS:
        return "field_too_large", f"{where}.c: {len(c)} conditions, more than {MAX_CONDITIONS}", s
    for n, x in enumerate(c or ()):
        if len(x) > MAX_CONDITION_CHARS:
            detail = f"{where}.c[{n}]: {len(x)} characters, more than {MAX_CONDITION_CHARS}"
            return "field_too_large", detail, s
        if not _encodable(x):
            return "wrong_type", f"{where}.c[{n}]: {_show(x)} is not valid Unicode", s
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \\ud800 escapes can produce
        return False
    return True


def _diagnose(item: Any, index: int, rules: _Rules) -> tuple[Reason, str, str | None]:
    where = f"data[{index}]"
    problem = _check_trade(item, where)
    if problem is not None:
        return problem
    s, t = item["s"], item["t"]
    if s not in rules.symbols:
        return "unsubscribed_symbol", f"{where}.s: {_show(s)} is not a subscribed symbol", s
    received = rules.received_ms
    return (
        "timestamp_out_of_range",
        f"{where}.t: {_show(t)} is {_seconds_from(t, received)} arrival, outside "
        f"[{(rules.min_ts_ms - received) / 1000:+g}, {(rules.max_ts_ms - received) / 1000:+g}] s",
        s,
    )


def trades_from_frame(frame: dict[str, Any], raw: bytes, rules: _Rules) -> FrameResult:
    """A ``trade`` frame: a batch of trades, each validated on its own.

    Sample (Finnhub documentation)::

        {"data":[{"p":7296.89,"s":"BINANCE:BTCUSDT","t":1575526691134,"v":0.011467}],
         "type":"trade"}

    Equities add ``"c":["1","12"]`` (trade conditions); crypto sends ``"c":null`` or no ``c``.
    """
    data = frame.get("data")
    if data is None:
        detail = "data: missing" if "data" not in frame else "data: null is not an array"
        reason: Reason = "missing_field" if "data" not in frame else "wrong_type"
        return FrameResult("invalid", dead_letters=[_reject(rules, reason, detail, raw)])
    if not isinstance(data, list):
        return FrameResult(
            "invalid",
            dead_letters=[
                _reject(
                    rules,
                    "wrong_type",
                    f"data: {_type_name(data)} {_show(data)} is not an array",
                    raw,
                )
            ],
        )
    trades: list[Trade] = []
    letters: list[DeadLetter] = []
    seen, touched = rules.seen, rules.touched
    source, received = rules.source, rules.received_ms
    symbols, lo, hi = rules.symbols, rules.min_ts_ms, rules.max_ts_ms
    for index, item in enumerate(data):
        # Fast path: a well-formed, in-range trade. Anything else is diagnosed by the slow path.
        if type(item) is dict:
            s, p, t, v = item.get("s"), item.get("p"), item.get("t"), item.get("v")
            c = item.get("c")
            if (
                type(s) is str
                and s in symbols
                and type(t) is int
                and lo <= t <= hi
                and (type(p) is float or type(p) is int)
                and 0 < p < _INF
                and (type(v) is float or type(v) is int)
                and 0 <= v < _INF
                and (
                    c is None
                    or (
                        type(c) is list
                        and len(c) <= MAX_CONDITIONS
                        and all(type(x) is str and len(x) <= MAX_CONDITION_CHARS for x in c)
                    )
                )
            ):
                try:
                    # float() overflows for an int above ~1.8e308, and the id's UTF-8 encoding
                    # fails on a lone surrogate in a condition: the slow path names either.
                    price = float(p)
                    volume = float(v)
                    conditions = tuple(c) if c else ()
                    key = (s, t, price, volume, conditions)
                    ordinal = seen.get(key, 0)
                    tid = trade_id(s, t, price, volume, conditions, ordinal)
                except (OverflowError, UnicodeEncodeError):
                    pass
                else:
                    seen[key] = ordinal + 1
                    touched.append(key)
                    trades.append(Trade(tid, s, price, volume, t, conditions, source, received))
                    continue
        reason, detail, symbol = _diagnose(item, index, rules)
        letters.append(_reject(rules, reason, detail, _item_raw(item, raw), symbol))
    return FrameResult("trade", trades=trades, dead_letters=letters)


def ping_from_frame(frame: dict[str, Any]) -> FrameResult:
    """A keep-alive. Sample: ``{"type":"ping"}``."""
    return FrameResult("ping")


def error_from_frame(frame: dict[str, Any]) -> FrameResult:
    """A server-side error; the connection stays open. Sample:
    ``{"type":"error","msg":"Subscribing to too many symbols"}``."""
    msg = frame.get("msg")
    # The text is the server's: escaped and cut, so it cannot forge or flood log lines.
    text = msg if isinstance(msg, str) else _show(msg)
    return FrameResult("error", message=bounded_text(text, _MESSAGE_CHARS))


def unknown_from_frame(frame: dict[str, Any], raw: bytes, rules: _Rules) -> FrameResult:
    """A type we do not know (e.g. ``news`` on premium plans): kept in the DLQ, not processed."""
    kind = frame.get("type")
    return FrameResult(
        "unknown",
        dead_letters=[
            _reject(rules, "unknown_type", f"type: {_show(kind)} is not a known frame type", raw)
        ],
        message=_show(kind),
    )


def _load(raw: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(raw), None
    except UnicodeDecodeError as exc:
        return None, f"frame: not UTF-8 ({exc.reason} at byte {exc.start})"
    except ValueError as exc:  # json.JSONDecodeError, and lone-surrogate errors
        msg = getattr(exc, "msg", str(exc))
        pos = getattr(exc, "pos", None)
        return None, f"frame: not JSON ({msg}{f' at char {pos}' if pos is not None else ''})"
    except RecursionError:
        return None, "frame: not JSON (nested too deeply)"


@dataclass(slots=True)
class _SymbolMemory:
    """What one symbol's stream has shown of the trade keys in :attr:`FrameParser._seen`."""

    frames: int = 0  # frames of this symbol so far
    newest_ts_ms: int = -(2**62)  # its newest trade time
    last_frame: dict[tuple[Any, ...], int] = field(default_factory=dict)  # key -> frame it was in

    def add(self, keys: list[tuple[Any, ...]]) -> None:
        self.frames += 1
        self.last_frame.update(dict.fromkeys(keys, self.frames))
        newest = max(keys, key=itemgetter(1))[1]
        if newest > self.newest_ts_ms:
            self.newest_ts_ms = newest

    def sweep(self, seen: dict[tuple[Any, ...], int], window_ms: int, window_frames: int) -> None:
        # Forget a key only when both clocks agree it is old: a future-stamped trade moves the
        # trade-time clock at once, and many small frames of one millisecond the frame clock.
        old_ts, old_frame = self.newest_ts_ms - window_ms, self.frames - window_frames
        stale = [k for k, f in self.last_frame.items() if f <= old_frame and k[1] < old_ts]
        for key in stale:
            del self.last_frame[key]
            seen.pop(key, None)


class FrameParser:
    """Turns raw frames into :class:`FrameResult` s for one subscription and source.

    :param symbols: the subscribed symbols; trades of others go to the DLQ.
    :param source: the ``source`` of every record (``finnhub``, ``feed``, ``replay``).
    :param max_future_skew_ms: a trade later than arrival + this goes to the DLQ (default 2 s:
        ``schemas.limits``, as ``COLLECTOR_MAX_FUTURE_SKEW`` and the stream processor).
    :param max_past_skew_ms: a trade earlier than arrival - this goes to the DLQ.
    :param id_window_ms: identical trades are remembered across frames for their ordinal until
        their symbol has trades this much newer (default 2 s)...
    :param id_window_frames: ...and at least this many more frames of its own (default 256; see
        :mod:`collector.ids`).

    >>> p = FrameParser(["AAPL"], source="feed")
    >>> r = p.parse(b'{"type":"trade","data":[{"s":"AAPL","p":1.5,"t":1000,"v":2,"c":null},'
    ...             b'{"s":"AAPL","p":-1,"t":1000,"v":2}]}', received_ms=1000)
    >>> (r.kind, [t.price for t in r.trades], [d.reason for d in r.dead_letters])
    ('trade', [1.5], ['invalid_price'])
    >>> p.parse(b"{oops", received_ms=0).dead_letters[0].detail
    'frame: not JSON (Expecting property name enclosed in double quotes at char 1)'
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        source: str,
        max_future_skew_ms: int = MAX_FUTURE_SKEW_MS,
        max_past_skew_ms: int = MAX_PAST_SKEW_MS,
        id_window_ms: int = 2_000,
        id_window_frames: int = 256,
    ) -> None:
        self.symbols = frozenset(symbols)
        self.source = source
        self.max_future_skew_ms = max_future_skew_ms
        self.max_past_skew_ms = max_past_skew_ms
        self.id_window_ms = id_window_ms
        self.id_window_frames = max(1, id_window_frames)
        self._seen: dict[tuple[Any, ...], int] = {}
        self._memories: dict[str, _SymbolMemory] = {}

    def _remember(self, touched: list[tuple[Any, ...]]) -> None:
        # Each symbol forgets by its own stream alone (its frames and trade times), so how the
        # streams of different symbols interleave or lag never changes an id.
        by_symbol: dict[str, list[tuple[Any, ...]]] = {}
        if len({key[0] for key in touched}) == 1:  # as Finnhub sends them: one symbol a frame
            by_symbol[touched[0][0]] = touched
        else:
            for key in touched:
                by_symbol.setdefault(key[0], []).append(key)
        for symbol, keys in by_symbol.items():
            memory = self._memories.get(symbol)
            if memory is None:
                memory = self._memories[symbol] = _SymbolMemory()
            memory.add(keys)
            # once every window of frames: a key outlives both windows by less than one more
            if memory.frames % self.id_window_frames == 0:
                memory.sweep(self._seen, self.id_window_ms, self.id_window_frames)

    def parse(self, raw: bytes | str, *, received_ms: int) -> FrameResult:
        """Classify and validate one frame; never raises for any input."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogateescape")
        try:
            return self._parse(raw, received_ms)
        except _HOSTILE_VALUE_ERRORS as exc:
            # A frame must never stop the collector. It is kept whole in the DLQ, and logged
            # with the trace so the gap in these rules gets fixed.
            logger.error("frame of %d bytes could not be processed", len(raw), exc_info=True)
            detail = f"frame: could not be processed ({type(exc).__name__})"
            return FrameResult(
                "invalid",
                dead_letters=[
                    DeadLetter(
                        reason="unprocessable",
                        detail=detail,
                        raw=raw,
                        source=self.source,
                        received_ts_ms=received_ms,
                    )
                ],
            )

    def oversized(self, size: int, limit: int, *, received_ms: int) -> FrameResult:
        """A frame refused unread because it announced ``size`` bytes, above ``limit``.

        >>> FrameParser(["A"], source="feed").oversized(9, 8, received_ms=0).dead_letters[0].detail
        'frame: 9 bytes, more than the 8-byte limit (COLLECTOR_MAX_FRAME_BYTES); not read'
        """
        detail = (
            f"frame: {size} bytes, more than the {limit}-byte limit (COLLECTOR_MAX_FRAME_BYTES); "
            "not read"
        )
        letter = DeadLetter(
            reason="frame_too_large",
            detail=detail,
            raw=b"",
            raw_bytes=size,
            source=self.source,
            received_ts_ms=received_ms,
        )
        return FrameResult("invalid", dead_letters=[letter])

    def _parse(self, raw: bytes, received_ms: int) -> FrameResult:
        rules = _Rules(
            self.symbols,
            self.source,
            received_ms,
            received_ms - self.max_past_skew_ms,
            received_ms + self.max_future_skew_ms,
            self._seen,
        )
        frame, problem = _load(raw)
        if problem is not None:
            return FrameResult(
                "invalid", dead_letters=[_reject(rules, "invalid_json", problem, raw)]
            )
        if not isinstance(frame, dict):
            detail = f"frame: {_type_name(frame)} {_show(frame)} is not an object"
            return FrameResult(
                "invalid", dead_letters=[_reject(rules, "not_an_object", detail, raw)]
            )
        kind = frame.get("type")
        if kind == "trade":
            result = trades_from_frame(frame, raw, rules)
            if rules.touched:
                self._remember(rules.touched)
            return result
        if kind == "ping":
            return ping_from_frame(frame)
        if kind == "error":
            return error_from_frame(frame)
        if "type" not in frame:
            return FrameResult(
                "invalid", dead_letters=[_reject(rules, "missing_field", "type: missing", raw)]
            )
        return unknown_from_frame(frame, raw, rules)
