"""Faults the feed injects on request, and the junk frames it sends: each junk frame is built so
that the collector must turn it into exactly one dead letter with a known reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["JUNK", "FaultPlan", "junk_frame"]


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """What to break, counted in trades or trade frames sent.

    :param drop_every: close every connection each time this many more trades were sent.
    :param drop_mode: ``close`` (a websocket close frame) or ``abort`` (reset the TCP socket).
    :param stall_after: once, after this many trades, send nothing at all (no trades, no pings)
        for ``stall_s`` seconds.
    :param junk_every: after every this many trade frames, send one junk frame to each client.
    :param error_every: after every this many trade frames, send an ``error`` frame.
    """

    drop_every: int | None = None
    drop_mode: Literal["close", "abort"] = "close"
    stall_after: int | None = None
    stall_s: float = 0.0
    junk_every: int | None = None
    error_every: int | None = None

    def __post_init__(self) -> None:
        for name in ("drop_every", "stall_after", "junk_every", "error_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be >= 1")
        if self.drop_mode not in ("close", "abort"):
            raise ValueError(f"--drop-mode {self.drop_mode!r}: allowed values are close, abort")
        if self.stall_after is not None and self.stall_s <= 0:
            raise ValueError("--stall-after needs --stall-seconds > 0")


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
