"""Kafka outages and collector restarts (issue 12, items 5 and 6), against the real Kafka and
Cassandra. The shared broker is never stopped: "Kafka down" at start is a closed port in front of
it, a TCP proxy that starts forwarding to the real broker when the test opens it. Kafka gone
*mid-run* needs every connection cut, not only the bootstrap (clients then connect to the
address the broker advertises), so those tests start a private broker that advertises a proxy's
port: cutting the proxy cuts Kafka off completely."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collector.feed import FeedServer, SimulatedMarket
from infra.config import InfraConfig
from infra.kafka import KafkaService
from infra.supervisor import Supervisor
from schemas import avro_codec
from schemas.settings import CassandraSettings
from tests.collector.conftest import CollectorRun, gaps_in, read_topic, sent_trades
from tests.conftest import Stack

pytestmark = pytest.mark.integration

SYMBOLS = ("BINANCE:BTCUSDT", "AAPL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side ends, then end both directions. Each socket is
    the source of one of a connection's two pipes, which closes it; the other pipe's sendall to
    it then fails like one to a closed peer."""
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
        src.close()


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
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

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
            "COLLECTOR_BACKOFF_INITIAL": "0.2",
            "COLLECTOR_BACKOFF_MAX": "1",
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
    beat = Path(env["COLLECTOR_HEARTBEAT_FILE"])
    deadline = time.monotonic() + 60
    # killed once it is producing and has left a heartbeat for its successor
    while "progress:" not in first.output() or not beat.exists():
        assert time.monotonic() < deadline and first.process.poll() is None, first.output()
        time.sleep(0.2)
    first.process.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = datetime.now(UTC)
    time.sleep(2)  # the outage itself: the gap must cover these 2 s
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


# --- Kafka gone mid-run -------------------------------------------------------------------------


class CuttableProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target`` until :meth:`cut`, which refuses new
    connections and resets the open ones (what clients see of a broker that died);
    :meth:`restore` forwards again on the same port."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        assert self._server is not None
        server, self._server = self._server, None
        # shutdown wakes the accept() blocked on it; a bare close would leave the port bound
        try:
            server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        server.close()
        with self._lock:
            sockets, self._open = self._open, set()
        for s in sockets:
            try:  # linger 0: a reset, as from a dead peer's kernel; shutdown wakes its pipe's
                # recv(), without which close would leave the connection open
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by cut()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


class _BrokerBehindProxy(KafkaService):
    """A private single-node broker that listens on ``listen_port`` and advertises the configured
    client port, where the test's proxy listens."""

    listen_port = 0

    @property
    def ports(self) -> dict[str, int]:
        return {"client": self.listen_port, "controller": self.config.kafka_controller_port}

    def prepare(self, java: Path, lib: Path) -> None:
        super().prepare(java, lib)
        props = self.home / "server.properties"
        text = props.read_text()
        props.write_text(
            text.replace(
                f"listeners=PLAINTEXT://127.0.0.1:{self.config.kafka_port},",
                f"listeners=PLAINTEXT://127.0.0.1:{self.listen_port},",
            )
        )


