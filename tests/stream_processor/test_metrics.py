"""The progress listener on real streaming queries (file source, memory sink, no broker)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyspark.sql import functions as F

from schemas import avro_codec
from stream_processor import transforms
from stream_processor.metrics import DLQ_OBSERVATION, PrometheusListener
from tests.stream_processor.conftest import make_trade

T0 = 1_723_161_600_000
SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def _write_batch(spark: Any, folder: Path, name: str, values: list[bytes], first: int) -> None:
    ts = datetime(2030, 1, 1, tzinfo=UTC)
    rows = [(b"X", v, "trades", 0, first + i, ts) for i, v in enumerate(values)]
    spark.createDataFrame(rows, SCHEMA).coalesce(1).write.parquet(str(folder / name))


def _wait_for(listener: PrometheusListener, metric: str, query: str, want: float) -> float:
    deadline = time.monotonic() + 20
    value = -1.0
    while time.monotonic() < deadline:
        value = listener.registry.get_sample_value(metric, {"query": query}) or 0.0
        if value >= want:
            return value
        time.sleep(0.2)
    return value


def test_listener_counts_late_rows_dlq_rows_and_inputs(spark: Any, tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    listener = PrometheusListener()
    spark.streams.addListener(listener)
    trades = [make_trade("X", T0 + 60_000, 1.0, 1.0), make_trade("X", T0 + 61_000, 2.0, 1.0)]
    _write_batch(spark, source, "b0", [avro_codec.encode(t) for t in trades] + [b"junk"], 0)
    records = (
        spark.readStream.schema(SCHEMA).option("recursiveFileLookup", "true").parquet(str(source))
    )
    decoded = transforms.decoded_trades(records)
    observed = decoded.observe(
        DLQ_OBSERVATION, F.count(F.lit(1)).alias("records"), F.count("reason").alias("dlq_rows")
    )
    bars = transforms.ohlcv_bars(transforms.valid_trades(decoded), "5 seconds", "10 seconds")
    raw_q = (
        observed.writeStream.queryName("metrics_raw")
        .format("memory")
        .outputMode("append")
        .option("checkpointLocation", str(tmp_path / "cp_raw"))
        .trigger(processingTime="200 milliseconds")
        .start()
    )
    bars_q = (
        bars.writeStream.queryName("metrics_bars")
        .format("memory")
        .outputMode("update")
        .option("checkpointLocation", str(tmp_path / "cp_bars"))
        .trigger(processingTime="200 milliseconds")
        .start()
    )
    try:
        raw_q.processAllAvailable()
        bars_q.processAllAvailable()
        # Spark counts late rows after partial aggregation, so two late trades in one window
        # of one batch count once; these two fall in different windows.
        late = [make_trade("X", T0 + 1_000, 3.0, 1.0), make_trade("X", T0 + 6_000, 3.0, 1.0)]
        _write_batch(spark, source, "b1", [avro_codec.encode(t) for t in late] + [b""], 3)
        raw_q.processAllAvailable()
        bars_q.processAllAvailable()
        assert _wait_for(listener, "stream_late_rows_dropped_total", "metrics_bars", 2) == 2
        assert _wait_for(listener, "stream_dlq_rows_total", "metrics_raw", 2) == 2
        assert _wait_for(listener, "stream_input_rows_total", "metrics_raw", 6) == 6
        assert _wait_for(listener, "stream_batches_total", "metrics_bars", 2) >= 2
        watermark = listener.registry.get_sample_value(
            "stream_watermark_seconds", {"query": "metrics_bars"}
        )
        assert watermark == (T0 + 61_000 - 10_000) / 1000
    finally:
        raw_q.stop()
        bars_q.stop()
        spark.streams.removeListener(listener)


def test_a_failed_query_is_counted_under_its_name_not_its_id() -> None:
    """Spark's terminated event carries the query's UUID only, which changes on every start;
    the failure is counted under the name the started event gave it."""
    listener = PrometheusListener()
    query_id = "5d2e9a0c-7f4b-4c1e-9b8a-2f6d0e3c1a77"
    listener.onQueryStarted(SimpleNamespace(id=query_id, name="bars", runId="run-1"))
    listener.onQueryTerminated(SimpleNamespace(id=query_id, exception="CassandraSinkError: x"))
    listener.onQueryTerminated(SimpleNamespace(id="another-id", exception=None))
    assert listener.registry.get_sample_value("stream_query_failures_total", {"query": "bars"}) == 1
    assert (
        listener.registry.get_sample_value("stream_query_failures_total", {"query": query_id})
        is None
    )
