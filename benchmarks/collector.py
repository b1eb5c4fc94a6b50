"""Collector throughput: trades/s and CPU microseconds per trade, feed -> collector -> Kafka ack.

For each offered rate, the offline feed runs as its own process (``python -m collector.feed
--simulate``) and the collector runs in this process against the real Kafka (``make up`` first):
the clock starts at the first frame and stops when Kafka has acknowledged every record (flush).
CPU time is this process's (all threads: reader and the client's sender threads). Each rate runs
once per Kafka client (``COLLECTOR_KAFKA_CLIENT``: kafka-python and confluent), so the table puts
them side by side. A second table splits the per-trade cost into parse+validate+id, Avro encoding
and the client's send-to-ack alone.

Usage::

    python benchmarks/collector.py                       # rates 5k, 20k, 50k, 100k trades/s
    python benchmarks/collector.py --rates 50000 --seconds 20
    python benchmarks/collector.py --clients confluent   # one client only

Prints tables and writes ``benchmarks/results/collector.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import free_port, simulated_feed  # noqa: E402
from collector.config import DEFAULT_SYMBOLS, CollectorConfig  # noqa: E402
from collector.connection import FinnhubConnection  # noqa: E402
from collector.encoding import TradeEncoder  # noqa: E402
from collector.finnhub import FrameParser  # noqa: E402
from collector.gaps import LoggingGapStore  # noqa: E402
from collector.metrics import CollectorMetrics  # noqa: E402
from collector.pipeline import FrameHandler  # noqa: E402
from collector.producer import KafkaSink  # noqa: E402
from collector.producer_confluent import ConfluentKafkaSink  # noqa: E402
from schemas.settings import KafkaSettings  # noqa: E402

SINKS = {"kafka-python": KafkaSink, "confluent": ConfluentKafkaSink}
SYMBOLS = DEFAULT_SYMBOLS


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(names)
    except Exception as exc:  # cleanup only: a leftover bench topic is harmless
        print(f"  (could not delete bench topics: {exc})")
    finally:
        admin.close()


def end_to_end(rate: int, seconds: float, kafka: KafkaSettings, client: str) -> dict[str, Any]:
    n = int(rate * seconds)
    port = free_port()
    topic = f"bench-collector-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka.bootstrap_servers, topic, 2)
    feed = subprocess.Popen(simulated_feed(rate, port, SYMBOLS, "--max-trades", str(n)), cwd=REPO)
    try:
        time.sleep(1.5)
        config = CollectorConfig(
            ws_url=f"ws://127.0.0.1:{port}",
            symbols=SYMBOLS,
            source="feed",
            kafka=kafka,
            trades_topic=topic,
            dlq_topic=f"{topic}.dlq",
            record_gaps=False,
            metrics_port=0,
        )
        metrics = CollectorMetrics()
        sink = SINKS[client](
            bootstrap_servers=kafka.bootstrap_servers,
            trades_topic=topic,
            dlq_topic=f"{topic}.dlq",
            linger_ms=config.linger_ms,
            batch_bytes=config.batch_bytes,
            compression=config.compression,
            metrics=metrics,
        )
        sink.setup()
        handler = FrameHandler(
            FrameParser(SYMBOLS, source="feed"),
            sink,
            metrics,
            max_trades=n,
            progress_interval_s=0,
        )
        first: list[float] = []
        last_report = [time.monotonic()]

        def progress() -> None:
            if time.monotonic() - last_report[0] > 2:
                last_report[0] = time.monotonic()
                print(f"  ... {handler.trades:,}/{n:,} trades", flush=True)

        def on_frame(raw: bytes, ms: int) -> None:
            if not first:
                first.extend((time.perf_counter(), time.process_time()))
            handler(raw, ms)
            progress()

        conn = FinnhubConnection(
            config, on_frame, gaps=LoggingGapStore(), metrics=metrics, on_idle=progress
        )
        deadline = time.monotonic() + seconds * 20 + 30
        conn.run(should_stop=lambda: handler.done or time.monotonic() > deadline)
        sink.close(60)
        wall = time.perf_counter() - first[0]
        cpu = time.process_time() - first[1]
        return {
            "client": client,
            "offered_rate": rate,
            "trades": handler.trades,
            "wall_s": round(wall, 3),
            "trades_per_s": round(handler.trades / wall),
            "cpu_us_per_trade": round(cpu / handler.trades * 1e6, 2),
            "cpu_utilisation": round(cpu / wall, 3),
            "frames": handler.frames,
            "dead_letters": handler.dead_letters,
            "delivery_failures": sink.failed,
        }
    finally:
        feed.terminate()
        feed.wait(10)
        _delete_topics(kafka.bootstrap_servers, [topic, f"{topic}.dlq"])


def _send_alone(kafka: KafkaSettings, client: str, trades: list[Any], values: list[bytes]) -> Any:
    """CPU us per trade and trades/s of the bare client: send every record, then flush."""
    topic = f"bench-send-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka.bootstrap_servers, topic, 2)
    try:
        if client == "kafka-python":
            from kafka import KafkaProducer

            producer = KafkaProducer(
                bootstrap_servers=kafka.bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                linger_ms=20,
                batch_size=262_144,
                compression_type="gzip",
            )
            try:
                producer.partitions_for(topic)
                t = time.process_time()
                w = time.perf_counter()
                for tr, v in zip(trades, values, strict=True):
                    producer.send(topic, value=v, key=tr.symbol.encode(), partition=0).add_errback(
                        print
                    )
                producer.flush()
            finally:
                producer.close()
        else:
            from confluent_kafka import Producer

            def on_delivery(err: Any, _msg: Any) -> None:
                if err is not None:
                    print(err)

            producer = Producer(
                {
                    "bootstrap.servers": kafka.bootstrap_servers,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 20,
                    "batch.size": 262_144,
                    "compression.type": "gzip",
                }
            )
            producer.list_topics(topic, timeout=10)
            t = time.process_time()
            w = time.perf_counter()
            for i, (tr, v) in enumerate(zip(trades, values, strict=True)):
                while True:
                    try:
                        producer.produce(topic, v, tr.symbol.encode(), 0, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                if i % 1000 == 0:
                    producer.poll(0)
            producer.flush()
            producer.close()
        return (time.process_time() - t) / len(values) * 1e6, len(values) / (
            time.perf_counter() - w
        )
    finally:
        _delete_topics(kafka.bootstrap_servers, [topic])


def stages(kafka: KafkaSettings, clients: list[str], n: int = 100_000) -> dict[str, Any]:
    """Per-trade CPU cost of each stage, on simulated frames."""
    from collector.feed.sources import SimulatedMarket

    market = SimulatedMarket(SYMBOLS, rate=50_000, seed=1)
    frames: list[bytes] = []
    count = 0
    for tick in market.ticks(int(time.time() * 1000)):
        for f in tick.frames:
            frames.append(json.dumps(f, separators=(",", ":")).encode())
        count += tick.trades
        if count >= n:
            break
    now = int(time.time() * 1000)
    parser = FrameParser(SYMBOLS, source="feed", max_past_skew_ms=10**9)
    t = time.process_time()
    results = [parser.parse(f, received_ms=now) for f in frames]
    parse_us = (time.process_time() - t) / count * 1e6
    trades = [tr for r in results for tr in r.trades]
    encoder = TradeEncoder()
    t = time.process_time()
    values = [v for r in results for v in encoder.encode_many(r.trades)]
    encode_us = (time.process_time() - t) / count * 1e6
    split: dict[str, Any] = {
        "trades": len(values),
        "parse_validate_id_us": round(parse_us, 2),
        "avro_encode_us": round(encode_us, 2),
        "kafka_send_to_ack_us": {},
        "kafka_only_trades_per_s": {},
    }
    for client in clients:
        send_us, send_rate = _send_alone(kafka, client, trades, values)
        split["kafka_send_to_ack_us"][client] = round(send_us, 2)
        split["kafka_only_trades_per_s"][client] = round(send_rate)
    return split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="5000,20000,50000,100000")
    ap.add_argument("--seconds", type=float, default=8.0, help="trades offered = rate * seconds")
    ap.add_argument(
        "--clients",
        default=",".join(SINKS),
        help=f"Kafka clients to compare, comma-separated (default: {','.join(SINKS)})",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "collector.json")
    args = ap.parse_args()
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = sorted(set(clients) - set(SINKS))
    if unknown or not clients:
        ap.error(f"--clients {args.clients!r}: allowed values are {', '.join(SINKS)}")
    kafka = KafkaSettings.from_env()
    rows = []
    for rate in (int(r) for r in args.rates.split(",")):
        for client in clients:
            print(f"{client}: offered {rate:,} trades/s for {args.seconds:g} s ...", flush=True)
            rows.append(end_to_end(rate, args.seconds, kafka, client))
    print("per-stage costs ...", flush=True)
    split = stages(kafka, clients)

    print()
    print(
        f"{'client':<13} {'offered/s':>10} {'trades':>9} {'achieved/s':>11} {'cpu us/trade':>13} "
        f"{'cpu util':>9} {'dlq':>5} {'failed':>7}"
    )
    for r in rows:
        print(
            f"{r['client']:<13} {r['offered_rate']:>10,} {r['trades']:>9,} "
            f"{r['trades_per_s']:>11,} {r['cpu_us_per_trade']:>13.2f} "
            f"{r['cpu_utilisation']:>9.2f} {r['dead_letters']:>5} {r['delivery_failures']:>7}"
        )
    print()
    print(f"{'stage':<36} {'cpu us/trade':>13}")
    for key in ("parse_validate_id_us", "avro_encode_us"):
        print(f"{key:<36} {split[key]:>13.2f}")
    for client in clients:
        send_us = split["kafka_send_to_ack_us"][client]
        print(f"{'send_to_ack_us (' + client + ')':<36} {send_us:>13.2f}")
    for client in clients:
        rate = split["kafka_only_trades_per_s"][client]
        print(f"{client + ' alone':<36} {rate:>10,} trades/s")
    doc = {
        "benchmark": "collector",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg": os.getloadavg(),
        },
        "end_to_end": rows,
        "stages": split,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
