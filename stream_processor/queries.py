"""Wiring of the streaming queries: Kafka source -> transforms -> foreachBatch sinks.

Four queries share one Kafka topic and one session:

* ``trades_raw``: every valid trade upserted into ``trades``; rejects to the DLQ. Trigger <= 1 s.
* ``bars_5s``: 5-second bars into ``trades_agg_5s``, same trigger as the raw query.
* ``bars_1m`` and ``bars_1h``: rollups into ``trades_agg_1m``/``trades_agg_1h`` on the (slower)
  rollup trigger.

Each query keeps its own Kafka offsets and state in ``<checkpoint_dir>/<query name>``; a restart
resumes from there. Bars use update output mode, so every micro-batch upserts the bars it changed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from schemas.contracts import TABLE_AGG_1H, TABLE_AGG_1M, TABLE_AGG_5S, TABLE_TRADES
from stream_processor import transforms
from stream_processor.config import QueryName, StreamSettings
from stream_processor.metrics import DLQ_OBSERVATION
from stream_processor.sinks import BarsSink, RawTradesSink

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

__all__ = [
    "BAR_QUERIES",
    "kafka_records",
    "scheduler_conf",
    "start_queries",
    "start_query",
]

logger = logging.getLogger(__name__)

# query name -> (window duration, table)
BAR_QUERIES: dict[QueryName, tuple[str, str]] = {
    "bars_5s": ("5 seconds", TABLE_AGG_5S),
    "bars_1m": ("1 minute", TABLE_AGG_1M),
    "bars_1h": ("1 hour", TABLE_AGG_1H),
}


_POOLS_XML = """<?xml version="1.0"?>
<allocations>
  <pool name="raw">
    <schedulingMode>FIFO</schedulingMode><weight>4</weight><minShare>1</minShare>
  </pool>
  <pool name="bars">
    <schedulingMode>FAIR</schedulingMode><weight>1</weight><minShare>0</minShare>
  </pool>
</allocations>
"""


def scheduler_conf(folder: Path) -> dict[str, str]:
    """Spark settings for FAIR scheduling with a heavier pool for the raw query; writes the
    pool file into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pools = folder / "fair-pools.xml"
    pools.write_text(_POOLS_XML, encoding="utf-8")
    return {"spark.scheduler.mode": "FAIR", "spark.scheduler.allocation.file": str(pools)}


def kafka_records(spark: SparkSession, settings: StreamSettings) -> DataFrame:
    """A streaming frame of the trades topic's raw records."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap_servers)
        .option("subscribe", settings.trades_topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("failOnDataLoss", str(settings.fail_on_data_loss).lower())
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    return reader.load()


def _trigger(settings: StreamSettings, query: QueryName, once: bool) -> dict[str, object]:
    if once:
        return {"availableNow": True}
    interval = (
        settings.raw_trigger_ms
        if query in ("trades_raw", "bars_5s")
        else (settings.rollup_trigger_ms)
    )
    return {"processingTime": f"{interval} milliseconds"}


def start_query(
    spark: SparkSession,
    settings: StreamSettings,
    query: QueryName,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
) -> StreamingQuery:
    """Start one query by name.

    :param once: process what is in Kafka now (``availableNow``), then stop.
    :param stop: set on shutdown, so that a sink retrying a failed write gives up at once.
    """
    decoded = transforms.decoded_trades(
        kafka_records(spark, settings), max_future_skew_ms=settings.max_future_skew_ms
    )
    keyspace = settings.cassandra.keyspace
    if query == "trades_raw":
        frame = decoded.observe(
            DLQ_OBSERVATION,
            F.count(F.lit(1)).alias("records"),
            F.count(F.col("reason")).alias("dlq_rows"),
        )
        sink: RawTradesSink | BarsSink = RawTradesSink(
            keyspace=keyspace,
            table=TABLE_TRADES,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            dlq_topic=settings.dlq_topic,
            retry_ms=settings.sink_retry_ms,
            stop=stop,
        )
        mode = "append"
    else:
        duration, table = BAR_QUERIES[query]
        frame = transforms.ohlcv_bars(
            transforms.valid_trades(decoded), duration, f"{settings.watermark_ms} milliseconds"
        )
        sink = BarsSink(keyspace=keyspace, table=table, retry_ms=settings.sink_retry_ms, stop=stop)
        mode = "update"
    # Scheduler pool of the query's jobs (FAIR mode, see scheduler_conf): the raw query
    # outweighs the bars so that its latency holds while the aggregations run.
    spark.sparkContext.setLocalProperty(
        "spark.scheduler.pool", "raw" if query == "trades_raw" else "bars"
    )
    started = (
        frame.writeStream.queryName(query)
        .outputMode(mode)
        .option("checkpointLocation", settings.checkpoint(query))
        .trigger(**_trigger(settings, query, once))  # type: ignore[arg-type]
        .foreachBatch(sink)
        .start()
    )
    logger.info(
        "started %s: topic %s -> %s.%s, checkpoint %s",
        query,
        settings.trades_topic,
        keyspace,
        TABLE_TRADES if query == "trades_raw" else BAR_QUERIES[query][1],
        settings.checkpoint(query),
    )
    return started


def start_queries(
    spark: SparkSession,
    settings: StreamSettings,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
) -> list[StreamingQuery]:
    """Start every query in ``settings.queries``."""
    return [start_query(spark, settings, q, once=once, stop=stop) for q in settings.queries]
