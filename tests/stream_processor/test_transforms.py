"""The pure transforms on static DataFrames (a local Spark session, no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import avro_codec
from schemas.limits import TradeLimits
from stream_processor import transforms
from tests.stream_processor.conftest import make_trade
from tests.stream_processor.oracle import assert_bars_equal, expected_bars

T0 = 1_723_161_600_000
KAFKA_TS = datetime(2024, 8, 9, 0, 1, tzinfo=UTC)
SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def _records(spark: Any, values: list[bytes | None], ts: datetime = KAFKA_TS) -> Any:
    rows = [(b"TEST:AAA", v, "trades", 0, i, ts) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, SCHEMA)


GOOD = make_trade("TEST:AAA", T0 + 1_000, 10.0, 1.0)
PRICE_RULE = "is not a finite price in [1e-12, 1e+12]"
VOLUME_RULE = "is not 0 or a finite volume in [1e-12, 1e+18]"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (avro_codec.encode(GOOD), None),
        (avro_codec.encode({**GOOD, "volume": 0.0}), None),
        (None, "value: null (tombstone or empty record)"),
        (
            b"\x00abc",
            f"header: 00616263 is not the trade schema's single-object header "
            f"{avro_codec.header().hex()}",
        ),
        (
            b"\xc3\x01" + b"\x00" * 8 + avro_codec.encode(GOOD)[10:],
            f"header: c3010000000000000000 is not the trade schema's single-object header "
            f"{avro_codec.header().hex()}",
        ),
        (avro_codec.header() + b"\xff\xff\xff", "avro: body does not decode with the trade schema"),
        (avro_codec.encode(GOOD)[:14], "avro: body does not decode with the trade schema"),
        (avro_codec.encode({**GOOD, "trade_id": ""}), "trade_id: empty"),
        (avro_codec.encode({**GOOD, "symbol": ""}), "symbol: empty"),
        (avro_codec.encode({**GOOD, "price": 0.0}), f"price: 0.0 {PRICE_RULE}"),
        (avro_codec.encode({**GOOD, "price": float("inf")}), f"price: Infinity {PRICE_RULE}"),
        (avro_codec.encode({**GOOD, "price": 1e308}), f"price: 1.0E308 {PRICE_RULE}"),
        (avro_codec.encode({**GOOD, "price": 1e-300}), f"price: 1.0E-300 {PRICE_RULE}"),
        (avro_codec.encode({**GOOD, "price": 1e12}), None),
        (avro_codec.encode({**GOOD, "price": 1e-12}), None),
        (avro_codec.encode({**GOOD, "volume": -2.0}), f"volume: -2.0 {VOLUME_RULE}"),
        (avro_codec.encode({**GOOD, "volume": float("nan")}), f"volume: NaN {VOLUME_RULE}"),
        (avro_codec.encode({**GOOD, "volume": 1e300}), f"volume: 1.0E300 {VOLUME_RULE}"),
        (avro_codec.encode({**GOOD, "volume": 1e-300}), f"volume: 1.0E-300 {VOLUME_RULE}"),
        (avro_codec.encode({**GOOD, "volume": 1e18}), None),
        (
            avro_codec.encode({**GOOD, "trade_ts": T0 + 3_600_000}),
            "trade_ts: 2024-08-09 01:00:00 is more than 2 s after its Kafka timestamp "
            "2024-08-09 00:01:00",
        ),
        (
            avro_codec.encode({**GOOD, "trade_ts": T0 + 60_000 + 59_000}),
            "trade_ts: 2024-08-09 00:01:59 is more than 2 s after its Kafka timestamp "
            "2024-08-09 00:01:00",
        ),
        (avro_codec.encode({**GOOD, "trade_ts": T0 + 60_000 + 2_000}), None),
    ],
)
def test_rejection_reasons(spark: Any, payload: bytes | None, reason: str | None) -> None:
    row = transforms.decoded_trades(_records(spark, [payload])).collect()[0]
    assert row["reason"] == reason


def test_decode_round_trip_keeps_every_field(spark: Any) -> None:
    trade = make_trade("AAPL", T0 + 123, 173.45, 100.0, conditions=["1", "12"])
    row = transforms.valid_trades(
        transforms.decoded_trades(_records(spark, [avro_codec.encode(trade)]))
    ).collect()[0]
    got = row.asDict()
    for ts_field in ("trade_ts", "ingest_ts"):
        got[ts_field] = int(got[ts_field].timestamp() * 1000)
    assert got == {**trade, "kafka_offset": 0}


def test_future_skew_is_configurable(spark: Any) -> None:
    trade = avro_codec.encode({**GOOD, "trade_ts": T0 + 3_600_000})
    decoded = transforms.decoded_trades(_records(spark, [trade]), max_future_skew_ms=7_200_000)
    assert decoded.collect()[0]["reason"] is None


def test_price_and_volume_bounds_are_configurable(spark: Any) -> None:
    limits = TradeLimits(min_price=1.0, max_price=100.0, min_volume=0.5, max_volume=2.0)
    trades = [
        {**GOOD, "price": 100.0, "volume": 2.0},
        {**GOOD, "price": 1.0, "volume": 0.5},
        {**GOOD, "price": 1.0, "volume": 0.0},
        {**GOOD, "price": 101.0},
        {**GOOD, "volume": 0.25},
    ]
    rows = transforms.decoded_trades(
        _records(spark, [avro_codec.encode(t) for t in trades]), limits=limits
    ).collect()
    assert [r["reason"] for r in sorted(rows, key=lambda r: r["offset"])] == [
        None,
        None,
        None,
        "price: 101.0 is not a finite price in [1, 100]",
        "volume: 0.25 is not 0 or a finite volume in [0.5, 2]",
    ]


def test_trade_rows_day_is_the_utc_date(spark: Any) -> None:
    before = make_trade("X", T0 - 1, 1.0, 1.0)
    after = make_trade("X", T0, 1.0, 1.0)
    values = [avro_codec.encode(before), avro_codec.encode(after)]
    rows = transforms.trade_rows(
        transforms.valid_trades(transforms.decoded_trades(_records(spark, values)))
    ).collect()
    assert [str(r["day"]) for r in sorted(rows, key=lambda r: r["trade_ts"])] == [
        "2024-08-08",
        "2024-08-09",
    ]
    assert tuple(rows[0].asDict()) == transforms.TRADE_COLUMNS


def test_dead_letters_carry_reason_origin_and_bytes(spark: Any) -> None:
    values = [avro_codec.encode(GOOD), avro_codec.encode({**GOOD, "price": -1.0})]
    letters = transforms.dead_letters(transforms.decoded_trades(_records(spark, values))).collect()
    assert len(letters) == 1
    body = json.loads(letters[0]["value"])
    assert body["reason"] == f"price: -1.0 {PRICE_RULE}"
    assert (body["source_topic"], body["partition"], body["offset"]) == ("trades", 0, 1)
    assert body["trade_id"] == GOOD["trade_id"] and body["key"] == "TEST:AAA"
    assert avro_codec.decode(__import__("base64").b64decode(body["value_base64"]))["price"] == -1.0
    assert bytes(letters[0]["key"]) == b"TEST:AAA"


def _bars(
    spark: Any, trades: list[dict[str, Any]], duration: str, *, dedupe: bool = False
) -> pd.DataFrame:
    values = [avro_codec.encode(t) for t in trades]
    decoded = transforms.decoded_trades(_records(spark, values, datetime(2030, 1, 1, tzinfo=UTC)))
    bars = transforms.ohlcv_bars(
        transforms.valid_trades(decoded), duration, "10 seconds", dedupe=dedupe
    )
    rows = [r.asDict() for r in bars.collect()]
    for row in rows:  # Spark hands out naive local datetimes; .timestamp() reads them back
        for col in ("window_start", "window_end", "first_trade_ts", "last_trade_ts"):
            row[col] = round(row[col].timestamp() * 1000)
    return pd.DataFrame(rows, columns=list(transforms.BAR_COLUMNS))


def test_same_millisecond_trades_are_ordered_by_arrival(spark: Any) -> None:
    """Open is the first trade of the millisecond to reach Kafka, close the last, whatever
    their ids (here in the opposite order)."""
    trades = [make_trade("X", T0 + 100, p, 1.0, n) for n, p in enumerate([10.0, 11.0, 12.0])]
    arrived = sorted(trades, key=lambda t: t["trade_id"], reverse=True)
    bar = _bars(spark, arrived, "5 seconds").iloc[0]
    assert (bar["open"], bar["close"]) == (arrived[0]["price"], arrived[-1]["price"])
    assert bar["trade_count"] == 3


def test_zero_volume_bar_has_null_vwap(spark: Any) -> None:
    bar = _bars(spark, [make_trade("X", T0, 10.0, 0.0)], "5 seconds").iloc[0]
    assert pd.isna(bar["vwap"]) and bar["volume"] == 0.0 and bar["close"] == 10.0


def test_dedupe_counts_a_republished_trade_once(spark: Any) -> None:
    trades = [make_trade("X", T0 + 100 * n, 10.0 + n, 1.0, n) for n in range(4)]
    twice = trades + trades[1:3]
    (counted,) = _bars(spark, twice, "5 seconds").itertuples()
    (deduped,) = _bars(spark, twice, "5 seconds", dedupe=True).itertuples()
    assert (counted.trade_count, counted.volume) == (6, 6.0)
    assert (deduped.trade_count, deduped.volume) == (4, 4.0)
    # the same trade id at another time or symbol is another trade, as in the raw table's key
    other = [*trades, {**trades[0], "trade_ts": T0 + 4_000}, {**trades[0], "symbol": "Y"}]
    assert _bars(spark, other, "5 seconds", dedupe=True)["trade_count"].sum() == 6


_trade = st.builds(
    lambda sym, dt, p, v, n: make_trade(sym, T0 + dt, p, v, n),
    st.sampled_from(["A", "B"]),
    st.integers(-70_000, 70_000),
    st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False),
    # volumes within the bounds (a positive volume below 1e-12 goes to the DLQ)
    st.one_of(st.just(0.0), st.floats(1e-8, 1e4, allow_nan=False, allow_infinity=False)),
    st.integers(0, 3),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(trades=st.lists(_trade, min_size=1, max_size=40, unique_by=lambda t: t["trade_id"]))
@pytest.mark.parametrize(("duration", "bar"), [("5 seconds", "5s"), ("1 minute", "1m")])
def test_bars_equal_pandas(spark: Any, duration: str, bar: str, trades: list[dict]) -> None:
    got = _bars(spark, trades, duration)
    assert_bars_equal(got, expected_bars(pd.DataFrame(trades), bar))
