"""Pure ``DataFrame -> DataFrame`` transforms of the stream processor, all in the JVM.

Decoding strips the 10-byte Avro single-object header after checking it byte for byte, then calls
``from_avro`` in PERMISSIVE mode (null instead of an exception); validation uses built-in
functions. No Python UDF runs on the hot path. Every transform works on a static DataFrame as well
as on a streaming one, which is how the unit tests exercise them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro

from schemas import avro_codec
from schemas.contracts import load_avro_schema
from schemas.limits import MAX_FUTURE_SKEW_MS, TradeLimits

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = [
    "BAR_COLUMNS",
    "TRADE_COLUMNS",
    "dead_letters",
    "decoded_trades",
    "header_hex",
    "ohlcv_bars",
    "trade_rows",
    "valid_trades",
]

TRADE_COLUMNS = (
    "symbol",
    "day",
    "trade_ts",
    "trade_id",
    "price",
    "volume",
    "conditions",
    "source",
    "ingest_ts",
    "kafka_offset",
)
BAR_COLUMNS = (
    "symbol",
    "day",
    "window_start",
    "window_end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
    "first_trade_ts",
    "last_trade_ts",
)
_FIELDS = ("trade_id", "symbol", "price", "volume", "trade_ts", "conditions", "source", "ingest_ts")


def _text(c: Column) -> Column:
    return F.coalesce(c.cast("string"), F.lit("null"))


def _between(c: Column, low: float, high: float) -> Column:
    # NaN sorts above every number in Spark SQL, so the upper bound alone keeps it out
    return (c >= F.lit(low)) & (c <= F.lit(high)) & ~F.isnan(c)


def _rejection_reason(max_future_skew_ms: int, limits: TradeLimits) -> Column:
    """The first rule a record breaks, as one line naming the field and value; null if valid."""
    t = F.col("trade")
    header = F.lit(bytearray(avro_codec.header()))
    skew_s = max_future_skew_ms / 1000.0
    return (
        F.when(F.col("value").isNull(), F.lit("value: null (tombstone or empty record)"))
        .when(
            (F.length("value") < avro_codec.HEADER_LENGTH)
            | (F.substring("value", 1, avro_codec.HEADER_LENGTH) != header),
            F.concat(
                F.lit("header: "),
                F.lower(F.hex(F.substring("value", 1, avro_codec.HEADER_LENGTH))),
                F.lit(f" is not the trade schema's single-object header {header_hex()}"),
            ),
        )
        # PERMISSIVE from_avro yields a struct of nulls; trade_id is a required Avro string.
        .when(
            t.isNull() | t.trade_id.isNull(),
            F.lit("avro: body does not decode with the trade schema"),
        )
        .when(F.length(t.trade_id) == 0, F.lit("trade_id: empty"))
        .when(F.length(t.symbol) == 0, F.lit("symbol: empty"))
        # bounded, so that no sum in the bars and rollups can overflow (schemas.limits)
        .when(
            ~_between(t.price, limits.min_price, limits.max_price),
            F.concat(F.lit("price: "), _text(t.price), F.lit(f" {limits.price_rule()}")),
        )
        .when(
            (t.volume != 0) & ~_between(t.volume, limits.min_volume, limits.max_volume),
            F.concat(F.lit("volume: "), _text(t.volume), F.lit(f" {limits.volume_rule()}")),
        )
        .when(
            t.trade_ts.cast("double") > F.col("kafka_ts").cast("double") + F.lit(skew_s),
            F.concat(
                F.lit("trade_ts: "),
                _text(t.trade_ts),
                F.lit(f" is more than {skew_s:g} s after its Kafka timestamp "),
                _text(F.col("kafka_ts")),
            ),
        )
    )


def header_hex() -> str:
    """The expected header as lowercase hex, as it appears in DLQ reasons."""
    return avro_codec.header().hex()


def decoded_trades(
    kafka_records: DataFrame,
    *,
    max_future_skew_ms: int = MAX_FUTURE_SKEW_MS,
    limits: TradeLimits | None = None,
) -> DataFrame:
    """Kafka records with their decoded trade and a ``reason`` (null when the trade is valid).

    :param kafka_records: rows with the Kafka source columns ``key, value, topic, partition,
        offset, timestamp``.
    :param max_future_skew_ms: reject trades whose ``trade_ts`` is later than the record's Kafka
        timestamp plus this (ms, default 2 s): one such trade would move the watermark of every
        symbol ahead and drop the on-time trades (``schemas.limits``).
    :param limits: the price and volume bounds (default ``TradeLimits()``); a trade outside
        them is rejected.
    :returns: ``key, value, topic, partition, offset, kafka_ts, trade (struct), reason``.
    """
    schema_json = json.dumps(load_avro_schema("trade"))
    body = F.expr(f"substring(value, {avro_codec.HEADER_LENGTH + 1})")
    decoded = kafka_records.select(
        "key", "value", "topic", "partition", "offset", F.col("timestamp").alias("kafka_ts")
    ).withColumn(
        "trade",
        F.when(
            F.substring("value", 1, avro_codec.HEADER_LENGTH)
            == F.lit(bytearray(avro_codec.header())),
            from_avro(body, schema_json, {"mode": "PERMISSIVE"}),
        ),
    )
    reason = _rejection_reason(max_future_skew_ms, limits or TradeLimits())
    return decoded.withColumn("reason", reason)


def valid_trades(decoded: DataFrame) -> DataFrame:
    """The trades that passed every rule, one flat row each (``symbol, trade_ts, ...``), with
    ``kafka_offset``, the record's offset in its partition: a symbol's trades share one
    partition (the key is the symbol), so it is the order the collector produced them in."""
    return decoded.where(F.col("reason").isNull()).select(
        *(f"trade.{f}" for f in _FIELDS), F.col("offset").alias("kafka_offset")
    )


def trade_rows(trades: DataFrame) -> DataFrame:
    """Rows for ``market.trades``: the trade plus ``day``, the UTC date of ``trade_ts``.

    Needs a session time zone of UTC (``schemas.runtime.spark`` sets it).
    """
    return trades.withColumn("day", F.to_date("trade_ts")).select(*TRADE_COLUMNS)


def dead_letters(decoded: DataFrame) -> DataFrame:
    """Rejected records as Kafka rows for the DLQ: ``key`` (the original key) and ``value``, a
    JSON object with the reason, where the record came from and its bytes in base64."""
    payload = F.struct(
        F.col("reason"),
        F.lit("stream_processor").alias("stage"),
        F.col("topic").alias("source_topic"),
        F.col("partition"),
        F.col("offset"),
        F.date_format("kafka_ts", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("kafka_timestamp"),
        F.col("key").cast("string").alias("key"),
        F.col("trade.trade_id").alias("trade_id"),
        F.col("trade.symbol").alias("symbol"),
        F.base64("value").alias("value_base64"),
    )
    return decoded.where(F.col("reason").isNotNull()).select(
        "key", F.to_json(payload).alias("value")
    )


def ohlcv_bars(
    trades: DataFrame, window_duration: str, watermark: str, *, dedupe: bool = False
) -> DataFrame:
    """Event-time tumbling bars per symbol, for ``trades_agg_*`` tables.

    open/close are the prices of the first/last trade by ``(trade_ts, kafka_offset,
    trade_id)``: trades of one millisecond in the order they arrived, which is the order the
    exchange printed them (ordering by id, a hash, gave another open or close in 24 of 416
    five-second bars of a real capture); the id only breaks ties between rows without an
    offset (written before the column existed). ``vwap`` is
    ``sum(price * volume) / sum(volume)``, and null when the bar's volume is 0 (no volume, no
    volume-weighted price). ``day`` is the UTC date of ``window_start``.

    :param trades: valid trades with ``symbol, trade_ts, trade_id, price, volume,
        kafka_offset`` (:func:`valid_trades`, or the ``trades`` table).
    :param window_duration: Spark interval, e.g. ``"5 seconds"``.
    :param watermark: Spark interval; on a streaming frame, a trade whose bar ended before the
        watermark is dropped from the bars (it still reaches the raw table) and counted in the
        query progress as ``numRowsDroppedByWatermark``.
    :param dedupe: count a trade published more than once (same ``symbol, trade_ts,
        trade_id``, the raw table's key) once. On a stream this keeps each key in state for the
        watermark delay (``dropDuplicatesWithinWatermark``); a copy arriving later than that is
        beyond the watermark and left out anyway.
    """
    by_time = F.struct("trade_ts", "kafka_offset", "trade_id", "price")
    # Only what the bars need: with de-duplication every row is shuffled by its key, and the
    # conditions, source and ingest time would triple the bytes of that shuffle.
    needed = trades.select("symbol", "trade_ts", "trade_id", "price", "volume", "kafka_offset")
    timed = needed.withWatermark("trade_ts", watermark)
    if dedupe:
        key = ["symbol", "trade_ts", "trade_id"]
        # a static frame (tests, backfills) has no watermark to bound the state by
        timed = (
            timed.dropDuplicatesWithinWatermark(key)
            if trades.isStreaming
            else timed.dropDuplicates(key)
        )
    agg = timed.groupBy("symbol", F.window("trade_ts", window_duration).alias("w")).agg(
        F.min(by_time).alias("first"),
        F.max(by_time).alias("last"),
        F.max("price").alias("high"),
        F.min("price").alias("low"),
        F.sum("volume").alias("volume"),
        F.sum(F.col("price") * F.col("volume")).alias("notional"),
        F.count(F.lit(1)).alias("trade_count"),
    )
    return agg.select(
        "symbol",
        F.to_date("w.start").alias("day"),
        F.col("w.start").alias("window_start"),
        F.col("w.end").alias("window_end"),
        F.col("first.price").alias("open"),
        "high",
        "low",
        F.col("last.price").alias("close"),
        "volume",
        F.when(F.col("volume") > 0, F.col("notional") / F.col("volume")).alias("vwap"),
        "trade_count",
        F.col("first.trade_ts").alias("first_trade_ts"),
        F.col("last.trade_ts").alias("last_trade_ts"),
    )
