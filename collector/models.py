"""Normalised records: what the rest of the collector sees instead of Finnhub's field names."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

__all__ = [
    "DLQ_RECORD_LIMIT_BYTES",
    "RAW_LIMIT_BYTES",
    "TEXT_LIMIT_CHARS",
    "DeadLetter",
    "FrameKind",
    "FrameResult",
    "Gap",
    "GapReason",
    "Reason",
    "Trade",
]

FrameKind = Literal["trade", "ping", "error", "unknown", "invalid"]
Reason = Literal[
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_price",
    "invalid_volume",
    "timestamp_out_of_range",
    "unsubscribed_symbol",
    "unknown_type",
    "field_too_large",
    "frame_too_large",
    "unprocessable",
]
# Kafka's default record limit (max.message.bytes of our topics): every record we produce, a
# dead letter included, must fit in it, or the producer refuses it.
DLQ_RECORD_LIMIT_BYTES = 1_048_576
# The raw input kept in a dead letter. Invalid UTF-8 shows as 3-byte replacement characters plus
# a base64 copy, so the record stays under ~6 * 64 KiB, far from the limit.
RAW_LIMIT_BYTES = 65_536
# A dead letter's symbol and detail are cut to this many characters (after escaping).
TEXT_LIMIT_CHARS = 256


class Trade(NamedTuple):
    """One executed trade with its two clocks: exchange time and arrival time (epoch ms, UTC).

    ``volume == 0`` marks a Finnhub price update (a last-price print without size); it is kept.
    Immutable like a frozen dataclass, but a NamedTuple because it is built once per trade on the
    hot path and costs a third of a frozen dataclass to construct.
    """

    trade_id: str
    symbol: str
    price: float
    volume: float
    trade_ts_ms: int
    conditions: tuple[str, ...]
    source: str
    ingest_ts_ms: int

    def to_avro(self) -> dict[str, Any]:
        """The record for ``schemas/avro/trade.avsc`` (timestamps as epoch-ms ints)."""
        return {
            "trade_id": self.trade_id,
            "symbol": self.symbol,
            "price": self.price,
            "volume": self.volume,
            "trade_ts": self.trade_ts_ms,
            "conditions": list(self.conditions),
            "source": self.source,
            "ingest_ts": self.ingest_ts_ms,
        }


def bounded_text(text: str, limit: int = TEXT_LIMIT_CHARS) -> str:
    """``text`` made safe for a log line or a record: every non-printable character (line breaks,
    terminal escapes, a lone surrogate, which UTF-8 cannot encode) as its ``\\x``/``\\u``
    escape, so nothing can forge a log line or fail to encode; at most ``limit`` characters.

    >>> bounded_text("ok\\nnext\\ud800")
    'ok\\\\x0anext\\\\ud800'
    >>> bounded_text("x" * 300, 10)
    'xxxxxxx...'
    """
    head = text[: limit + 1]  # never escape more of a huge string than can be shown
    if not head.isprintable():
        head = "".join(ch if ch.isprintable() else _escape(ch) for ch in head)
    if len(head) <= limit and len(text) <= limit:
        return head
    return head[: limit - 3] + "..."


def _escape(ch: str) -> str:
    code = ord(ch)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """Input we could not turn into a trade, with a machine-readable ``reason`` and a one-line
    ``detail`` naming the field and the value.

    :param raw: the offending input: the whole frame, or the one trade object of a batch.
    :param raw_bytes: the size of the input when ``raw`` could not hold it (a frame refused
        before it was read); default ``len(raw)``.

    ``symbol`` and ``detail`` are made safe on construction (:func:`bounded_text`), so a letter
    always encodes, and always fits one Kafka record, whatever the input held.
    """

    reason: Reason
    detail: str
    raw: bytes
    source: str
    received_ts_ms: int
    symbol: str | None = None
    raw_bytes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", bounded_text(self.detail, 4 * TEXT_LIMIT_CHARS))
        if self.symbol is not None:
            object.__setattr__(self, "symbol", bounded_text(self.symbol))

    def to_json(self) -> bytes:
        """The DLQ record value (documented in ``schemas/README.md``).

        >>> d = DeadLetter(reason="invalid_json", detail="frame: not JSON", raw=b"x{",
        ...                source="feed", received_ts_ms=0)
        >>> json.loads(d.to_json())["raw"], json.loads(d.to_json())["received_at"]
        ('x{', '1970-01-01T00:00:00.000+00:00')
        """
        raw = self.raw[:RAW_LIMIT_BYTES]
        size = len(self.raw) if self.raw_bytes is None else self.raw_bytes
        doc: dict[str, Any] = {
            "reason": self.reason,
            "detail": self.detail,
            "stage": "collector",
            "source": self.source,
            "symbol": self.symbol,
            "received_at": _iso_ms(self.received_ts_ms),
            "received_ts_ms": self.received_ts_ms,
            "raw": raw.decode("utf-8", errors="replace"),
            "raw_bytes": size,
            "raw_truncated": size > len(raw),
        }
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            doc["raw_base64"] = base64.b64encode(raw).decode("ascii")
        return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What one websocket frame became. For ``trade`` frames every element of ``data`` is either
    in ``trades`` or in ``dead_letters``; other kinds carry no trades and at most one letter."""

    kind: FrameKind
    trades: list[Trade] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    message: str | None = None


GapReason = Literal[
    "disconnect",
    "stall",
    "connect_failed",
    "server_closed",
    "frame_too_large",
    "kafka_unavailable",
    "kafka_buffer_full",
    "restart",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Gap:
    """A period without data: from the last frame before a connection was lost (or the moment it
    was lost, if no frame came) to the moment the symbols were subscribed again.

    :param reason: why the connection was lost: ``disconnect`` (socket error or close),
        ``server_closed`` (clean close by the server), ``stall`` (no frame for the stall timeout),
        ``connect_failed`` (the first connection never came up), ``frame_too_large`` (the
        server sent a frame above ``COLLECTOR_MAX_FRAME_BYTES``; the rest of that connection's
        stream cannot be read without it, so it is dropped), ``kafka_unavailable`` (Kafka could
        not be reached at start: the websocket is opened only once it can),
        ``kafka_buffer_full`` (frames read while the records Kafka had not acknowledged filled
        the bound: from the first such frame's arrival to the last one's; ``detail`` counts
        their trades per symbol and dead letters), ``restart`` (from the previous run's last
        safe heartbeat to this run's first subscribe). A collector
        stopped while disconnected records the gap up to the stop, with the cause of the
        disconnect.
    """

    start_ms: int
    end_ms: int
    symbols: tuple[str, ...]
    reason: GapReason
    detail: str
    source: str
    collector_id: str

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms
