"""Kafka outages and collector restarts (issue 12, items 5 and 6), against the real Kafka and
Cassandra. The shared broker is never stopped: "Kafka down" is a closed port in front of it, a
TCP proxy that starts forwarding to the real broker when the test opens it."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from collector.feed import FeedServer, SimulatedMarket
from schemas.settings import CassandraSettings
from tests.collector.conftest import CollectorRun, gaps_in, read_topic
from tests.conftest import Stack

pytestmark = pytest.mark.integration

SYMBOLS = ("BINANCE:BTCUSDT", "AAPL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KafkaBehindAPort:
    """A port that refuses connections until :meth:`open`, then forwards each one to Kafka.

    Only the bootstrap goes through it (the broker then advertises its own address), which is all
    a producer's start needs: while the port is closed the broker is unreachable to it.
    """

    def __init__(self, target: str) -> None:
        host, port = target.split(",")[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = _free_port()
        self._server: socket.socket | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()


def _ms(value: datetime) -> int:
    return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000 + 0.5)


def test_kafka_down_at_start_is_retried_with_backoff_and_recorded_as_a_gap(
    stack: Stack,
    test_keyspace: CassandraSettings,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
) -> None:
    kafka = KafkaBehindAPort(stack.kafka.bootstrap_servers)
    topic = unique_topic("coll-kafka-down")
    server = feed(SimulatedMarket(SYMBOLS, rate=500, seed=3))
    started = datetime.now(UTC)
    run = run_collector(
        server.port,
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.port}",
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(SYMBOLS),
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "COLLECTOR_BACKOFF_INITIAL_S": "0.2",
            "COLLECTOR_BACKOFF_MAX_S": "1",
        },
        "--max-trades",
        "200",
    )
    try:
        # each attempt waits out the producer's own bootstrap timeout (15 s); before: exit 1
        deadline = time.monotonic() + 90
        while run.output().count("Kafka is not reachable") < 2:
            assert run.process.poll() is None, f"the collector gave up:\n{run.output()}"
            assert time.monotonic() < deadline, run.output()
            time.sleep(0.5)
        kafka.open()
        assert run.wait(120) == 0, run.output()
    finally:
        kafka.close()
    assert len(read_topic(stack, topic)) >= 200
    pid = run.process.pid
    (gap,) = [g for g in gaps_in(test_keyspace) if g.collector_id.endswith(f":{pid}")]
    assert gap.reason == "kafka_unavailable"
    assert _ms(started) - 1000 <= _ms(gap.gap_start)
    assert gap.duration_ms >= 15_000


def test_a_killed_collector_leaves_a_gap_that_its_successor_records(
    stack: Stack,
    test_keyspace: CassandraSettings,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
    tmp_path: object,
) -> None:
    topic = unique_topic("coll-kill9")
    server = feed(SimulatedMarket(SYMBOLS, rate=300, seed=4))
    env = {
        "TRADES_TOPIC": topic,
        "SYMBOLS": ",".join(SYMBOLS),
        "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
        "COLLECTOR_HEARTBEAT_FILE": f"{tmp_path}/collector.heartbeat",
    }
    first = run_collector(server.port, env)
    deadline = time.monotonic() + 60
    while "progress:" not in first.output():
        assert time.monotonic() < deadline and first.process.poll() is None, first.output()
        time.sleep(0.2)
    time.sleep(1.5)
    first.process.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = datetime.now(UTC)
    time.sleep(2)
    second = run_collector(server.port, env, "--max-trades", "100")
    assert second.wait(120) == 0, second.output()
    rows = gaps_in(test_keyspace)
    (gap,) = [g for g in rows if g.collector_id.endswith(f":{second.process.pid}")]
    assert gap.reason == "restart"
    assert f":{first.process.pid}" in gap.detail and "did not stop cleanly" in gap.detail
    # from the killed run's last safe beat (one to two beats before the kill) to the new subscribe
    assert _ms(killed) - 3500 <= _ms(gap.gap_start) <= _ms(killed)
    assert _ms(gap.gap_end) >= _ms(killed) + 2000
    assert list(gap.symbols) == list(SYMBOLS)
