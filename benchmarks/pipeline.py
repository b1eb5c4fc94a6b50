"""End-to-end pipeline benchmark: offline feed -> collector -> Kafka -> Spark -> Cassandra.

Needs the stack (``make up``). What one run measures:

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
   The poll period bounds the resolution (+0..100 ms; +0..1 s for the stragglers of a large
   micro-batch). The poller's own CPU (this process) is reported as ``bench``, apart from the
   stack's.
4. Idle: after the warm-up, the cores the stack uses (the job, Kafka, Cassandra, Trino,
   Superset, Streamlit) with no trades flowing (``--idle-seconds``).
5. CPU per trade: the stack's cores divided by the written rate (µs of CPU per trade), with each
   component's share.

Usage::

    python benchmarks/pipeline.py                          # rates 1k, 5k, 10k, 20k, 40k trades/s
    python benchmarks/pipeline.py --rates 1000,20000 --seconds 30
    # A/B in one run: the whole sequence once per variant, the job's environment overridden
    python benchmarks/pipeline.py --rates 1000,10000 --variant base --variant t1:RAW_TRIGGER=1s
    # On the cluster topology (make cluster-up): the job submitted to the Spark master with one
    # executor per worker used (--spark-workers), the topic replicated three times
    eval "$(STATE_DIR=.state-cluster python -m infra env --topology cluster)"
    python benchmarks/pipeline.py --topology cluster --spark-workers 2

Prints tables and writes ``benchmarks/results/pipeline.json``; each variant's stream job logs
every micro-batch (with Spark's per-phase timings) to ``benchmarks/results/pipeline-job-NAME.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
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

from benchmarks._common import (  # noqa: E402
    free_port,
    infra,
    log,
    process_tree_cpu_s,
    service_pid,
    simulated_feed,
)
from collector.config import DEFAULT_SYMBOLS  # noqa: E402
from infra.config import InfraConfig  # noqa: E402
from infra.topology import ClusterPlan, topology  # noqa: E402
from schemas.runtime.cassandra import connect  # noqa: E402
from schemas.settings import CassandraSettings, KafkaSettings  # noqa: E402

PY = sys.executable
SYMBOLS = DEFAULT_SYMBOLS


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
    the feed spreads trades evenly over symbols, so it is a fair sample.

    Rows of one micro-batch land in any order, so a poll cannot just ask for trades after the
    newest one seen. Most polls look back ``HEAD_LOOKBACK_S`` behind it (the rows landing right
    now); every ``SWEEP_EVERY``-th poll looks back ``SWEEP_LOOKBACK_S`` and picks up the
    stragglers of a large batch (their resolution is then the sweep period, not the poll
    period). Reading the full 5 s on every poll, as an earlier version did, made Cassandra read
    about 50 rows for every row written at high rates: the measurement loaded what it measured.
    """

    HEAD_LOOKBACK_S = 0.5
    SWEEP_LOOKBACK_S = 5.0
    SWEEP_EVERY = 10

    def __init__(self, cassandra: CassandraSettings, symbol: str, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.cassandra, self.symbol, self.period_s = cassandra, symbol, period_s
        self.samples: list[float] = []
        self.seen: set[str] = set()
        self.rows_read = 0
        self.running = True
        self.active = False
        self.paused = False

    def run(self) -> None:
        cluster, session = connect(self.cassandra, keyspace=self.cassandra.keyspace)
        stmt = session.prepare(
            "SELECT trade_id, trade_ts, ingest_ts FROM trades "
            "WHERE symbol=? AND day=? AND trade_ts > ? LIMIT 50000"
        )
        since = datetime.now(UTC).timestamp() - self.SWEEP_LOOKBACK_S
        polls = 0
        try:
            while self.running:
                if self.paused:
                    time.sleep(self.period_s)
                    continue
                tick = time.time()
                day = datetime.now(UTC).date()
                newest = since
                polls += 1
                back = self.SWEEP_LOOKBACK_S if polls % self.SWEEP_EVERY == 0 else 0.0
                lookback = datetime.fromtimestamp(since - max(back, self.HEAD_LOOKBACK_S), UTC)
                for row in session.execute(stmt, (self.symbol, day, lookback)):
                    self.rows_read += 1
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


class CpuMeter:
    """CPU seconds used by named groups of process trees between ``start`` and ``stop`` (a
    component of the cluster topology is several processes: three Kafka nodes, or the driver
    and the Spark workers with their executors)."""

    def __init__(self) -> None:
        self.pids: dict[str, list[int]] = {}
        self.before: dict[str, float] = {}

    def start(self, pids: dict[str, list[int]]) -> None:
        self.pids = {name: group for name, group in pids.items() if group}
        self.before = {name: self._cpu(group) for name, group in self.pids.items()}

    @staticmethod
    def _cpu(group: list[int]) -> float:
        return sum(process_tree_cpu_s(pid) for pid in group)

    def stop(self) -> dict[str, float]:
        return {
            name: round(self._cpu(group) - self.before[name], 2)
            for name, group in self.pids.items()
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# The stack's long-running services besides the job under test: their cost counts too.
STACK_SERVICES = ("kafka", "cassandra", "trino", "superset", "streamlit")


def _stack_pids(job_pid: int) -> dict[str, list[int]]:
    """Each component's processes; on the cluster topology, every node of it."""
    if topology() == "cluster":
        plan = ClusterPlan.from_env()
        groups = {
            "kafka": [n.name for n in plan.kafka],
            "cassandra": [n.name for n in plan.cassandra],
            "spark": ["spark-master", *(w.name for w in plan.spark_workers)],
            "trino": ["trino"],
        }
    else:
        groups = {name: [name] for name in STACK_SERVICES}
    pids = {
        name: [pid for service in services if (pid := service_pid(service))]
        for name, services in groups.items()
    }
    pids["spark"] = [job_pid, *pids.get("spark", [])]
    return pids


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_idle(seconds: float, job_pid: int) -> dict[str, Any]:
    """Cores the stack uses with the job running and no trades flowing."""
    cpu = CpuMeter()
    cpu.start(_stack_pids(job_pid))
    time.sleep(seconds)
    return {
        "offered_rate": 0,
        "produced": 0,
        "produced_per_s": 0.0,
        "written": 0,
        "written_per_s": 0.0,
        "drain_s": 0.0,
        "sustained": False,
        "latency_samples": 0,
        "latency_p50_s": None,
        "latency_p99_s": None,
        "cores": {name: round(used / seconds, 3) for name, used in cpu.stop().items()},
        "bench_cores": 0.0,
    }


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
    feed_port = free_port()
    feed = subprocess.Popen(
        simulated_feed(rate, feed_port, SYMBOLS),
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
        "COLLECTOR_GAPS": "false",
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
    cpu.start({"feed": [feed.pid], **_stack_pids(job_pid)})
    bench_before = _self_cpu_s()
    _, collector_err = collector_proc.communicate()
    fed_s = time.monotonic() - start
    cpu_s = cpu.stop()
    bench_s = _self_cpu_s() - bench_before
    # the collector has exited and been reaped: its CPU shows in our children's usage
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s["collector"] = round(
        reaped.ru_utime + reaped.ru_stime - reaped_before.ru_utime - reaped_before.ru_stime, 2
    )
    feed.terminate()
    feed.wait(30)
    if collector_proc.returncode != 0:
        log(f"collector exited {collector_proc.returncode}: {collector_err[-500:]}")
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
        # this process, mostly the latency poller: the measurement's own cost, not the stack's
        "bench_cores": round(bench_s / fed_s, 2),
    }


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME:VAR=VALUE,VAR=VALUE`` -> (name, environment overrides of the job).

    >>> parse_variant("trigger-1s:RAW_TRIGGER=1s,BARS_TRIGGER=5s")
    ('trigger-1s', {'RAW_TRIGGER': '1s', 'BARS_TRIGGER': '5s'})
    >>> parse_variant("default")
    ('default', {})
    """
    name, _, assignments = spec.partition(":")
    overrides: dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--variant {spec!r}: {item!r} is not VAR=VALUE")
        overrides[key.strip()] = value.strip()
    return name, overrides


def run_variant(
    name: str, overrides: dict[str, str], rates: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """One stream-processor job (with ``overrides`` in its environment) through the idle
    measurement, the warm-up and every rate, on a fresh topic and keyspace."""
    keyspace = f"bench_{uuid.uuid4().hex[:8]}"
    topic = f"bench-pipeline-{uuid.uuid4().hex[:8]}"
    infra("migrate", "--keyspace", keyspace)
    env = {**os.environ, "CASSANDRA_KEYSPACE": keyspace, "TRADES_TOPIC": topic}
    cassandra = CassandraSettings.from_env(env)
    kafka = KafkaSettings.from_env(env)
    variant: dict[str, Any] = {"name": name, "env": overrides, "steps": []}
    job = None
    poller = None
    try:
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        if args.topology == "cluster":
            plan = ClusterPlan.from_env()
            new_topic = NewTopic(
                topic,
                num_partitions=2,
                replication_factor=plan.replication_factor,
                topic_configs={"min.insync.replicas": str(plan.min_insync_replicas)},
            )
        else:
            new_topic = NewTopic(topic, num_partitions=2, replication_factor=1)
        admin.create_topics([new_topic])
        admin.close()
        metrics_port = free_port()
        job_env = {
            **env,
            "STREAM_METRICS_PORT": str(metrics_port),
            "LOG_LEVEL": "INFO",
            "CHECKPOINT_DIR": f"/tmp/{keyspace}-checkpoints",
            "STARTING_OFFSETS": "earliest",
            **overrides,
        }
        job_log = REPO / "benchmarks" / "results" / f"pipeline-job-{name}.log"
        job_log.parent.mkdir(parents=True, exist_ok=True)
        log(f"variant {name} {overrides or ''}: stream processor log {job_log}")
        command = [PY, "-m", "stream_processor"]
        if args.topology == "cluster":
            # spark-submit to the standalone master, one executor per worker used.
            from infra.spark_submit import submit_argv, submit_env

            config, plan = InfraConfig.from_env(), ClusterPlan.from_env()
            job_env = submit_env(config, plan, job_env)
            command = submit_argv(
                config, plan, "stream_processor", [], env=job_env, total_cores=args.spark_workers
            )
        with open(job_log, "wb") as log_file:
            job = subprocess.Popen(
                command,
                cwd=REPO,
                env=job_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if _metric(metrics_port, "stream_batches_total", "trades_raw") >= 1:
                    break
            except OSError:
                pass
            time.sleep(1)
        log("stream processor running")
        poller = LatencyPoller(cassandra, SYMBOLS[0])
        poller.start()
        job_pid = job.pid

        def step_at(rate: int, seconds: float) -> dict[str, Any]:
            assert poller is not None
            return run_step(
                rate, seconds, env, metrics_port, topic, kafka, poller, args.drain_limit, job_pid
            )

        if args.warmup > 0:
            log(f"warm-up: {min(rates):,} trades/s for {args.warmup:.0f} s (not recorded)")
            step_at(min(rates), args.warmup)
        if args.idle_seconds > 0:
            log(f"idle: the stack with no trades for {args.idle_seconds:.0f} s")
            poller.paused = True
            time.sleep(10)  # the last bars and rollups of the warm-up settle first
            variant["idle"] = run_idle(args.idle_seconds, job_pid)
            poller.paused = False
            log(f"  {sum(variant['idle']['cores'].values()):.3f} cores")
        for rate in rates:
            log(f"step: {rate:,} trades/s offered for {args.seconds:.0f} s")
            step = step_at(rate, args.seconds)
            variant["steps"].append(step)
            log(
                f"  produced {step['produced_per_s']:,.0f}/s, written {step['written_per_s']:,.0f}"
                f"/s, drain {step['drain_s']} s, p50 {step['latency_p50_s']}, "
                f"p99 {step['latency_p99_s']}, bench {step['bench_cores']} cores"
            )
    finally:
        if poller is not None:
            poller.running = False
            variant["poller_rows_read"] = poller.rows_read
        if job is not None:
            job.terminate()
            try:
                job.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, 9)
        infra("drop-keyspace", keyspace)
    sustained = [s["written_per_s"] for s in variant["steps"] if s["sustained"]]
    variant["sustained_trades_per_s"] = max(sustained) if sustained else 0.0
    return variant


COMPONENTS = ("feed", "collector", "kafka", "spark", "cassandra", "trino", "superset", "streamlit")


def print_variant(variant: dict[str, Any], ceiling: float) -> None:
    print(f"\n== {variant['name']} {variant['env'] or ''}")
    print(
        f"{'offered/s':>10} {'produced/s':>11} {'written/s':>10} {'drain s':>8} "
        f"{'sustained':>9} {'p50 s':>7} {'p99 s':>7} {'samples':>8}"
    )
    for s in variant["steps"]:
        p50 = f"{s['latency_p50_s']:.3f}" if s["latency_p50_s"] is not None else "-"
        p99 = f"{s['latency_p99_s']:.3f}" if s["latency_p99_s"] is not None else "-"
        print(
            f"{s['offered_rate']:>10,} {s['produced_per_s']:>11,.0f} {s['written_per_s']:>10,.0f}"
            f" {s['drain_s']:>8} {str(s['sustained']):>9} {p50:>7} {p99:>7}"
            f" {s['latency_samples']:>8}"
        )
    print(f"cores used while the feed ran (machine has {os.cpu_count()}); bench = this process:")
    print(
        f"{'offered/s':>10} "
        + " ".join(f"{n[:9]:>9}" for n in COMPONENTS)
        + f" {'total':>7} {'µs/trade':>9} {'bench':>6}"
    )
    for s in ([variant["idle"]] if "idle" in variant else []) + variant["steps"]:
        cores = s["cores"]
        total = sum(cores.values())
        s["cores_total"] = round(total, 3)
        s["cpu_us_per_trade"] = total / s["written_per_s"] * 1e6 if s["written_per_s"] else None
        s["cpu_share"] = (
            {n: round(cores.get(n, 0.0) / total, 3) for n in COMPONENTS} if total else {}
        )
        per_trade = f"{s['cpu_us_per_trade']:.0f}" if s["cpu_us_per_trade"] else "-"
        label = f"{s['offered_rate']:,}" if s["offered_rate"] else "idle"
        print(
            f"{label:>10} "
            + " ".join(f"{cores.get(n, 0.0):>9.2f}" for n in COMPONENTS)
            + f" {total:>7.2f} {per_trade:>9} {s['bench_cores']:>6.2f}"
        )
    variant["ratio_to_cassandra_ceiling"] = variant["sustained_trades_per_s"] / ceiling
    print(
        f"sustained end to end: {variant['sustained_trades_per_s']:,.0f} trades/s "
        f"({variant['ratio_to_cassandra_ceiling']:.0%} of the ceiling); the latency poller read "
        f"{variant.get('poller_rows_read', 0):,} rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,5000,10000,20000,40000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--ceiling-rows", type=int, default=300_000)
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=30.0,
        help="seconds measured with the job running and no trades, after the warm-up (0: skip)",
    )
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
    parser.add_argument(
        "--variant",
        action="append",
        metavar="NAME:VAR=VALUE,...",
        help="run the whole sequence once per variant, each job with these environment "
        "overrides, one after the other in this run (an A/B: repeat as A, B, A for a check of "
        "drift); default: one variant, 'default', with none",
    )
    parser.add_argument(
        "--topology",
        choices=("single", "cluster"),
        help="the stack under test (default: STACK_TOPOLOGY or what `up` recorded in STATE_DIR)",
    )
    parser.add_argument(
        "--spark-workers",
        type=int,
        default=2,
        help="cluster topology: executors (one core each, one per worker) the job gets",
    )
    args = parser.parse_args()
    args.topology = topology(given=args.topology)
    rates = [int(r) for r in args.rates.split(",")]
    variants = [parse_variant(spec) for spec in args.variant or ["default"]]

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "topology": args.topology,
        "spark_workers": args.spark_workers if args.topology == "cluster" else None,
        "variants": [],
    }
    ceiling = float("nan")
    if args.ceiling_rows > 0:  # 0 skips it (a keyspace's migrations take minutes on 3 nodes)
        keyspace = f"bench_{uuid.uuid4().hex[:8]}"
        infra("migrate", "--keyspace", keyspace)
        try:
            log(f"Cassandra write ceiling: Spark batch upsert of {args.ceiling_rows:,} rows")
            env = {**os.environ, "CASSANDRA_KEYSPACE": keyspace}
            results["cassandra_ceiling"] = cassandra_ceiling(
                CassandraSettings.from_env(env), args.ceiling_rows
            )
        finally:
            infra("drop-keyspace", keyspace)
        ceiling = results["cassandra_ceiling"]["rows_per_s"]
        log(f"  {ceiling:,.0f} rows/s")
    for name, overrides in variants:
        results["variants"].append(run_variant(name, overrides, rates, args))
    for variant in results["variants"]:
        print_variant(variant, ceiling)
    print(f"\nCassandra write ceiling (Spark connector, batch): {ceiling:,.0f} rows/s")
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    suffix = f"-cluster-{args.spark_workers}w" if args.topology == "cluster" else ""
    out = REPO / "benchmarks" / "results" / f"pipeline{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
