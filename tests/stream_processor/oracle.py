"""Independent pandas computation of what the stream processor must write."""

from __future__ import annotations

import numpy as np
import pandas as pd

BAR_MS = {"5s": 5_000, "1m": 60_000, "1h": 3_600_000}


def expected_bars(trades: pd.DataFrame, bar: str, dropped: pd.Series | None = None) -> pd.DataFrame:
    """Bars from trades with columns symbol, trade_ts (epoch ms), trade_id, price, volume, in
    the order they were produced to Kafka: open and close of trades in the same millisecond
    follow that order.

    :param dropped: boolean mask of trades the watermark keeps out of this bar size.
    """
    size = BAR_MS[bar]
    df = trades if dropped is None else trades[~dropped]
    df = df.assign(window_start=(df["trade_ts"] // size) * size)
    df = df.sort_values(["symbol", "window_start", "trade_ts"], kind="mergesort")  # stable
    df = df.assign(pv=df["price"] * df["volume"])
    g = df.groupby(["symbol", "window_start"], sort=True)
    out = g.agg(
        open=("price", "first"),
        close=("price", "last"),
        high=("price", "max"),
        low=("price", "min"),
        volume=("volume", "sum"),
        notional=("pv", "sum"),
        trade_count=("price", "size"),
        first_trade_ts=("trade_ts", "min"),
        last_trade_ts=("trade_ts", "max"),
    ).reset_index()
    out["vwap"] = np.where(
        out["volume"] > 0, out["notional"] / out["volume"].where(out["volume"] > 0, 1.0), np.nan
    )
    out["window_end"] = out["window_start"] + size
    return out.drop(columns="notional")


def cassandra_bars(rows: pd.DataFrame) -> pd.DataFrame:
    """Cassandra bar rows in the oracle's shape (epoch-ms ints, NaN for a null vwap)."""
    out = rows.copy()
    for col in ("window_start", "window_end", "first_trade_ts", "last_trade_ts"):
        out[col] = _to_ms(out[col])
    out["vwap"] = out["vwap"].astype(float)
    return out.sort_values(["symbol", "window_start"]).reset_index(drop=True)


def _to_ms(col: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(col):
        return col
    ts = pd.to_datetime(col, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def assert_bars_equal(actual_rows: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Exact keys, counts and times; prices, volume and VWAP to 1e-9 relative."""
    actual = cassandra_bars(actual_rows)
    expected = expected.sort_values(["symbol", "window_start"]).reset_index(drop=True)
    assert len(actual) == len(expected), f"{len(actual)} bars, expected {len(expected)}"
    for col in (
        "symbol",
        "window_start",
        "window_end",
        "trade_count",
        "first_trade_ts",
        "last_trade_ts",
    ):
        assert actual[col].tolist() == expected[col].tolist(), col
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        np.testing.assert_allclose(
            actual[col].to_numpy(float),
            expected[col].to_numpy(float),
            rtol=1e-9,
            atol=0,
            equal_nan=True,
            err_msg=col,
        )
    day = pd.to_datetime(actual["window_start"], unit="ms", utc=True).dt.date
    assert [str(d) for d in actual_rows.sort_values(["symbol", "window_start"])["day"]] == [
        str(d) for d in day
    ]


def cassandra_trades(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    out["trade_ts"] = _to_ms(out["trade_ts"])
    out["ingest_ts"] = _to_ms(out["ingest_ts"])
    out["conditions"] = out["conditions"].map(lambda c: list(c) if c else [])
    return out.sort_values(["symbol", "trade_ts", "trade_id"]).reset_index(drop=True)
