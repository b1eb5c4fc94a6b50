"""Streaming job: Kafka ``trades`` (Avro) -> Cassandra raw trades, 5-s bars, 1-min and 1-h rollups.

Usage (local mode, local[2] unless SPARK_MASTER says otherwise)::

    .venv/bin/python -m stream_processor                 # run until SIGTERM / Ctrl+C
    .venv/bin/python -m stream_processor --once          # drain what is in Kafka now, then exit
    .venv/bin/python -m stream_processor --queries trades_raw,bars_5s

With spark-submit against any master (connector jars from the project cache, no network)::

    SPARK_SUBMIT_MODE=1 .venv/bin/spark-submit --master local[2] --driver-memory 1g \\
        --conf spark.sql.shuffle.partitions=2 \\
        --jars "$(ls .cache/jars/spark/*.jar | paste -sd, -)" stream_processor/__main__.py

A query that fails (e.g. Kafka or Cassandra unreachable for longer than the sink retry) is
restarted from its checkpoint with backoff; after QUERY_MAX_RESTARTS failures of one query within
ten minutes the job exits with status 1. A micro-batch that runs longer than BATCH_STALL_TIMEOUT
is wedged (seen after a Cassandra restart: the connector's driver can block forever in a schema
refresh that ignores interrupts); the job then exits with status 3 at once, and its service
manager restarts it, which resumes from the checkpoints without loss or duplicates.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pyspark.errors import StreamingQueryException

from schemas.runtime.spark import build_session
from schemas.settings import state_dir
from stream_processor.config import QueryName, StreamSettings
from stream_processor.exceptions import ConfigError
from stream_processor.jobs import configure_logging
from stream_processor.metrics import PrometheusListener
from stream_processor.queries import close_rollups, scheduler_conf, start_query

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

__all__ = ["EXIT_STALLED", "checkpoint_conf", "main", "parse_args", "supervise"]

logger = logging.getLogger(__name__)

_FAILURE_WINDOW_S = 600.0
EXIT_STALLED = 3


class _StallWatch:
    """Tracks how long each query's current micro-batch has been running.

    A query's first micro-batch in this process may run for ``first_batch_timeout_s`` (default:
    ``timeout_s``): it starts the executors' JVMs and Python workers and, after a restart,
    catches up, which on a loaded cluster takes minutes; a wedged later batch is caught sooner.
    """

    def __init__(self, timeout_s: float, first_batch_timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.first_batch_timeout_s = max(timeout_s, first_batch_timeout_s or timeout_s)
        self.started: dict[str, tuple[int, float]] = {}

    def limit(self, query: StreamingQuery) -> float:
        """The seconds ``query``'s current micro-batch may run."""
        return self.first_batch_timeout_s if query.lastProgress is None else self.timeout_s

    def stalled(self, name: str, query: StreamingQuery, now: float) -> bool:
        if not query.status.get("isTriggerActive"):
            self.started.pop(name, None)
            return False
        last = query.lastProgress
        batch = int(last["batchId"]) if last else -1
        first_batch, since = self.started.get(name, (batch, now))
        if first_batch != batch:
            since = now
        self.started[name] = (batch, since)
        return now - since > self.limit(query)


_LOCAL_SCHEMES = ("", "file")


def checkpoint_conf(checkpoint_dir: str) -> dict[str, str]:
    """Spark settings for the checkpoint location.

    On a local path, Spark's default checkpoint manager goes through Hadoop's ``FileContext``,
    which without Hadoop's native library runs a ``readlink`` process for every file it looks
    at: about a hundred processes a second with two queries, a large share of the job's CPU.
    The ``FileSystem``-based manager reads the same files in-process; a rename on a local file
    system is atomic, which is what that manager relies on. Other schemes keep Spark's choice.
    """
    if urlparse(checkpoint_dir).scheme not in _LOCAL_SCHEMES:
        return {}
    return {
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.FileSystemBasedCheckpointFileManager"
        )
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stream_processor",
        description="Kafka trades -> Cassandra raw trades and OHLCV/VWAP bars (Spark streaming).",
    )
    parser.add_argument(
        "--once", action="store_true", help="process what is in Kafka now (availableNow), then exit"
    )
    parser.add_argument("--queries", help="comma-separated subset (env STREAM_QUERIES)")
    parser.add_argument(
        "--starting-offsets", help="earliest|latest|JSON, for queries without a checkpoint"
    )
    parser.add_argument("--checkpoint-dir", help="any Hadoop path (env CHECKPOINT_DIR)")
    parser.add_argument("--topic", help="trades topic (env TRADES_TOPIC)")
    parser.add_argument("--keyspace", help="Cassandra keyspace (env CASSANDRA_KEYSPACE)")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> StreamSettings:
    overrides = {
        "STREAM_QUERIES": args.queries,
        "STARTING_OFFSETS": args.starting_offsets,
        "CHECKPOINT_DIR": args.checkpoint_dir,
        "TRADES_TOPIC": args.topic,
        "CASSANDRA_KEYSPACE": args.keyspace,
    }
    env = {**os.environ, **{k: v for k, v in overrides.items() if v}}
    return StreamSettings.from_env(env)


