"""The collector's HTTP probes: /healthz, /ready and the metrics on the same port."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from collector.metrics import READY_MAX_OUTAGE_S, CollectorMetrics


@pytest.fixture
def served() -> Iterator[tuple[CollectorMetrics, str]]:
    metrics = CollectorMetrics()
    server = metrics.serve("127.0.0.1", 0)
    try:
        yield metrics, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_ready_only_while_subscribed_and_kafka_acknowledges(
    served: tuple[CollectorMetrics, str],
) -> None:
    metrics, base = served
    assert get(f"{base}/ready") == (503, "not subscribed to the feed\n")
    metrics.connected.set(1)
    assert get(f"{base}/ready") == (200, "ready\n")
    metrics.outage_seconds.set(READY_MAX_OUTAGE_S + 5)
    status, body = get(f"{base}/ready")
    assert status == 503 and body.startswith("Kafka has acknowledged nothing for 15 s")
    metrics.outage_seconds.set(0)
    metrics.connected.set(0)  # a reconnect
    assert get(f"{base}/ready")[0] == 503


def test_healthz_answers_whatever_the_feed_and_metrics_stay_served(
    served: tuple[CollectorMetrics, str],
) -> None:
    metrics, base = served
    metrics.trades.inc(3)
    assert get(f"{base}/healthz") == (200, "ok\n")
    status, body = get(f"{base}/metrics")
    assert status == 200 and "collector_trades_total 3.0" in body
