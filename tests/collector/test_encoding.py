from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import collector.encoding as encoding
from collector.encoding import TradeEncoder
from collector.models import Trade
from schemas import avro_codec

HEADER = avro_codec.header()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("trade", "body"),
    [
        (
            Trade("a", "B", 1.0, 0.0, 1, (), "f", 2),
            b"\x02a"
            + b"\x02B"
            + struct.pack("<d", 1.0)
            + struct.pack("<d", 0.0)
            + b"\x02"
            + b"\x00"
            + b"\x02f"
            + b"\x04",
        ),
        (
            Trade("", "X", 0.5, 3.0, -1, ("1", "12"), "", 64),
            b"\x00"
            + b"\x02X"
            + struct.pack("<d", 0.5)
            + struct.pack("<d", 3.0)
            + b"\x01"
            + b"\x04"
            + b"\x021"
            + b"\x0412"
            + b"\x00"
            + b"\x00"
            + b"\x80\x01",
        ),
    ],
)
def test_bytes_follow_the_avro_spec(trade: Trade, body: bytes) -> None:
    encoder = TradeEncoder()
    assert encoder.encode(trade) == HEADER + body
    assert encoder.encode_many([trade]) == [HEADER + body]


trades = st.builds(
    Trade,
    st.text(max_size=70),
    st.text(min_size=1, max_size=70),
    st.floats(min_value=1e-12, max_value=1e12),
    st.floats(min_value=0, max_value=1e12),
    st.integers(-(10**12), 10**14),  # readable back as datetimes (years 1938..5138)
    st.lists(st.text(max_size=70), max_size=4).map(tuple),
    st.sampled_from(["finnhub", "feed", "replay"]),
    st.integers(0, 10**14),
)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(trades, max_size=6))
def test_fast_path_matches_the_generic_writer_and_round_trips(batch: list[Trade]) -> None:
    encoder = TradeEncoder()
    assert encoder.fast_path
    encoded = encoder.encode_many(batch)
    assert encoded == [avro_codec.encode(t.to_avro()) for t in batch]
    assert [encoder.encode(t) for t in batch] == encoded
    decoded = [avro_codec.decode(b) for b in encoded]
    assert [
        {**d, "trade_ts": _ms(d["trade_ts"]), "ingest_ts": _ms(d["ingest_ts"])} for d in decoded
    ] == [t.to_avro() for t in batch]


def _ms(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -65, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)])
def test_longs_at_varint_boundaries_match_the_generic_writer(n: int) -> None:
    trade = Trade("i", "S", 1.0, 1.0, n, (), "feed", max(n, 0))
    assert TradeEncoder().encode(trade) == avro_codec.encode(trade.to_avro())


def test_a_schema_the_fast_path_does_not_know_uses_the_generic_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "FAST_PATH_FIELDS", encoding.FAST_PATH_FIELDS[:-1])
    encoder = TradeEncoder()
    assert not encoder.fast_path
    trade = Trade("id", "AAPL", 1.5, 2.0, 1000, ("1",), "feed", 1001)
    assert encoder.encode(trade) == avro_codec.encode(trade.to_avro())
    assert encoder.encode_many([trade, trade]) == [avro_codec.encode(trade.to_avro())] * 2


def test_the_fast_path_is_pinned_to_the_current_schema() -> None:
    # If trade.avsc changes, this fails: update FAST_PATH_FIELDS and _fast_bodies together.
    from schemas.contracts import load_avro_schema

    fields = tuple((f["name"], f["type"]) for f in load_avro_schema("trade")["fields"])
    assert fields == encoding.FAST_PATH_FIELDS
