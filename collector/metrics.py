"""Prometheus metrics of one collector, in their own registry (so tests can build many).

Served by ``python -m collector`` on ``COLLECTOR_METRICS_HOST:COLLECTOR_METRICS_PORT``
(default 127.0.0.1:9108; port 0 turns the endpoint off), with two probes beside ``/metrics``:
``/healthz`` (200 while the process answers) and ``/ready`` (200 while subscribed to the feed and
Kafka is acknowledging, else 503 with the reason), for Kubernetes and compose health checks.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from collector.models import FrameResult

__all__ = ["CollectorMetrics", "READY_MAX_OUTAGE_S"]

# Not ready once records have waited this long for Kafka's acknowledgement: the producer keeps
# them (nothing is lost), but the collector is not delivering.
READY_MAX_OUTAGE_S = 10.0


class CollectorMetrics:
    """Counters, gauges and the produce-latency histogram of a collector.

    :param registry: where to register; a new private registry by default.

    >>> m = CollectorMetrics()
    >>> m.trades.inc(3)
    >>> m.registry.get_sample_value("collector_trades_total")
    3.0
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "collector_frames", "Websocket frames received, by type", ["type"], registry=r
        )
        self.trades = Counter("collector_trades", "Trades handed to the Kafka producer", registry=r)
        self.zero_volume = Counter(
            "collector_zero_volume_trades",
            "Trades with volume 0 (Finnhub price updates), kept and produced",
            registry=r,
        )
        self.dead_letters = Counter(
            "collector_dead_letters", "Inputs sent to the DLQ, by reason", ["reason"], registry=r
        )
        self.server_errors = Counter(
            "collector_server_errors", "Error frames sent by the server", registry=r
        )
        self.reconnects = Counter(
            "collector_reconnects", "Reconnects by cause", ["reason"], registry=r
        )
        self.gaps_recorded = Counter(
            "collector_gaps_recorded", "Gaps written to the collector_gaps table", registry=r
        )
        self.gap_write_failures = Counter(
            "collector_gap_write_failures", "Gaps that could not be written", registry=r
        )
        self.sink_setup_failures = Counter(
            "collector_sink_setup_failures",
            "Attempts to reach Kafka at start that failed (each is retried with backoff)",
            registry=r,
        )
        self.delivery_failures = Counter(
            "collector_delivery_failures", "Records Kafka did not acknowledge", registry=r
        )
        self.buffered_records = Gauge(
            "collector_kafka_buffered_records",
            "Records handed to the Kafka producer and not acknowledged yet (bounded by "
            "COLLECTOR_KAFKA_BUFFER_RECORDS)",
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "collector_kafka_buffered_bytes",
            "Keys and values of those records, in bytes (bounded by COLLECTOR_KAFKA_BUFFER_BYTES)",
            registry=r,
        )
        self.outage_seconds = Gauge(
            "collector_kafka_outage_seconds",
            "Seconds Kafka has acknowledged nothing while records wait (0: none wait)",
            registry=r,
        )
        self.dropped = Counter(
            "collector_kafka_dropped_records",
            "Records of frames read while the Kafka buffer was full, not captured (each run of "
            "them is a kafka_buffer_full gap row), by kind",
            ["kind"],
            registry=r,
        )
        self.connected = Gauge(
            "collector_connected", "1 while subscribed to the websocket, else 0", registry=r
        )
        self.produce_latency = Histogram(
            "collector_produce_latency_seconds",
            "From handing a record to the producer to Kafka's acknowledgement (sampled: the last "
            "record of each frame)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self._last_trade_age = Gauge(
            "collector_last_trade_age_seconds",
            "Seconds since the event time of the newest trade seen, per symbol",
            ["symbol"],
            registry=r,
        )
        self._last_ts_ms: dict[str, int] = {}
        self._lock = threading.Lock()

    def watch_symbols(self, symbols: Iterable[str]) -> None:
        """Export ``collector_last_trade_age_seconds`` for each symbol (NaN until a trade)."""
        for symbol in symbols:
            self._last_trade_age.labels(symbol).set_function(
                lambda s=symbol: self._age_s(s)  # type: ignore[misc]
            )

    def _age_s(self, symbol: str) -> float:
        last = self._last_ts_ms.get(symbol)
        return float("nan") if last is None else time.time() - last / 1000

    def observe_frame(self, result: FrameResult) -> None:
        """Count one parsed frame: its type, trades, zero-volume trades, dead letters."""
        self.frames.labels(result.kind).inc()
        if result.trades:
            self.trades.inc(len(result.trades))
            newest = self._last_ts_ms
            zero = 0
            for t in result.trades:
                if t.volume == 0:
                    zero += 1
                if t.trade_ts_ms > newest.get(t.symbol, -1):
                    newest[t.symbol] = t.trade_ts_ms
            if zero:
                self.zero_volume.inc(zero)
        for letter in result.dead_letters:
            self.dead_letters.labels(letter.reason).inc()
        if result.kind == "error":
            self.server_errors.inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of a sample (0 when absent), e.g. ``collector_trades_total``."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def total(self, name: str) -> float:
        """The sum of a sample over all its label values, e.g. every DLQ reason."""
        return sum(
            s.value for metric in self.registry.collect() for s in metric.samples if s.name == name
        )

    def readiness(self) -> tuple[bool, str]:
        """Ready while subscribed to the feed and Kafka acknowledges within READY_MAX_OUTAGE_S.

        >>> m = CollectorMetrics()
        >>> m.readiness()
        (False, 'not subscribed to the feed')
        >>> m.connected.set(1)
        >>> m.readiness()
        (True, 'ready')
        """
        if self.value("collector_connected") != 1:
            return False, "not subscribed to the feed"
        outage = self.value("collector_kafka_outage_seconds")
        if outage > READY_MAX_OUTAGE_S:
            return False, f"Kafka has acknowledged nothing for {outage:.0f} s"
        return True, "ready"

    def serve(self, host: str, port: int) -> WSGIServer:
        """Start the HTTP endpoint on a daemon thread: ``/healthz``, ``/ready`` and, on any
        other path, the metrics. Returns the server (``server_port`` is the bound port)."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            path = environ.get("PATH_INFO", "")
            if path not in ("/healthz", "/ready"):
                return list(metrics_app(environ, start_response))
            ok, reason = (True, "ok") if path == "/healthz" else self.readiness()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{reason}\n".encode()]

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _QuietHandler(WSGIRequestHandler):
    """No access log line per probe or scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