class _Restarts:
    """The failures of each query within the last ten minutes: how long to wait before the next
    restart, or that the query failed too often to go on."""

    def __init__(self, max_restarts: int) -> None:
        self.max_restarts = max_restarts
        self.history: dict[str, deque[float]] = {}

    def failed(self, name: str, now: float) -> float | None:
        """Record a failure of ``name``; the backoff before restarting it (2, 4, 8 ... 30 s),
        or None when it failed more than ``max_restarts`` times in the window.

        >>> restarts = _Restarts(max_restarts=2)
        >>> restarts.failed("q", 0.0), restarts.failed("q", 1.0), restarts.failed("q", 2.0)
        (2.0, 4.0, None)
        >>> restarts.failed("q", 3.0 + _FAILURE_WINDOW_S)  # the first three have expired
        2.0
        """
        history = self.history.setdefault(name, deque())
        history.append(now)
        while history and now - history[0] > _FAILURE_WINDOW_S:
            history.popleft()
        if len(history) > self.max_restarts:
            return None
        return min(2.0 ** len(history), 30.0)


def supervise(
    spark: SparkSession,
    settings: StreamSettings,
    *,
    once: bool,
    stop: threading.Event,
) -> int:
    """Run the selected queries, restarting a failed one from its checkpoint.

    :returns: 0 when every query stopped cleanly (``once``) or a stop was requested; 1 when a
        query failed more than ``settings.max_restarts`` times within ten minutes; 3 when a
        micro-batch ran longer than ``settings.stall_timeout_ms`` (the caller must not wait for it).
    """
    running: dict[QueryName, StreamingQuery] = {
        q: start_query(spark, settings, q, once=once, stop=stop) for q in settings.queries
    }
    restarts = _Restarts(settings.max_restarts)
    watch = _StallWatch(
        settings.stall_timeout_ms / 1000.0, settings.first_batch_stall_timeout_ms / 1000.0
    )
    while running and not stop.is_set():
        try:
            spark.streams.awaitAnyTermination(1)
        except StreamingQueryException:
            pass  # inspected per query below
        spark.streams.resetTerminated()
        for name, query in list(running.items()):
            if query.isActive:
                if watch.stalled(name, query, time.monotonic()):
                    logger.error(
                        "query %s: micro-batch running for more than %.0f s, exiting with "
                        "status %d so that the job restarts from its checkpoints",
                        *(name, watch.limit(query), EXIT_STALLED),
                    )
                    return EXIT_STALLED
                continue
            error = query.exception()
            if error is None:
                logger.info("query %s finished", name)
                del running[name]
                continue
            delay = restarts.failed(name, time.monotonic())
            if delay is None:
                logger.error(
                    "query %s failed %d times in %.0f s, giving up: %s",
                    *(name, len(restarts.history[name]), _FAILURE_WINDOW_S, _describe(error)),
                )
                for other in running.values():
                    other.stop()
                return 1
            logger.error(
                "query %s failed, restarting from its checkpoint in %.0f s: %s",
                *(name, delay, _describe(error).splitlines()[0]),
            )
            if stop.wait(delay):
                break
            running[name] = start_query(spark, settings, name, once=once, stop=stop)
    for query in running.values():
        query.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m stream_processor``; returns the process exit code."""
    configure_logging()
    args = parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    stop = threading.Event()

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping queries (again to kill)", signum)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    # The connector's defaults (60 retries of a 120-s request timeout per statement) can hold a
    # task slot for hours when Cassandra restarts mid-write; fail the write within about a
    # minute instead and let the sink's retry loop and the query restart take over.
    spark = build_session(
        "stream_processor",
        settings.cassandra,
        extra_conf={
            "spark.cassandra.query.retry.count": "3",
            "spark.cassandra.read.timeoutMS": "20000",
            # A service's log is no terminal: the console progress bar only redrew every 200 ms
            # (its thread showed in a JVM profile of the running job) and cluttered the log.
            "spark.ui.showConsoleProgress": "false",
            **scheduler_conf(state_dir() / "stream_processor"),
            **checkpoint_conf(settings.checkpoint_dir),
        },
    )
    listener = PrometheusListener()
    spark.streams.addListener(listener)
    if settings.metrics_port:
        listener.serve(settings.metrics_host, settings.metrics_port)
    logger.info("settings: %s", settings)
    try:
        code = supervise(spark, settings, once=args.once, stop=stop)
    finally:
        close_rollups()
    if code != EXIT_STALLED:  # stopping a session with a wedged task would wait forever
        spark.stop()
    return code


def _describe(error: BaseException) -> str:
    """A failed query's message: Spark's own description when it carries one."""
    return str(getattr(error, "desc", None) or error)
