"""Wiring of the streaming queries: Kafka source -> transforms -> foreachBatch sinks.

Two queries share one Kafka topic and one session:

* ``trades_raw``: every valid trade upserted into ``trades``; rejects to the DLQ. Trigger <= 1 s.
* ``bars_5s``: 5-second bars upserted into ``trades_agg_5s``; after each micro-batch the 1-minute
  and 1-hour bars that it touched are recomputed from the finer bars (``rollups``) into
  ``trades_agg_1m`` and ``trades_agg_1h``.

Each query reads and decodes the topic itself; Spark cannot feed one decoded stream into both a
``foreachBatch`` sink and a stateful aggregation. Rolling the coarser bars up from the 5-second
bars, instead of aggregating the trades three times, keeps it at two reads of the topic.

Each query keeps its own Kafka offsets and state in ``<checkpoint_dir>/<query name>``; a restart
resumes from there. Bars use update output mode, so every micro-batch upserts the bars it changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from schemas.contracts import TABLE_AGG_5S, TABLE_TRADES
from stream_processor import transforms
from stream_processor.config import QueryName, StreamSettings
from stream_processor.metrics import DLQ_OBSERVATION
from stream_processor.rollups import CassandraRollups
from stream_processor.sinks import BarsSink, RawTradesSink

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

__all__ = [
    "close_rollups",
    "kafka_records",
    "scheduler_conf",
    "start_queries",
    "start_query",
]

logger = logging.getLogger(__name__)

_rollups: dict[tuple[object, str], CassandraRollups] = {}
_rollups_lock = threading.Lock()


def _shared_rollups(settings: StreamSettings) -> CassandraRollups:
    """One rollup writer (and driver session) per keyspace, kept across query restarts."""
    key = (settings.cassandra, settings.cassandra.keyspace)
    with _rollups_lock:
        if key not in _rollups:
            _rollups[key] = CassandraRollups(settings.cassandra, settings.cassandra.keyspace)
        return _rollups[key]


def close_rollups() -> None:
    """Shut down the shared rollup writers' driver sessions, once their queries have stopped.

    A cassandra-driver cluster left open at interpreter exit races the exit: its scheduler
    thread submits to an executor that Python has already shut down, and the process ends with
    a ``RuntimeError`` traceback from a thread (seen under load in ``tests/test_time_zones.py``).
    """
    with _rollups_lock:
        writers = list(_rollups.values())
        _rollups.clear()
    for writer in writers:
        writer.close()


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


@dataclass(frozen=True)
class _Plan:
    """What differs between the queries: the frame written, its sink and output mode, the
    scheduler pool (FAIR mode, see :func:`scheduler_conf`) and the table it feeds."""

    frame: DataFrame
    sink: RawTradesSink | BarsSink
    mode: str
    pool: str
    table: str


def _raw_plan(decoded: DataFrame, settings: StreamSettings, stop: threading.Event | None) -> _Plan:
    """Every decoded record, counted for the DLQ metric; valid trades upserted, rejects to the
    DLQ. Its pool outweighs the bars' so that its latency holds while the aggregations run."""
    frame = decoded.observe(
        DLQ_OBSERVATION,
        F.count(F.lit(1)).alias("records"),
        F.count(F.col("reason")).alias("dlq_rows"),
    )
    sink = RawTradesSink(
        keyspace=settings.cassandra.keyspace,
        table=TABLE_TRADES,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        dlq_topic=settings.dlq_topic,
        retry_ms=settings.sink_retry_ms,
        stop=stop,
    )
    return _Plan(frame, sink, mode="append", pool="raw", table=TABLE_TRADES)


def _bars_plan(decoded: DataFrame, settings: StreamSettings, stop: threading.Event | None) -> _Plan:
    """5-second bars of the valid trades, upserted as they change; the 1-minute and 1-hour
    bars they touch are recomputed after each micro-batch."""
    frame = transforms.ohlcv_bars(
        transforms.valid_trades(decoded),
        "5 seconds",
        f"{settings.watermark_ms} milliseconds",
        dedupe=settings.bars_dedupe,
    )
    sink = BarsSink(
        keyspace=settings.cassandra.keyspace,
        table=TABLE_AGG_5S,
        retry_ms=settings.sink_retry_ms,
        rollups=_shared_rollups(settings),
        stop=stop,
    )
    return _Plan(frame, sink, mode="update", pool="bars", table=TABLE_AGG_5S)


_PLANS: dict[QueryName, Callable[[DataFrame, StreamSettings, threading.Event | None], _Plan]] = {
    "trades_raw": _raw_plan,
    "bars_5s": _bars_plan,
}


def _with_trigger(
    writer: DataStreamWriter, settings: StreamSettings, query: QueryName, once: bool
) -> DataStreamWriter:
    if once:
        return writer.trigger(availableNow=True)
    interval = settings.raw_trigger_ms if query == "trades_raw" else settings.bars_trigger_ms
    return writer.trigger(processingTime=f"{interval} milliseconds")


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
        kafka_records(spark, settings),
        max_future_skew_ms=settings.max_future_skew_ms,
        limits=settings.limits,
    )
    plan = _PLANS[query](decoded, settings, stop)
    # The pool is a thread-local property: the jobs this query's thread starts run in it.
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", plan.pool)
    writer = (
        plan.frame.writeStream.queryName(query)
        .outputMode(plan.mode)
        .option("checkpointLocation", settings.checkpoint(query))
    )
    started = _with_trigger(writer, settings, query, once).foreachBatch(plan.sink).start()
    logger.info(
        "started %s: topic %s -> %s.%s, checkpoint %s",
        query,
        settings.trades_topic,
        settings.cassandra.keyspace,
        plan.table,
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
