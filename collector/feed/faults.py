"""Faults the feed injects on request, and the junk frames it sends: each junk frame is built so
that the collector must turn it into exactly one dead letter with a known reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["HOSTILE", "JUNK", "FaultPlan", "hostile_frame", "hostile_kind", "junk_frame"]


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """What to break, counted in trades or trade frames sent.

    :param drop_every: close every connection each time this many more trades were sent.
    :param drop_mode: ``close`` (a websocket close frame) or ``abort`` (reset the TCP socket).
    :param stall_after: once, after this many trades, send nothing at all (no trades, no pings)
        for ``stall_s`` seconds.
    :param junk_every: after every this many trade frames, send one junk frame to each client.
    :param error_every: after every this many trade frames, send an ``error`` frame.
    :param hostile_every: after every this many trade frames, send one hostile frame (numbers
        no float can hold, lone surrogates, fields above Kafka's record limit, deep nesting).
    :param drip_after: once, after this many trades, send the next trade frame one byte at a
        time over ``drip_s`` seconds (a slow-drip server; nothing else is sent meanwhile).
    :param abort_mid_frame_after: once, after this many trades, send half of the next trade
        frame and reset the TCP connection.
    """

    drop_every: int | None = None
    drop_mode: Literal["close", "abort"] = "close"
    stall_after: int | None = None
    stall_s: float = 0.0
    junk_every: int | None = None
    error_every: int | None = None
    hostile_every: int | None = None
    drip_after: int | None = None
    drip_s: float = 0.0
    abort_mid_frame_after: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "drop_every",
            "stall_after",
            "junk_every",
            "error_every",
            "hostile_every",
            "drip_after",
            "abort_mid_frame_after",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be >= 1")
        if self.drop_mode not in ("close", "abort"):
            raise ValueError(f"--drop-mode {self.drop_mode!r}: allowed values are close, abort")
        if self.stall_after is not None and self.stall_s <= 0:
            raise ValueError("--stall-after needs --stall-seconds > 0")
        if self.drip_after is not None and self.drip_s <= 0:
            raise ValueError("--drip-after needs --drip-seconds > 0")


def _trade(symbol: str, now_ms: int, **override: object) -> str:
    trade: dict[str, object] = {"c": None, "p": 100.0, "s": symbol, "t": now_ms, "v": 1.0}
    trade.update(override)
    for key, value in list(trade.items()):
        if value is _MISSING:
            del trade[key]
    return json.dumps({"data": [trade], "type": "trade"})


_MISSING = object()

# (expected dead-letter reason, builder(symbol, now_ms) -> frame). str frames go out as text,
# bytes as binary (a text frame cannot carry invalid UTF-8).
JUNK: tuple[tuple[str, Callable[[str, int], str | bytes]], ...] = (
    ("invalid_json", lambda s, t: "this is not json {"),
    ("not_an_object", lambda s, t: "[1, 2, 3]"),
    ("missing_field", lambda s, t: '{"data": []}'),
    ("unknown_type", lambda s, t: '{"type": "news", "data": []}'),
    ("invalid_price", lambda s, t: _trade(s, t, p=-1.5)),
    ("invalid_volume", lambda s, t: _trade(s, t, v=-3)),
    ("wrong_type", lambda s, t: _trade(s, t, t=str(t))),
    ("missing_field", lambda s, t: _trade(s, t, s=_MISSING)),
    ("unsubscribed_symbol", lambda s, t: _trade("NOT:SUBSCRIBED", t)),
    ("timestamp_out_of_range", lambda s, t: _trade(s, t + 86_400_000)),
    ("invalid_json", lambda s, t: b"\xff\xfe junk \xc3\x28"),
    ("wrong_type", lambda s, t: '{"type": "trade", "data": {"s": "X"}}'),
    (
        "invalid_price",
        lambda s, t: _trade(s, t).replace('"p": 100.0', '"p": NaN'),
    ),
)


def junk_frame(index: int, symbol: str, now_ms: int) -> tuple[str, str | bytes]:
    """The ``index``-th junk frame (cycling through :data:`JUNK`) and its expected reason.

    >>> reason, frame = junk_frame(4, "AAPL", 1000)
    >>> reason, json.loads(frame)["data"][0]["p"]
    ('invalid_price', -1.5)
    """
    reason, build = JUNK[index % len(JUNK)]
    return reason, build(symbol, now_ms)


_HUGE_INT = "9" * 401  # a JSON number no float can hold
_TWO_MB = 2 * 1024 * 1024


def _raw_trade(symbol: str, now_ms: int, **raw: str) -> str:
    """A trade frame whose fields are spliced in as raw JSON text (numbers beyond float, escapes
    that decode to lone surrogates)."""
    fields = {"c": "null", "p": "100.0", "s": json.dumps(symbol), "t": str(now_ms), "v": "1.0"}
    fields.update(raw)
    body = ",".join(f'"{key}":{value}' for key, value in fields.items())
    return '{"data":[{' + body + '}],"type":"trade"}'


# (class, builder(symbol, now_ms) -> frame). Each must end as a dead letter, never stop the
# collector; the large ones exceed Kafka's 1 MiB record limit unless the collector cuts them.
HOSTILE: tuple[tuple[str, Callable[[str, int], str | bytes]], ...] = (
    ("huge_int_price", lambda s, t: _raw_trade(s, t, p=_HUGE_INT)),
    ("huge_int_volume", lambda s, t: _raw_trade(s, t, v=_HUGE_INT)),
    ("huge_int_time", lambda s, t: _raw_trade(s, t, t=_HUGE_INT)),
    ("float_overflow_price", lambda s, t: _raw_trade(s, t, p="1e400")),
    ("surrogate_condition", lambda s, t: _raw_trade(s, t, c='["\\ud800"]')),
    ("surrogate_symbol", lambda s, t: _raw_trade(s, t, s='"X\\udfff"')),
    ("deep_nesting", lambda s, t: '{"type":"trade","data":' + "[" * 5_000 + "]" * 5_000 + "}"),
    (
        "error_with_newlines",
        lambda s, t: json.dumps(
            {"type": "error", "msg": "line one\nFAKE LOG LINE " + "x" * 10_000}
        ),
    ),
)
# Sent once in every HOSTILE_LARGE_EVERY hostile frames: 2 MB each.
HOSTILE_LARGE: tuple[tuple[str, Callable[[str, int], str | bytes]], ...] = (
    ("oversized_symbol", lambda s, t: _raw_trade(s, t, s=json.dumps("S" * _TWO_MB))),
    ("oversized_condition", lambda s, t: _raw_trade(s, t, c=json.dumps(["C" * _TWO_MB]))),
)
HOSTILE_LARGE_EVERY = 500


def hostile_kind(index: int) -> tuple[str, Callable[[str, int], str | bytes]]:
    """The class (and builder) of the ``index``-th hostile frame: the small classes in turn,
    and one of the large ones every :data:`HOSTILE_LARGE_EVERY`."""
    if index % HOSTILE_LARGE_EVERY == 0 and index:
        return HOSTILE_LARGE[(index // HOSTILE_LARGE_EVERY - 1) % len(HOSTILE_LARGE)]
    return HOSTILE[index % len(HOSTILE)]


# Hostile classes that are not a dead letter: an error frame is logged (escaped, bounded).
HOSTILE_WITHOUT_LETTER = frozenset({"error_with_newlines"})


def hostile_frame(index: int, symbol: str, now_ms: int) -> tuple[str, str | bytes]:
    """The ``index``-th hostile frame and its class.

    >>> hostile_frame(0, "AAPL", 1000)[0], hostile_frame(HOSTILE_LARGE_EVERY, "AAPL", 1000)[0]
    ('huge_int_price', 'oversized_symbol')
    >>> json.loads(hostile_frame(4, "AAPL", 1000)[1])["data"][0]["c"] == ["\\ud800"]
    True
    """
    kind, build = hostile_kind(index)
    return kind, build(symbol, now_ms)
