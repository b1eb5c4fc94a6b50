"""Streaming metrics: a ``StreamingQueryListener`` that logs every progress event and feeds
Prometheus gauges and counters, labelled by query name.

Exposed series (prefix ``stream_``): ``input_rows_per_second``, ``processed_rows_per_second``,
``batch_duration_seconds``, ``kafka_offsets_behind_latest`` (max over partitions),
``watermark_seconds`` (the event-time watermark as epoch seconds; ``time() - watermark`` is
how far the bars trail the wall clock), and the counters ``input_rows_total``,
``late_rows_dropped_total`` (``numRowsDroppedByWatermark``), ``dlq_rows_total``,
``batches_total``, ``query_failures_total``.

Spark counts ``numRowsDroppedByWatermark`` after partial aggregation: late trades of one symbol
that fall in the same closed window within one micro-batch task count once. The counter is
therefore a lower bound on late trades (every late trade is still in the raw table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pyspark.sql.streaming import StreamingQueryListener

__all__ = ["DLQ_OBSERVATION", "ProgressSample", "PrometheusListener", "progress_sample"]

logger = logging.getLogger(__name__)

# Name of the ``DataFrame.observe`` metric set that counts valid and rejected records.
DLQ_OBSERVATION = "decode"


@dataclass(frozen=True, kw_only=True)
class ProgressSample:
    """The numbers one progress event carries that we export."""

    query: str
    batch_id: int
    input_rows: int
    input_rows_per_second: float
    processed_rows_per_second: float
    batch_duration_s: float
    late_rows_dropped: int
    dlq_rows: int
    kafka_offsets_behind_latest: float | None
    watermark_s: float | None


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def progress_sample(progress: Any) -> ProgressSample:
    """Extract the exported numbers from a ``StreamingQueryProgress``.

    :param progress: ``event.progress`` of ``onQueryProgress``.
    """
    late = sum(int(op.numRowsDroppedByWatermark) for op in progress.stateOperators)
    behind: float | None = None
    for source in progress.sources:
        value = (source.metrics or {}).get("maxOffsetsBehindLatest")
        if value is not None:
            behind = max(behind or 0.0, float(value))
    dlq = 0
    observed = (progress.observedMetrics or {}).get(DLQ_OBSERVATION)
    if observed is not None:
        dlq = int(observed["dlq_rows"] or 0)
    watermark = _parse_ts((progress.eventTime or {}).get("watermark"))
    return ProgressSample(
        query=progress.name or str(progress.id),
        batch_id=int(progress.batchId),
        input_rows=int(progress.numInputRows),
        input_rows_per_second=float(progress.inputRowsPerSecond or 0.0),
        processed_rows_per_second=float(progress.processedRowsPerSecond or 0.0),
        batch_duration_s=float(progress.batchDuration) / 1000.0,
        late_rows_dropped=late,
        dlq_rows=dlq,
        kafka_offsets_behind_latest=behind,
        watermark_s=watermark.timestamp() if watermark is not None else None,
    )


class PrometheusListener(StreamingQueryListener):
    """Feeds Prometheus from query progress; optionally serves ``/metrics``.

    :param registry: where the series live (a fresh one by default, so tests do not collide).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Spark's terminated event carries the query's id only; its name comes from the started
        # event, so every series is labelled by the stable name, not a UUID that changes per run.
        self._names: dict[str, str] = {}
        label = ["query"]
        r = self.registry
        self.input_rate = Gauge("stream_input_rows_per_second", "Input rows/s", label, registry=r)
        self.processed_rate = Gauge(
            "stream_processed_rows_per_second", "Processed rows/s", label, registry=r
        )
        self.batch_duration = Gauge(
            "stream_batch_duration_seconds", "Last micro-batch duration", label, registry=r
        )
        self.kafka_lag = Gauge(
            "stream_kafka_offsets_behind_latest",
            "Max offsets behind the latest Kafka offset over partitions",
            label,
            registry=r,
        )
        self.watermark = Gauge(
            "stream_watermark_seconds", "Event-time watermark, epoch seconds", label, registry=r
        )
        self.input_rows = Counter("stream_input_rows", "Rows read", label, registry=r)
        self.late_rows = Counter(
            "stream_late_rows_dropped",
            "Late rows left out of the bars because their window had closed "
            "(Spark numRowsDroppedByWatermark, counted after partial aggregation: one per "
            "symbol, window and task, so a lower bound on late trades)",
            label,
            registry=r,
        )
        self.dlq_rows = Counter("stream_dlq_rows", "Records sent to the DLQ", label, registry=r)
        self.batches = Counter("stream_batches", "Micro-batches completed", label, registry=r)
        self.failures = Counter(
            "stream_query_failures", "Queries that terminated with an error", label, registry=r
        )

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
        logger.info("metrics on http://%s:%d/metrics", host, port)

    def record(self, sample: ProgressSample) -> None:
        """Apply one progress sample to the series."""
        q = sample.query
        self.input_rate.labels(q).set(sample.input_rows_per_second)
        self.processed_rate.labels(q).set(sample.processed_rows_per_second)
        self.batch_duration.labels(q).set(sample.batch_duration_s)
        if sample.kafka_offsets_behind_latest is not None:
            self.kafka_lag.labels(q).set(sample.kafka_offsets_behind_latest)
        if sample.watermark_s is not None:
            self.watermark.labels(q).set(sample.watermark_s)
        self.input_rows.labels(q).inc(sample.input_rows)
        self.late_rows.labels(q).inc(sample.late_rows_dropped)
        self.dlq_rows.labels(q).inc(sample.dlq_rows)
        self.batches.labels(q).inc()

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 - Spark's callback names
        self._names[str(event.id)] = event.name or str(event.id)
        logger.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        sample = progress_sample(event.progress)
        self.record(sample)
        logger.info(
            "query %s batch %d: %d rows, %.0f in/s, %.0f processed/s, %.2f s (ms: %s), "
            "kafka lag %s, dlq %d, late %d",
            sample.query,
            sample.batch_id,
            sample.input_rows,
            sample.input_rows_per_second,
            sample.processed_rows_per_second,
            sample.batch_duration_s,
            " ".join(f"{k} {v}" for k, v in sorted((event.progress.durationMs or {}).items())),
            sample.kafka_offsets_behind_latest,
            sample.dlq_rows,
            sample.late_rows_dropped,
        )
        if sample.late_rows_dropped:
            logger.warning(
                "query %s batch %d: %d trades arrived after their bar closed (watermark) and "
                "were left out of the bars; they are in the raw table",
                sample.query,
                sample.batch_id,
                sample.late_rows_dropped,
            )

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        name = self._names.get(str(event.id), str(event.id))
        if event.exception:
            self.failures.labels(name).inc()
            logger.error("query %s terminated with an error: %s", name, event.exception)
        else:
            logger.info("query %s stopped", name)
