"""``python -m collector``: Finnhub websocket -> validated Avro trades in Kafka.

Usage::

    FINNHUB_TOKEN=... python -m collector                     # the live Finnhub
    FINNHUB_WS_URL=ws://127.0.0.1:8765 python -m collector    # the offline feed, no token
    python -m collector --record frames.jsonl --duration 60   # also keep the raw frames

Exit codes: 0 clean stop (everything acknowledged by Kafka), 1 runtime failure (Kafka refused
records, the token was refused), 2 bad configuration, 130 killed by a second Ctrl+C.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from collector.config import CollectorConfig
from collector.connection import FinnhubConnection, backoff_delay
from collector.delivery import TradeSink
from collector.exceptions import CollectorError, ConfigError, SinkSetupError
from collector.finnhub import FrameParser
from collector.gaps import CassandraGapStore, GapSink, LoggingGapStore
from collector.heartbeat import Heartbeat, PreviousRun
from collector.metrics import CollectorMetrics
from collector.models import GapReason
from collector.pipeline import FrameHandler
from collector.producer import KafkaSink
from collector.producer_confluent import ConfluentKafkaSink
from collector.recorder import FrameRecorder
from collector.sink import KafkaSinkBase

logger = logging.getLogger("collector")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m collector",
        description="Finnhub websocket -> validated Avro trades in Kafka (settings: environment "
        "variables, see README).",
    )
    parser.add_argument("--record", type=Path, metavar="FILE", help="also write every frame here")
    parser.add_argument(
        "--max-trades", type=int, metavar="N", help="stop after producing at least N trades"
    )
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    if args.max_trades is not None and args.max_trades < 1:
        parser.error(f"--max-trades {args.max_trades}: must be >= 1")
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration {args.duration:g}: must be > 0")
    return args


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websocket-client's own logger may print handshake details; keep it to warnings.
    logging.getLogger("websocket").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.WARNING)


def _install_signal_handlers(connection: FinnhubConnection) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info(
            "%s: stopping after the current frame, then flushing Kafka", signal.Signals(signum).name
        )
        connection.stop()
        # A second Ctrl+C interrupts the flush.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _set_up_sink(
    sink: TradeSink,
    config: CollectorConfig,
    connection: FinnhubConnection,
    metrics: CollectorMetrics,
) -> str:
    """Set the sink up, retrying with capped, jittered backoff while Kafka is unreachable (the
    websocket is not opened before: a trade read now could not be delivered). Returns "" when
    Kafka answered at once, else what kept it away (for the gap row).

    A stop while waiting returns too; the sink then stays unset and :meth:`close` does nothing.
    """
    rng = random.Random()
    attempt = 0
    first_error = ""
    while not connection.stopping:
        try:
            sink.setup()
        except SinkSetupError as exc:
            first_error = first_error or config.redact(str(exc))
            delay = backoff_delay(
                attempt, initial_s=config.backoff_initial_s, max_s=config.backoff_max_s, rng=rng
            )
            attempt += 1
            metrics.sink_setup_failures.inc()
            logger.warning(
                "Kafka is not reachable (attempt %d: %s); retrying in %.2f s",
                attempt,
                config.redact(str(exc)),
                delay,
            )
            connection.wait_stopped(delay)
            continue
        break
    if not attempt:
        return ""
    return f"Kafka unreachable at start for {attempt} attempt(s): {first_error}"


def _serve_metrics(config: CollectorConfig) -> CollectorMetrics:
    metrics = CollectorMetrics()
    metrics.watch_symbols(config.symbols)
    if config.metrics_port:
        try:
            metrics.serve(config.metrics_host, config.metrics_port)
        except OSError as exc:
            raise ConfigError(
                f"COLLECTOR_METRICS_PORT={config.metrics_port}: cannot listen on "
                f"{config.metrics_host} ({exc.strerror}); set another port or 0 to disable"
            ) from None
    return metrics


def _new_sink(config: CollectorConfig, metrics: CollectorMetrics) -> KafkaSinkBase:
    sink_class = ConfluentKafkaSink if config.kafka_client == "confluent" else KafkaSink
    return sink_class(
        bootstrap_servers=config.kafka.bootstrap_servers,
        trades_topic=config.trades_topic,
        dlq_topic=config.dlq_topic,
        linger_ms=config.linger_ms,
        batch_bytes=config.batch_bytes,
        compression=config.compression,
        buffer_records=config.kafka_buffer_records,
        buffer_bytes=config.kafka_buffer_bytes,
        metrics=metrics,
    )


def _new_parser(config: CollectorConfig) -> FrameParser:
    return FrameParser(
        config.symbols,
        source=config.source,
        max_future_skew_ms=int(config.max_future_skew_s * 1000),
        max_past_skew_ms=int(config.max_past_skew_s * 1000),
    )


def _resume_gap(
    previous: PreviousRun | None, kafka_down: str, started_ms: int
) -> tuple[int, GapReason, str] | None:
    """The gap this run starts in: since the previous run's last safe beat, else since the start
    when Kafka kept the collector waiting, else none."""
    if previous is not None:
        detail = previous.describe() + (f"; then {kafka_down}" if kafka_down else "")
        return previous.safe_ms, "restart", detail
    if kafka_down:
        return started_ms, "kafka_unavailable", kafka_down
    return None


def _log_start(config: CollectorConfig) -> None:
    logger.info(
        "collecting %s from %s into %s (dlq %s, client %s), source %s, metrics %s",
        ",".join(config.symbols),
        config.ws_url,
        config.trades_topic,
        config.dlq_topic,
        config.kafka_client,
        config.source,
        f"http://{config.metrics_host}:{config.metrics_port}/metrics"
        if config.metrics_port
        else "off",
    )


def _shut_down(
    handler: FrameHandler,
    sink: TradeSink,
    flush_timeout_s: float,
    heartbeat: Heartbeat | None,
    gaps: GapSink,
    recorder: FrameRecorder | None,
) -> None:
    """Flush Kafka (raises DeliveryError if anything stays unacknowledged), then close the rest
    whatever happened."""
    try:
        handler.finish()  # frames dropped while the Kafka buffer was full: their gap row
        sink.close(flush_timeout_s)
        if heartbeat is not None:  # everything is in Kafka: the next run's gap starts now
            heartbeat.stopped_cleanly(time.time_ns() // 1_000_000)
    finally:
        gaps.close()
        if recorder is not None:
            recorder.close()


def run(config: CollectorConfig, args: argparse.Namespace) -> int:
    metrics = _serve_metrics(config)
    sink = _new_sink(config, metrics)
    gaps: GapSink = (
        CassandraGapStore(config.cassandra, metrics) if config.record_gaps else LoggingGapStore()
    )
    heartbeat = (
        Heartbeat(config.heartbeat_file, config.collector_id) if config.heartbeat_file else None
    )
    previous = heartbeat.previous() if heartbeat is not None else None
    recorder = FrameRecorder(args.record) if args.record else None
    handler = FrameHandler(
        _new_parser(config),
        sink,
        metrics,
        recorder=recorder,
        max_trades=args.max_trades,
        progress_interval_s=config.progress_interval_s,
        limit_bytes=config.max_frame_bytes,
        heartbeat=heartbeat,
        gaps=gaps,
        collector_id=config.collector_id,
    )
    connection = FinnhubConnection(
        config,
        handler,
        gaps=gaps,
        metrics=metrics,
        on_idle=handler.idle,
        on_oversized=handler.reject_oversized,
    )
    _install_signal_handlers(connection)
    started_ms = time.time_ns() // 1_000_000
    kafka_down = _set_up_sink(sink, config, connection, metrics)
    connection.resume_gap = _resume_gap(previous, kafka_down, started_ms)
    deadline = time.monotonic() + args.duration if args.duration else None
    _log_start(config)
    try:
        connection.run(
            should_stop=lambda: handler.done
            or (deadline is not None and time.monotonic() >= deadline)
        )
    finally:
        _shut_down(handler, sink, config.flush_timeout_s, heartbeat, gaps, recorder)
    logger.info("stopped cleanly: %s, all acknowledged by Kafka", handler.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    _configure_logging(args.log_level)
    try:
        config = CollectorConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return run(config, args)
    except ConfigError as exc:
        print(f"error: {config.redact(str(exc))}", file=sys.stderr)
        return 2
    except CollectorError as exc:
        print(f"error: {config.redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted twice, Kafka flush abandoned", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