@pytest.fixture(scope="module")
def private_kafka(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, CuttableProxy]]:
    """``(bootstrap, proxy)`` of a private broker whose every connection goes through ``proxy``;
    stopped at the end of the module. (``stack``: the jars and the JDK are installed.)"""
    advertised, listen, controller = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "STATE_DIR": str(tmp_path_factory.mktemp("private-kafka") / "state"),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{advertised}",
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_HEAP": "256m",
    }
    config = InfraConfig.from_env(env)
    broker = _BrokerBehindProxy(config)
    broker.listen_port = listen
    proxy = CuttableProxy(advertised, listen)
    proxy.restore()
    try:
        broker.start()
        broker.wait_ready(180)
        yield broker.bootstrap, proxy
    finally:
        proxy.cut()
        broker.stop()
        Supervisor(config).shutdown()


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _wait_for(
    run: CollectorRun, condition: Callable[[], bool], timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert run.process.poll() is None, f"the collector exited:\n{run.output()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s:\n{run.output()}"
        time.sleep(0.25)


def _trade_key(symbol: str, ts_ms: int, price: float, volume: float) -> tuple[Any, ...]:
    return (symbol, ts_ms, float(price), float(volume))


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_kafka_gone_mid_run_is_buffered_to_a_bound_then_a_gap_and_nothing_is_lost(
    private_kafka: tuple[str, CuttableProxy],
    test_keyspace: CassandraSettings,
    unique_topic: Callable[[str], str],
    feed: Callable[..., FeedServer],
    run_collector: Callable[..., CollectorRun],
    tmp_path: Path,
    client: str,
) -> None:
    bootstrap, proxy = private_kafka
    # 35 s of trades: the cut comes after about 3 s and is restored about 10 s later, so the
    # feed is still sending well after Kafka is back
    bound, n = 1200, 10_500
    topic = unique_topic("coll-kafka-gone")
    sent_log = tmp_path / "sent.jsonl"
    server = feed(SimulatedMarket(SYMBOLS, rate=300, seed=5), sent_log=sent_log, max_trades=n)
    metrics_port = _free_port()
    run = run_collector(
        server.port,
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRADES_TOPIC": topic,
            "SYMBOLS": ",".join(SYMBOLS),
            "CASSANDRA_KEYSPACE": test_keyspace.keyspace,
            "COLLECTOR_KAFKA_CLIENT": client,
            "COLLECTOR_KAFKA_BUFFER_RECORDS": str(bound),
            "COLLECTOR_METRICS_PORT": str(metrics_port),
            "COLLECTOR_HEARTBEAT_FILE": "off",
        },
    )
    metrics: dict[str, float] = {}

    def sample(name: str, at_least: float) -> bool:
        metrics.update(_scrape(metrics_port))
        return metrics.get(name, -1) >= at_least

    def acknowledging() -> bool:
        metrics.update(_scrape(metrics_port))
        return (
            metrics["collector_trades_total"] >= 600
            and metrics["collector_kafka_buffered_records"] < 100
        )

    _wait_for(run, lambda: "progress:" in run.output(), 60, "progress line")
    _wait_for(run, acknowledging, 60, "trades acknowledged before the outage")
    cut_ms = time.time_ns() // 1_000_000
    try:
        proxy.cut()
        # before: kafka-python buffered without bound (and exited 1 after 120 s), confluent's
        # queue filled at 100k; neither had these metrics or recorded what it could not keep
        _wait_for(run, lambda: sample("collector_kafka_outage_seconds", 6), 60, "outage metric")
        _wait_for(
            run,
            lambda: sample('collector_kafka_dropped_records_total{kind="trade"}', 200),
            60,
            "dropped trades",
        )
        during = dict(metrics)
    finally:
        proxy.restore()
        restored_ms = time.time_ns() // 1_000_000
    assert bound - 100 <= during["collector_kafka_buffered_records"] <= bound
    assert run.process.poll() is None
    # Kafka is back: the buffered records are delivered, capture resumes

    def delivered() -> bool:
        metrics.update(_scrape(metrics_port))
        return (
            metrics["collector_kafka_buffered_records"] < 100
            and metrics["collector_trades_total"] > during["collector_trades_total"] + 200
        )

    _wait_for(run, delivered, 120, "delivery after the outage")
    delivered_ms = time.time_ns() // 1_000_000

    def everything_read_and_acknowledged() -> bool:
        metrics.update(_scrape(metrics_port))
        return (
            metrics["collector_trades_total"] == n
            and metrics["collector_kafka_buffered_records"] == 0
        )

    _wait_for(run, everything_read_and_acknowledged, 120, "the feed's last trade acknowledged")
    run.terminate()
    assert run.wait(60) == 0, run.output()
    assert "stopped cleanly" in run.output()

    reader: Any = SimpleNamespace(kafka=SimpleNamespace(bootstrap_servers=bootstrap))
    decoded = [avro_codec.decode(r.value) for r in read_topic(reader, topic)]
    ids = Counter(d["trade_id"] for d in decoded)
    assert max(ids.values()) == 1, "a trade was delivered twice"
    stored = Counter(
        _trade_key(d["symbol"], _ms(d["trade_ts"]), d["price"], d["volume"]) for d in decoded
    )
    sent = [_trade_key(t["s"], t["t"], t["p"], t["v"]) for t in sent_trades(sent_log)]
    assert len(sent) == n
    assert not stored - Counter(sent)
    pid = run.process.pid
    (gap,) = [g for g in gaps_in(test_keyspace) if g.collector_id.endswith(f":{pid}")]
    assert gap.reason == "kafka_buffer_full"
    match = re.match(r"(\d+) trades \(", gap.detail)
    assert match, gap.detail
    not_captured = int(match.group(1))
    assert not_captured == metrics['collector_kafka_dropped_records_total{kind="trade"}']
    # every trade the feed sent is in Kafka or among those the gap row counts...
    assert len(sent) == sum(stored.values()) + not_captured
    # ...and those are whole frames, one unbroken run of them in the order the feed sent
    left = Counter(stored)
    dropped_frames = []
    for i, line in enumerate(sent_log.read_text(encoding="utf-8").splitlines()):
        keys = [_trade_key(t["s"], t["t"], t["p"], t["v"]) for t in json.loads(line)["data"]]
        if all(left[k] > 0 for k in keys):
            left.subtract(keys)
        else:
            assert not any(left[k] > 0 for k in keys), f"frame {i} is only partly in Kafka"
            dropped_frames.append(i)
    assert dropped_frames == list(range(dropped_frames[0], dropped_frames[-1] + 1))
    assert f"in {len(dropped_frames)} frames read while the Kafka buffer was full" in gap.detail
    # the gap row's times: from after the cut to before capture resumed
    assert cut_ms < _ms(gap.gap_start) < _ms(gap.gap_end) < delivered_ms
    assert restored_ms - cut_ms >= 6000
    assert list(gap.symbols) == sorted(SYMBOLS)
