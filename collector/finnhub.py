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
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from collector.ids import trade_id
from collector.models import DeadLetter, FrameResult, Reason, Trade

__all__ = [
    "FrameParser",
    "error_from_frame",
    "ping_from_frame",
    "trades_from_frame",
    "unknown_from_frame",
]

_VALUE_CHARS = 80
_INF = float("inf")


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


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
    # identical-trade counts carried across frames (see collector.ids), and the keys this frame
    # added to it
    seen: dict[tuple[Any, ...], int] = field(default_factory=dict)
    added: list[tuple[Any, ...]] = field(default_factory=list)


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


def _item_raw(item: Any) -> bytes:
    return json.dumps(item, separators=(",", ":"), allow_nan=True).encode("utf-8")


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
    return None


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
        f"{where}.t: {t} is {(t - received) / 1000:+.3f} s from arrival, outside "
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
    seen, added = rules.seen, rules.added
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
                and (c is None or (type(c) is list and all(type(x) is str for x in c)))
            ):
                price = float(p)
                volume = float(v)
                conditions = tuple(c) if c else ()
                key = (s, t, price, volume, conditions)
                ordinal = seen.get(key, 0)
                seen[key] = ordinal + 1
                if not ordinal:
                    added.append(key)
                trades.append(
                    Trade(
                        trade_id(source, s, t, price, volume, conditions, ordinal),
                        s,
                        price,
                        volume,
                        t,
                        conditions,
                        source,
                        received,
                    )
                )
                continue
        reason, detail, symbol = _diagnose(item, index, rules)
        letters.append(_reject(rules, reason, detail, _item_raw(item), symbol))
    return FrameResult("trade", trades=trades, dead_letters=letters)


def ping_from_frame(frame: dict[str, Any]) -> FrameResult:
    """A keep-alive. Sample: ``{"type":"ping"}``."""
    return FrameResult("ping")


def error_from_frame(frame: dict[str, Any]) -> FrameResult:
    """A server-side error; the connection stays open. Sample:
    ``{"type":"error","msg":"Subscribing to too many symbols"}``."""
    msg = frame.get("msg")
    return FrameResult("error", message=msg if isinstance(msg, str) else _show(msg))


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


class FrameParser:
    """Turns raw frames into :class:`FrameResult` s for one subscription and source.

    :param symbols: the subscribed symbols; trades of others go to the DLQ.
    :param source: the ``source`` of every record (``finnhub``, ``feed``, ``replay``).
    :param max_future_skew_ms: a trade later than arrival + this goes to the DLQ.
    :param max_past_skew_ms: a trade earlier than arrival - this goes to the DLQ.
    :param id_window_ms: how long (in trade time) identical trades are remembered across frames
        for their ordinal (default 2 s; see :mod:`collector.ids`).

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
        max_future_skew_ms: int = 60_000,
        max_past_skew_ms: int = 86_400_000,
        id_window_ms: int = 2_000,
    ) -> None:
        self.symbols = frozenset(symbols)
        self.source = source
        self.max_future_skew_ms = max_future_skew_ms
        self.max_past_skew_ms = max_past_skew_ms
        self.id_window_ms = id_window_ms
        self._seen: dict[tuple[Any, ...], int] = {}
        self._buckets: dict[int, list[tuple[Any, ...]]] = {}
        self._newest_bucket = -(2**62)

    def _remember(self, added: list[tuple[Any, ...]]) -> None:
        # Keys are forgotten by trade time: once trades are id_window_ms newer than a key's
        # bucket, an identical trade is treated as a new sequence (ordinal 0) again.
        width = max(1, self.id_window_ms)
        for key in added:
            bucket = key[1] // width
            self._buckets.setdefault(bucket, []).append(key)
            if bucket > self._newest_bucket:
                self._newest_bucket = bucket
        for bucket in [b for b in self._buckets if b < self._newest_bucket - 1]:
            for key in self._buckets.pop(bucket):
                self._seen.pop(key, None)

    def parse(self, raw: bytes | str, *, received_ms: int) -> FrameResult:
        """Classify and validate one frame; never raises for any input."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogateescape")
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
            if rules.added:
                self._remember(rules.added)
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
