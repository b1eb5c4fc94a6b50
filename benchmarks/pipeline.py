"""End-to-end pipeline benchmark: offline feed -> collector -> Kafka -> Spark -> Cassandra.

Needs the stack (``make up``). Three measurements in one run:

1. Cassandra's own write ceiling here: a Spark batch write of synthetic trades through the same
   connector into a scratch keyspace (rows/s), for the ratio.
2. For each offered rate, ``python -m collector.feed --simulate --rate R`` feeds
   ``python -m collector`` (``COLLECTOR_KAFKA_CLIENT``, default confluent here) into a fresh
   topic while one ``python -m stream_processor`` (both queries, local[2]) runs, after an
   unrecorded warm-up (``--warmup``). Throughput is what the raw query wrote (its Prometheus
   counter) per second of the step; the step is *sustained* when the job has caught up within
   ``--drain-limit`` seconds of the feed stopping (bounded lag). CPU seconds of each component's
   process tree are reported as cores used while the feed ran.
3. Latency: a poller reads every new row of one symbol from ``trades`` every 100 ms and
   takes, for each trade, ``seen - ingest_ts`` (collector arrival to readable in Cassandra).
   The poll period bounds the resolution (+0..100 ms).

Usage::

    python benchmarks/pipeline.py                          # rates 1k, 5k, 10k, 20k, 40k trades/s
    python benchmarks/pipeline.py --rates 1000,20000 --seconds 30

Prints tables and writes ``benchmarks/results/pipeline.json``; the stream job logs every
micro-batch (with Spark's per-phase timings) to ``benchmarks/results/pipeline-job.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from collector.config import DEFAULT_SYMBOLS  # noqa: E402
from schemas.runtime.cassandra import connect  # noqa: E402
from schemas.settings import CassandraSettings, KafkaSettings  # noqa: E402

PY = sys.executable
SYMBOLS = DEFAULT_SYMBOLS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _infra(*args: str) -> None:
    subprocess.run([PY, "-m", "infra", *args], cwd=REPO, check=True, capture_output=True)


def _log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def cassandra_ceiling(cassandra: CassandraSettings, rows: int) -> dict[str, float]:
    """Rows/s of a Spark batch upsert of ``rows`` synthetic trades into ``trades``."""
    from pyspark.sql import functions as F

    from schemas.runtime.spark import build_session, write_cassandra

    spark = build_session("bench-cassandra-ceiling", cassandra)
    try:
        base = int(time.time() * 1000)
        frame = (
            spark.range(rows, numPartitions=2)
            .select(
                F.element_at(
                    F.array(*[F.lit(s) for s in SYMBOLS]),
                    (F.col("id") % len(SYMBOLS) + 1).cast("int"),
                ).alias("symbol"),
                F.timestamp_millis(F.lit(base) + F.floor(F.col("id") / 50)).alias("trade_ts"),
                F.sha1(F.col("id").cast("string")).alias("trade_id"),
                (F.lit(100.0) + F.col("id") % 97).alias("price"),
                F.lit(1.5).alias("volume"),
                F.array().cast("array<string>").alias("conditions"),
                F.lit("bench").alias("source"),
                F.timestamp_millis(F.lit(base)).alias("ingest_ts"),
            )
            .withColumn("day", F.to_date("trade_ts"))
            .cache()
        )
        frame.count()
        best = 0.0
        for _ in range(2):  # the first pass also warms the connector
            start = time.perf_counter()
            write_cassandra(frame, cassandra.keyspace, "trades")
            best = max(best, rows / (time.perf_counter() - start))
        return {"rows": float(rows), "rows_per_s": best}
    finally:
        spark.stop()


def _metric(port: int, name: str, query: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf'^{name}{{query="{query}"}} ([0-9.e+-]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return int(sum(ends.values()))
    finally:
        consumer.close()


class LatencyPoller(threading.Thread):
    """Reads every new row of one symbol (a range query on the clustering key each poll) and
    records ``seen - ingest_ts`` once per trade. One symbol keeps the poller's own load small;
    the feed spreads trades evenly over symbols, so it is a fair sample."""

    def __init__(self, cassandra: CassandraSettings, symbol: str, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.cassandra, self.symbol, self.period_s = cassandra, symbol, period_s
        self.samples: list[float] = []
        self.seen: set[str] = set()
        self.running = True
        self.active = False

    def run(self) -> None:
        cluster, session = connect(self.cassandra, keyspace=self.cassandra.keyspace)
        stmt = session.prepare(
            "SELECT trade_id, trade_ts, ingest_ts FROM trades "
            "WHERE symbol=? AND day=? AND trade_ts > ? LIMIT 20000"
        )
        # rows of one micro-batch land in any order, so look back a little and de-duplicate
        since = datetime.now(UTC).timestamp() - 5
        try:
            while self.running:
                tick = time.time()
                day = datetime.now(UTC).date()
                newest = since
                lookback = datetime.fromtimestamp(since - 5, UTC)
                for row in session.execute(stmt, (self.symbol, day, lookback)):
                    if row.trade_id in self.seen:
                        continue
                    self.seen.add(row.trade_id)
                    newest = max(newest, row.trade_ts.replace(tzinfo=UTC).timestamp())
                    if self.active:
                        ingest = row.ingest_ts.replace(tzinfo=UTC).timestamp()
                        self.samples.append(tick - ingest)
                since = newest
                time.sleep(max(0.0, self.period_s - (time.time() - tick)))
        finally:
            cluster.shutdown()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every live descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _service_pid(name: str) -> int | None:
    pid_file = REPO / ".state" / name / "pid"
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


class CpuMeter:
    """CPU seconds used by named process trees between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.before: dict[str, float] = {}

    def start(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.before = {name: _process_tree_cpu_s(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {
            name: round(_process_tree_cpu_s(pid) - self.before[name], 2)
            for name, pid in self.pids.items()
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_step(
    rate: int,
    seconds: float,
    env: dict[str, str],
    metrics_port: int,
    topic: str,
    kafka: KafkaSettings,
    poller: LatencyPoller,
    drain_limit: float,
    job_pid: int,
) -> dict[str, Any]:
    feed_port = _free_port()
    feed = subprocess.Popen(
        [
            PY,
            "-m",
            "collector.feed",
            "--simulate",
            "--rate",
            str(rate),
            "--port",
            str(feed_port),
            "--symbols",
            ",".join(SYMBOLS),
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    collector_env = {
        **env,
        "FINNHUB_WS_URL": f"ws://127.0.0.1:{feed_port}",
        "SYMBOLS": ",".join(SYMBOLS),
        "COLLECTOR_METRICS_PORT": "0",
        "COLLECTOR_GAPS": "off",
        "COLLECTOR_KAFKA_CLIENT": env.get("COLLECTOR_KAFKA_CLIENT") or "confluent",
    }
    produced0 = _end_offsets(kafka.bootstrap_servers, topic)
    written0 = _metric(metrics_port, "stream_input_rows_total", "trades_raw")
    poller.samples.clear()
    poller.active = True
    start = time.monotonic()
    collector_proc = subprocess.Popen(
        [PY, "-m", "collector", "--duration", str(seconds), "--log-level", "WARNING"],
        cwd=REPO,
        env=collector_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    cpu = CpuMeter()
    reaped_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.start(
        {
            "feed": feed.pid,
            "kafka": _service_pid("kafka"),
            "spark": job_pid,
            "cassandra": _service_pid("cassandra"),
        }
    )
    _, collector_err = collector_proc.communicate()
    fed_s = time.monotonic() - start
    cpu_s = cpu.stop()
    # the collector has exited and been reaped: its CPU shows in our children's usage
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s["collector"] = round(
        reaped.ru_utime + reaped.ru_stime - reaped_before.ru_utime - reaped_before.ru_stime, 2
    )
    feed.terminate()
    feed.wait(30)
    if collector_proc.returncode != 0:
        _log(f"collector exited {collector_proc.returncode}: {collector_err[-500:]}")
    produced = _end_offsets(kafka.bootstrap_servers, topic) - produced0
    stop_fed = time.monotonic()
    written = 0.0
    while time.monotonic() - stop_fed < max(drain_limit * 4, 60):
        written = _metric(metrics_port, "stream_input_rows_total", "trades_raw") - written0
        if written >= produced:
            break
        time.sleep(0.25)
    drain_s = time.monotonic() - stop_fed
    time.sleep(1.0)
    poller.active = False
    samples = list(poller.samples)
    return {
        "offered_rate": rate,
        "produced": produced,
        "produced_per_s": produced / fed_s,
        "written": int(written),
        "written_per_s": written / (fed_s + drain_s),
        "drain_s": round(drain_s, 2),
        "sustained": written >= produced and drain_s <= drain_limit,
        "latency_samples": len(samples),
        "latency_p50_s": _pct(samples, 0.50),
        "latency_p99_s": _pct(samples, 0.99),
        # cores used while the feed ran, per component (CPU seconds / feed seconds)
        "cores": {name: round(used / fed_s, 2) for name, used in cpu_s.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--ceiling-rows", type=int, default=300_000)
    parser.add_argument(
        "--warmup",
        type=float,
        default=90.0,
        help="seconds of unrecorded traffic at the lowest rate first: the JVM's JIT compiler "
        "takes about two minutes to settle, using up to 0.6 core meanwhile",
    )
    parser.add_argument(
        "--drain-limit",
        type=float,
        default=5.0,
        help="max seconds to catch up after the feed stops, for 'sustained'",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]

    keyspace = f"bench_{uuid.uuid4().hex[:8]}"
    topic = f"bench-pipeline-{uuid.uuid4().hex[:8]}"
    _infra("migrate", "--keyspace", keyspace)
    env = {**os.environ, "CASSANDRA_KEYSPACE": keyspace, "TRADES_TOPIC": topic}
    cassandra = CassandraSettings.from_env(env)
    kafka = KafkaSettings.from_env(env)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "steps": [],
    }
    job = None
    try:
        _log(f"Cassandra write ceiling: Spark batch upsert of {args.ceiling_rows:,} rows")
        results["cassandra_ceiling"] = cassandra_ceiling(cassandra, args.ceiling_rows)
        _log(f"  {results['cassandra_ceiling']['rows_per_s']:,.0f} rows/s")
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        admin.close()
        metrics_port = _free_port()
        job_env = {
            **env,
            "METRICS_PORT": str(metrics_port),
            "LOG_LEVEL": "INFO",
            "CHECKPOINT_DIR": f"/tmp/{keyspace}-checkpoints",
            "STARTING_OFFSETS": "earliest",
        }
        job_log = REPO / "benchmarks" / "results" / "pipeline-job.log"
        job_log.parent.mkdir(parents=True, exist_ok=True)
        _log(f"stream processor log: {job_log}")
        with open(job_log, "wb") as log_file:
            job = subprocess.Popen(
                [PY, "-m", "stream_processor"],
                cwd=REPO,
                env=job_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if _metric(metrics_port, "stream_batches_total", "trades_raw") >= 1:
                    break
            except OSError:
                pass
            time.sleep(1)
        _log("stream processor running")
        poller = LatencyPoller(cassandra, SYMBOLS[0])
        poller.start()

        def step_at(rate: int, seconds: float) -> dict[str, Any]:
            return run_step(
                rate, seconds, env, metrics_port, topic, kafka, poller, args.drain_limit, job.pid
            )

        if args.warmup > 0:
            _log(f"warm-up: {min(rates):,} trades/s for {args.warmup:.0f} s (not recorded)")
            step_at(min(rates), args.warmup)
        for rate in rates:
            _log(f"step: {rate:,} trades/s offered for {args.seconds:.0f} s")
            step = step_at(rate, args.seconds)
            results["steps"].append(step)
            _log(
                f"  produced {step['produced_per_s']:,.0f}/s, written {step['written_per_s']:,.0f}"
                f"/s, drain {step['drain_s']} s, p50 {step['latency_p50_s']}, "
                f"p99 {step['latency_p99_s']}"
            )
        poller.running = False
    finally:
        if job is not None:
            job.terminate()
            try:
                job.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, 9)
        _infra("drop-keyspace", keyspace)

    ceiling = results["cassandra_ceiling"]["rows_per_s"]
    sustained = [s["written_per_s"] for s in results["steps"] if s["sustained"]]
    results["sustained_trades_per_s"] = max(sustained) if sustained else 0.0
    results["ratio_to_cassandra_ceiling"] = results["sustained_trades_per_s"] / ceiling
    print()
    print(
        f"{'offered/s':>10} {'produced/s':>11} {'written/s':>10} {'drain s':>8} "
        f"{'sustained':>9} {'p50 s':>7} {'p99 s':>7} {'samples':>8}"
    )
    for s in results["steps"]:
        p50 = f"{s['latency_p50_s']:.3f}" if s["latency_p50_s"] is not None else "-"
        p99 = f"{s['latency_p99_s']:.3f}" if s["latency_p99_s"] is not None else "-"
        print(
            f"{s['offered_rate']:>10,} {s['produced_per_s']:>11,.0f} {s['written_per_s']:>10,.0f}"
            f" {s['drain_s']:>8} {str(s['sustained']):>9} {p50:>7} {p99:>7}"
            f" {s['latency_samples']:>8}"
        )
    names = ("feed", "collector", "kafka", "spark", "cassandra")
    print("\ncores used while the feed ran (machine has " f"{os.cpu_count()}):")
    print(f"{'offered/s':>10} " + " ".join(f"{n:>9}" for n in names) + f" {'total':>7}")
    for s in results["steps"]:
        cores = s["cores"]
        print(
            f"{s['offered_rate']:>10,} "
            + " ".join(f"{cores.get(n, 0.0):>9.2f}" for n in names)
            + f" {sum(cores.values()):>7.2f}"
        )
    print(f"\nCassandra write ceiling (Spark connector, batch): {ceiling:,.0f} rows/s")
    print(
        f"sustained end to end: {results['sustained_trades_per_s']:,.0f} trades/s "
        f"({results['ratio_to_cassandra_ceiling']:.0%} of the ceiling)"
    )
    out = REPO / "benchmarks" / "results" / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
