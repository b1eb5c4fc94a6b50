"""The forecast run: read bars, forecast per symbol in parallel, write the results.

Per run: discover the (symbol, day) partitions of ``trades_agg_5s`` in the lookback window, read
them, run the pure :func:`gbm_analysis.forecast.forecast_symbol` per symbol, and write its one row
per (symbol, model) into ``gbm_forecast_runs``, ``gbm_forecasts`` and ``gbm_paths``. A run row
goes to ``gbm_runs`` last, so a run listed there is complete.

Two engines do the same, row for row (``GBM_ENGINE``):

* ``local`` (the default): the cassandra driver reads the bars (one query per partition,
  concurrently), the symbols are forecast on ``GBM_WORKERS`` threads, and every row is written
  with prepared, asynchronous inserts while the next symbols are computed. No JVM: the hourly job
  for 50 symbols is bound by numpy and the driver's encoding, not by a session start, Python
  worker start and Arrow round trips (``docs/benchmarks.md``).
* ``spark``: the Cassandra connector reads (partition keys pushed down), ``groupBy("symbol")
  .applyInPandas`` runs :func:`gbm_analysis.forecast.forecast_frame` on the executors, and the
  connector writes; for a cluster, or under spark-submit::

    SPARK_SUBMIT_MODE=1 spark-submit --master local[2] \\
        --jars "$(ls .cache/jars/spark/*.jar | paste -sd,)" gbm_analysis/__main__.py run --once
"""

from __future__ import annotations

import calendar
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from gbm_analysis.config import GbmSettings
from gbm_analysis.cql import batch_rows, bound_rows, cells, double_lists
from gbm_analysis.exceptions import StorageError
from gbm_analysis.forecast import forecast_frame, forecast_row, forecast_symbol
from gbm_analysis.io import GbmStore, days_between, new_run_id, to_utc
from schemas.contracts import TABLE_AGG_5S
from schemas.gbm_tables import (
    PATH_PRICES,
    PERCENTILES,
    TABLE_GBM_FORECAST_RUNS,
    TABLE_GBM_FORECASTS,
    TABLE_GBM_PATHS,
)
from schemas.runtime.cassandra import driver_errors as _driver_errors
from schemas.runtime.spark import read_cassandra, write_cassandra

if TYPE_CHECKING:
    from datetime import date

    from numpy.typing import NDArray
    from pyspark.sql import Column, DataFrame, SparkSession

    from gbm_analysis.registry import Registry

__all__ = ["RunResult", "closed_as_of", "run_forecasts"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FORECAST_SCHEMA = (
    "symbol string, model string, status string, message string, as_of double, "
    "last_price double, mu double, sigma double, sigma_annualised double, annualisation string, "
    "sigma_stderr double, "
    "dof double, n_bars int, n_returns int, n_rejected int, n_segments int, "
    "mean array<double>, p_above array<double>, percentiles array<double>, "
    "sample array<double>, hist_edges array<double>, hist_counts array<bigint>"
)


@dataclass(frozen=True)
class RunResult:
    """What a run did: one ``(symbol, model, status, message)`` per forecast attempted."""

    run_id: str
    issued_at: datetime
    seed: int
    statuses: list[tuple[str, str, str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def n_ok(self) -> int:
        return sum(1 for s in self.statuses if s[2] == "ok")


def closed_as_of(as_of: datetime, bar_seconds: int) -> datetime:
    """``as_of`` floored to the end of the last bar closed by then (bars are aligned to the epoch).

    At a wall-clock ``as_of`` the current bar is still open: its close is a mid-bar price that
    will change, and anchoring the horizon at its end would start it in the future.

    >>> closed_as_of(datetime(2026, 1, 5, 12, 0, 7, 500_000, tzinfo=UTC), 5).isoformat()
    '2026-01-05T12:00:05+00:00'
    >>> closed_as_of(datetime(2026, 1, 5, 12, 0, 5, tzinfo=UTC), 5).isoformat()
    '2026-01-05T12:00:05+00:00'
    """
    bar = timedelta(seconds=bar_seconds)
    return _EPOCH + (to_utc(as_of) - _EPOCH) // bar * bar  # whole microseconds: exact


def _read_bars(
    spark: SparkSession,
    keyspace: str,
    partitions: list[tuple[str, date]],
    start: datetime,
    end: datetime,
) -> DataFrame:
    """Bars starting in ``[start, end)`` that have closed by ``end``."""
    from pyspark.sql import functions as F

    symbols = sorted({s for s, _ in partitions})
    days = sorted({d for _, d in partitions})
    return (
        read_cassandra(spark, keyspace, TABLE_AGG_5S)
        .where(F.col("symbol").isin(symbols) & F.col("day").isin(days))
        .where((F.col("window_start") >= F.lit(start)) & (F.col("window_start") < F.lit(end)))
        .where(F.col("window_end") <= F.lit(end))
        .select("symbol", "window_start", "close")
    )


def _with_learned(
    spark: SparkSession,
    result: DataFrame,
    store: GbmStore,
    registry: Registry,
    symbols: list[str],
    settings: GbmSettings,
    as_of: datetime,
) -> DataFrame:
    """The run's rows plus those of the registered learned models, with their MLflow version
    and run id (null for the GBM family). Unchanged when no learned model is registered, so a
    keyspace without those columns (before migration 008) is written as before."""
    from pyspark.sql import functions as F

    from gbm_analysis.serving import learned_forecast_rows

    rows = learned_forecast_rows(store, registry, symbols, settings, as_of=as_of)
    if not rows:
        return result
    schema = FORECAST_SCHEMA + ", model_version int, model_run_id string"
    columns = [c.split()[0] for c in schema.split(", ")]
    # plain tuples, not a pandas frame: a few rows, and pyspark 3.5's pandas path trips over
    # pandas 2.2's deprecations
    extra = spark.createDataFrame([tuple(r[c] for c in columns) for r in rows], schema=schema)
    base = result.withColumn("model_version", F.lit(None).cast("int")).withColumn(
        "model_run_id", F.lit(None).cast("string")
    )
    logger.info("adding %d learned-model forecasts", len(rows))
    return base.unionByName(extra).cache()


_N_PCT = 99  # percentiles stored per step
#: the percentiles each step's row in ``gbm_forecasts`` also has as columns q05 .. q95
_BAND_LEVELS = (5, 25, 50, 75, 95)
#: the primary key of every table a run writes, (symbol, day) the partition
_KEY_COLUMNS = ("symbol", "day", "issued_at", "run_id", "model")
#: the run's estimates that each step's row in ``gbm_forecasts`` repeats
_STEP_ESTIMATES = ("last_price", "mu", "sigma", "sigma_annualised", "annualisation", "n_bars")


def _runs_table(
    result: DataFrame, settings: GbmSettings, keys: list[Column], seed: int
) -> DataFrame:
    """``gbm_forecast_runs``: one row per (symbol, model) with its status and estimates (NaN
    estimates stored as null)."""
    from pyspark.sql import functions as F

    def nan_null(name: str) -> Column:
        return F.nanvl(F.col(name), F.lit(None).cast("double")).alias(name)

    as_of = F.when(~F.isnan("as_of"), F.timestamp_seconds(F.col("as_of")))
    learned = ["model_version", "model_run_id"] if "model_version" in result.columns else []
    return result.select(
        *keys,
        *learned,
        "status",
        "message",
        as_of.alias("as_of"),
        *(
            nan_null(c)
            for c in ("last_price", "mu", "sigma", "sigma_annualised", "sigma_stderr", "dof")
        ),
        "annualisation",
        "n_bars",
        "n_returns",
        "n_rejected",
        "n_segments",
        F.lit(seed).cast("bigint").alias("seed"),
        F.lit(settings.n_paths).alias("n_paths"),
        F.lit(settings.step_seconds).alias("step_seconds"),
        F.lit(settings.n_steps).alias("n_steps"),
        "hist_edges",
        "hist_counts",
    )


def _forecasts_table(ok: DataFrame, settings: GbmSettings, keys: list[Column]) -> DataFrame:
    """``gbm_forecasts``: one row per step of every successful forecast, its quantiles sliced
    out of the run's flat percentile array."""
    from pyspark.sql import functions as F

    steps = ok.select(
        *keys,
        "as_of",
        *_STEP_ESTIMATES,
        "p_above",
        "percentiles",
        F.posexplode("mean").alias("i", "mean"),
    )

    def pct(level: int) -> Column:
        return F.element_at("percentiles", F.col("i") * _N_PCT + level).alias(f"q{level:02d}")

    return steps.select(
        *(F.col(c) for c in _KEY_COLUMNS),
        (F.col("i") + 1).alias("step"),
        F.timestamp_seconds(F.col("as_of") + (F.col("i") + 1) * settings.step_seconds).alias(
            "target_ts"
        ),
        ((F.col("i") + 1) * settings.step_seconds).alias("horizon_s"),
        F.timestamp_seconds(F.col("as_of")).alias("as_of"),
        *_STEP_ESTIMATES,
        "mean",
        *(pct(level) for level in _BAND_LEVELS),
        F.element_at("p_above", F.col("i") + 1).alias("p_above"),
        F.slice("percentiles", F.col("i") * _N_PCT + 1, _N_PCT).alias(PERCENTILES),
    )


def _paths_table(ok: DataFrame, settings: GbmSettings, keys: list[Column]) -> DataFrame:
    """``gbm_paths``: the sample paths of every successful forecast that drew some (learned
    models draw none), one row per path."""
    from pyspark.sql import functions as F

    return (
        ok.where(F.size("sample") > 0)
        .select(
            *keys,
            "as_of",
            "sample",
            F.explode(F.sequence(F.lit(0), F.lit(settings.n_sample_paths - 1))).alias("path"),
        )
        .select(
            *_KEY_COLUMNS,
            "path",
            F.timestamp_seconds(F.col("as_of")).alias("as_of"),
            F.lit(settings.step_seconds).alias("step_seconds"),
            F.slice("sample", F.col("path") * settings.n_steps + 1, settings.n_steps).alias(
                PATH_PRICES
            ),
        )
    )


def _tables(
    result: DataFrame, settings: GbmSettings, run_id: str, issued_at: datetime, seed: int
) -> dict[str, DataFrame]:
    """The run's rows for each table, keyed by (symbol, day, issued_at, run_id, model)."""
    from pyspark.sql import functions as F

    keys = [
        F.col("symbol"),
        F.lit(issued_at.astimezone(UTC).date()).alias("day"),
        F.lit(issued_at).alias("issued_at"),
        F.lit(run_id).alias("run_id"),
        F.col("model"),
    ]
    ok = result.where(F.col("status") == "ok")
    tables = {
        TABLE_GBM_FORECAST_RUNS: _runs_table(result, settings, keys, seed),
        TABLE_GBM_FORECASTS: _forecasts_table(ok, settings, keys),
    }
    if settings.n_sample_paths:
        tables[TABLE_GBM_PATHS] = _paths_table(ok, settings, keys)
    return tables


class _Progress(threading.Thread):
    """Logs Spark task progress every few seconds while a run is busy."""

    def __init__(self, spark: SparkSession, interval: float = 5.0) -> None:
        super().__init__(daemon=True, name="gbm-progress")
        self._tracker = spark.sparkContext.statusTracker()
        self._interval = interval
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self._interval):
            for stage_id in self._tracker.getActiveStageIds():
                info = self._tracker.getStageInfo(stage_id)
                if info is not None:
                    logger.info(
                        "spark stage %d (%s): %d/%d tasks done, %d running",
                        stage_id,
                        info.name,
                        info.numCompletedTasks,
                        info.numTasks,
                        info.numActiveTasks,
                    )

    def stop(self) -> None:
        self._stop.set()


def run_forecasts(
    spark: SparkSession | None,
    store: GbmStore,
    settings: GbmSettings,
    *,
    as_of: datetime,
    issued_at: datetime,
    seed: int,
    run_id: str | None = None,
    registry: Registry | None = None,
) -> RunResult:
    """One forecast run over every symbol with closed bars in ``[as_of - lookback, as_of)``.

    ``as_of`` is first floored to the end of the last closed bar (:func:`closed_as_of`); a bar
    still open then is not used.

    :param spark: a session with the Cassandra connector (``schemas.runtime.spark.build_session``),
        or None to run in this process (the ``local`` engine, on ``settings.workers`` threads)
    :param store: driver-side access to the same keyspace
    :param settings: what to run
    :param as_of: end of the lookback window (now, for the live schedule)
    :param issued_at: the run's wall-clock time, stored as ``issued_at``
    :param seed: the run seed, stored with the run
    :param registry: MLflow registry whose production learned models forecast too
        (:mod:`gbm_analysis.serving`); None runs the GBM family only
    :raises StorageError: Cassandra could not be read or written
    """
    started = time.perf_counter()
    run_id = run_id or new_run_id(issued_at)
    as_of = closed_as_of(as_of, settings.bar_seconds)
    start = as_of - timedelta(seconds=settings.lookback_seconds)
    # seasonal_fhs learns from a longer history; the other models use the lookback of it
    read_start = as_of - timedelta(seconds=settings.read_seconds)
    family_from = start.timestamp() if read_start < start else None
    partitions = store.bar_partitions(days_between(read_start, as_of))
    if settings.symbols:
        partitions = [p for p in partitions if p[0] in settings.symbols]
    found = sorted({s for s, _ in partitions})
    logger.info(
        "run %s: %d symbols with bars between %s and %s, models %s, %d paths x %d steps",
        run_id,
        len(found),
        start.isoformat(),
        as_of.isoformat(),
        ",".join(settings.models),
        settings.n_paths,
        settings.n_steps,
    )
    statuses: list[tuple[str, str, str, str]] = []
    if found:
        plan = _RunPlan(
            store=store,
            settings=settings,
            partitions=partitions,
            start=read_start,
            family_from=family_from,
            as_of=as_of,
            run_id=run_id,
            issued_at=issued_at,
            seed=seed,
            registry=registry,
        )
        statuses = _run_local(plan) if spark is None else _run_spark(spark, plan)
    statuses += _skip_the_rest(store, settings, found, statuses, as_of, run_id, issued_at, seed)
    statuses.sort()
    _log_statuses(statuses)
    duration = time.perf_counter() - started
    _write_run_row(store, settings, statuses, run_id, issued_at, seed, duration)
    return RunResult(
        run_id=run_id, issued_at=issued_at, seed=seed, statuses=statuses, duration_s=duration
    )


def _write_run_row(
    store: GbmStore,
    settings: GbmSettings,
    statuses: list[tuple[str, str, str, str]],
    run_id: str,
    issued_at: datetime,
    seed: int,
    duration: float,
) -> None:
    """The ``gbm_runs`` row, written last: a run listed there is complete."""
    n_symbols = len({s for s, *_ in statuses})
    n_ok_symbols = len({s for s, _, st, _ in statuses if st == "ok"})
    store.write_run(
        run_id=run_id,
        issued_at=issued_at,
        seed=seed,
        settings=settings,
        n_symbols=n_symbols,
        n_ok=n_ok_symbols,
        n_skipped=n_symbols - n_ok_symbols,
        duration_s=duration,
    )


@dataclass(frozen=True, kw_only=True)
class _RunPlan:
    """What either engine is given: the run and the (symbol, day) partitions of bars to read
    from ``start`` to ``as_of``; ``family_from``, when set, is where the GBM family's lookback
    begins inside that longer read (for ``seasonal_fhs``)."""

    store: GbmStore
    settings: GbmSettings
    partitions: list[tuple[str, date]]
    start: datetime
    family_from: float | None
    as_of: datetime
    run_id: str
    issued_at: datetime
    seed: int
    registry: Registry | None


def _run_spark(spark: SparkSession, plan: _RunPlan) -> list[tuple[str, str, str, str]]:
    """The ``spark`` engine: bars read by the connector, ``applyInPandas`` per symbol, every
    table written by the connector; the ``(symbol, model, status, message)`` of each forecast."""
    bars = _read_bars(spark, plan.store.keyspace, plan.partitions, plan.start, plan.as_of)
    body = partial(
        forecast_frame, settings=plan.settings, run_seed=plan.seed, family_from=plan.family_from
    )
    result = bars.groupBy("symbol").applyInPandas(body, schema=FORECAST_SCHEMA).cache()
    if plan.registry is not None:
        found = sorted({s for s, _ in plan.partitions})
        result = _with_learned(
            spark, result, plan.store, plan.registry, found, plan.settings, plan.as_of
        )
    progress = _Progress(spark)
    progress.start()
    try:
        for table, frame in _tables(
            result, plan.settings, plan.run_id, plan.issued_at, plan.seed
        ).items():
            logger.info("run %s: writing %s", plan.run_id, table)
            write_cassandra(frame, plan.store.keyspace, table)
        return [
            (r.symbol, r.model, r.status, r.message)
            for r in result.select("symbol", "model", "status", "message").collect()
        ]
    finally:
        progress.stop()
        result.unpersist()


def _skip_the_rest(
    store: GbmStore,
    settings: GbmSettings,
    found: list[str],
    statuses: list[tuple[str, str, str, str]],
    as_of: datetime,
    run_id: str,
    issued_at: datetime,
    seed: int,
) -> list[tuple[str, str, str, str]]:
    """A symbol asked for by name, or with bars only outside the window, still gets a row
    saying why it has no forecast; the statuses of those rows."""
    covered = {symbol for symbol, *_ in statuses}
    skipped: list[tuple[str, str, str, str]] = []
    for symbol in sorted((set(settings.symbols) | set(found)) - covered):
        message = (
            f"0 bars in the {settings.lookback_seconds}s before {as_of.isoformat()}, "
            f"need at least {settings.min_bars}"
        )
        store.write_skipped(
            symbol=symbol,
            run_id=run_id,
            issued_at=issued_at,
            seed=seed,
            models=settings.models,
            status="too_few_bars",
            message=message,
        )
        skipped.extend((symbol, m, "too_few_bars", message) for m in settings.models)
    return skipped


def _log_statuses(statuses: list[tuple[str, str, str, str]]) -> None:
    for i, (symbol, model, status, message) in enumerate(statuses, start=1):
        if status == "ok":
            logger.info("[%d/%d] %s %s: ok", i, len(statuses), symbol, model)
        else:
            logger.warning(
                "[%d/%d] %s %s: %s (%s)", i, len(statuses), symbol, model, status, message
            )


# --- the run without Spark ------------------------------------------------------------------

#: requests in flight at once on the driver's connection (its event loop sends them)
_WRITES_IN_FLIGHT = 32


#: times a timed-out insert of the run is sent again (:func:`_retry_timed_out_writes`)
_WRITE_RETRIES = 3


def _retry_timed_out_writes() -> Any:
    """The driver's retry policy, except that an insert or unlogged batch whose replica did
    not answer in time (``WriteTimeout``) is sent again, up to ``_WRITE_RETRIES`` times.

    The run's inserts are idempotent (the same key and values again), so a retry can only
    write the same row. On a loaded single node a write waited past the server's 2-s timeout
    in its mutation queue often enough that one of a run's 300 writes failed, and with it the
    run; the driver's default retries a timed-out write only for the batch log."""
    from cassandra.policies import RetryPolicy, WriteType

    class RetryTimedOutWrites(RetryPolicy):
        def on_write_timeout(
            self,
            query: Any,
            consistency: Any,
            write_type: Any,
            required_responses: int,
            received_responses: int,
            retry_num: int,
        ) -> tuple[Any, Any]:
            if retry_num < _WRITE_RETRIES and write_type in (
                WriteType.SIMPLE,
                WriteType.UNLOGGED_BATCH,
            ):
                logger.warning("a write timed out on the server; sending it again")
                return self.RETRY, consistency
            return super().on_write_timeout(
                query, consistency, write_type, required_responses, received_responses, retry_num
            )

    return RetryTimedOutWrites()


class _Writer:
    """Prepared inserts sent asynchronously, at most ``_WRITES_IN_FLIGHT`` requests at a time;
    the first failure is raised by :meth:`submit` or :meth:`drain` as a :class:`StorageError`.

    The rows of one (symbol, model) in one table share a partition, so they go as one unlogged
    batch (:meth:`submit_batch`): Cassandra applies a single-partition batch as one mutation,
    and the driver pays its per-request cost (query plan, future, framing, compression) once
    instead of 60 times. A batch of 60 forecast steps is about 60 KiB, under the server's
    ``batch_size_warn_threshold`` (``infra/conf/cassandra.yaml``).
    """

    def __init__(self, store: GbmStore) -> None:
        self._store = store
        self._pending: deque[Any] = deque()
        self._prepared: dict[str, Any] = {}
        self._retry = _retry_timed_out_writes()
        self.n_rows = 0

    def prepare(self, table: str, columns: Sequence[str]) -> Any:
        key = f"{table}({','.join(columns)})"
        if key not in self._prepared:
            try:
                statement = self._store.session.prepare(
                    f"INSERT INTO {self._store.keyspace}.{table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})"
                )
            except _driver_errors() as exc:
                raise StorageError(f"cassandra prepare {table} insert failed: {exc}") from exc
            statement.retry_policy = self._retry
            statement.is_idempotent = True
            self._prepared[key] = statement
        return self._prepared[key]

    def submit(self, statement: Any, values: Sequence[Any]) -> None:
        while len(self._pending) >= _WRITES_IN_FLIGHT:
            self._wait_oldest()
        try:
            self._pending.append(self._store.session.execute_async(statement, values))
        except _driver_errors() as exc:
            raise StorageError(f"cassandra write failed: {type(exc).__name__}: {exc}") from exc
        self.n_rows += 1

    @property
    def protocol_version(self) -> int:
        """The native protocol version the session's connections speak."""
        return int(self._store.session.cluster.protocol_version)

    def submit_batch(self, statement: Any, rows: Sequence[Sequence[bytes | None]]) -> None:
        """``rows`` of one partition, encoded (:func:`gbm_analysis.cql.batch_rows`), in one
        unlogged batch."""
        from cassandra.query import BatchStatement, BatchType

        if not rows:
            return
        batch = BatchStatement(batch_type=BatchType.UNLOGGED, retry_policy=self._retry)
        batch.is_idempotent = True
        for bound in bound_rows(statement, rows):
            batch.add(bound)
        self.submit(batch, ())
        self.n_rows += len(rows) - 1

    def _wait_oldest(self) -> None:
        future = self._pending.popleft()
        try:
            future.result()
        except _driver_errors() as exc:
            raise StorageError(f"cassandra write failed: {type(exc).__name__}: {exc}") from exc

    def drain(self) -> None:
        while self._pending:
            self._wait_oldest()


_RUN_COLUMNS = (
    *_KEY_COLUMNS,
    "status",
    "message",
    "as_of",
    "last_price",
    "mu",
    "sigma",
    "sigma_annualised",
    "sigma_stderr",
    "dof",
    "annualisation",
    "n_bars",
    "n_returns",
    "n_rejected",
    "n_segments",
    "seed",
    "n_paths",
    "step_seconds",
    "n_steps",
    "hist_edges",
    "hist_counts",
)
_STEP_COLUMNS = (
    *_KEY_COLUMNS,
    "step",
    "target_ts",
    "horizon_s",
    "as_of",
    *_STEP_ESTIMATES,
    "mean",
    "q05",
    "q25",
    "q50",
    "q75",
    "q95",
    "p_above",
    PERCENTILES,
)
_PATH_COLUMNS = (
    *_KEY_COLUMNS,
    "path",
    "as_of",
    "step_seconds",
    PATH_PRICES,
)
_LEARNED = ("model_version", "model_run_id")


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _write_rows(
    writer: _Writer,
    row: dict[str, Any],
    settings: GbmSettings,
    run_id: str,
    issued_at: datetime,
    seed: int,
) -> None:
    """One (symbol, model) row of :data:`FORECAST_COLUMNS` (plus the learned models' version and
    run id, when present) into ``gbm_forecast_runs``, ``gbm_forecasts`` and ``gbm_paths``: the
    same rows, columns and null/NaN conventions as the Spark path's :func:`_tables`."""
    day = issued_at.astimezone(UTC).date()
    keys = [row["symbol"], day, issued_at, run_id, row["model"]]
    as_of = row["as_of"]
    as_of_ts = None if math.isnan(as_of) else _EPOCH + timedelta(seconds=as_of)
    learned = [c for c in _LEARNED if row.get(c) is not None]
    run_values = [
        *keys,
        row["status"],
        row["message"],
        as_of_ts,
        *(
            _none_if_nan(row[c])
            for c in ("last_price", "mu", "sigma", "sigma_annualised", "sigma_stderr", "dof")
        ),
        row["annualisation"],
        row["n_bars"],
        row["n_returns"],
        row["n_rejected"],
        row["n_segments"],
        seed,
        settings.n_paths,
        settings.step_seconds,
        settings.n_steps,
        list(row["hist_edges"]),
        list(row["hist_counts"]),
        *(row[c] for c in learned),
    ]
    writer.submit(
        writer.prepare(TABLE_GBM_FORECAST_RUNS, _RUN_COLUMNS + tuple(learned)), run_values
    )
    if row["status"] != "ok":
        return
    # the step and path rows are encoded a batch at a time (gbm_analysis/cql.py); timestamps
    # as epoch ms, issued_at truncated to the millisecond as the driver truncates a datetime
    issued_ms = calendar.timegm(issued_at.utctimetuple()) * 1000 + issued_at.microsecond // 1000
    key_values = [row["symbol"], day, issued_ms, run_id, row["model"]]
    shared = {**dict(zip(_KEY_COLUMNS, key_values, strict=True)), "as_of": round(as_of * 1000)}
    _write_steps(writer, row, shared, settings.step_seconds)
    sample = np.asarray(row["sample"], dtype=np.float64)
    if settings.n_sample_paths and sample.size:  # learned models draw no paths
        _write_paths(writer, sample.reshape(settings.n_sample_paths, -1), shared, settings)


def _write_paths(
    writer: _Writer, prices: NDArray[np.float64], shared: dict[str, Any], settings: GbmSettings
) -> None:
    """The ``gbm_paths`` rows of one (symbol, model), one per sample path, in one batch."""
    statement = writer.prepare(TABLE_GBM_PATHS, _PATH_COLUMNS)
    varying = {"path": cells(np.arange(prices.shape[0]), "int"), PATH_PRICES: double_lists(prices)}
    shared = {**shared, "step_seconds": settings.step_seconds}
    writer.submit_batch(statement, batch_rows(statement, writer.protocol_version, shared, varying))


def _write_steps(
    writer: _Writer, row: dict[str, Any], shared: dict[str, Any], step_seconds: int
) -> None:
    """The ``gbm_forecasts`` rows of one (symbol, model), one per step, in one batch."""
    statement = writer.prepare(TABLE_GBM_FORECASTS, _STEP_COLUMNS)
    means = np.asarray(row["mean"], dtype=np.float64)
    pct = np.asarray(row["percentiles"], dtype=np.float64).reshape(means.size, _N_PCT)
    step = np.arange(1, means.size + 1, dtype=np.int64)
    varying = {
        "step": cells(step, "int"),
        "target_ts": cells(shared["as_of"] + step * (step_seconds * 1000), "timestamp"),
        "horizon_s": cells(step * step_seconds, "int"),
        "mean": cells(means, "double"),
        **{f"q{level:02d}": cells(pct[:, level - 1], "double") for level in _BAND_LEVELS},
        "p_above": cells(np.asarray(row["p_above"], dtype=np.float64), "double"),
        PERCENTILES: double_lists(pct),
    }
    estimates = {c: row[c] for c in _STEP_ESTIMATES}
    writer.submit_batch(
        statement,
        batch_rows(statement, writer.protocol_version, {**shared, **estimates}, varying),
    )


def _forecast_rows(
    symbol: str,
    bars: tuple[NDArray[np.float64], NDArray[np.float64]],
    settings: GbmSettings,
    seed: int,
    family_from: float | None,
) -> list[dict[str, Any]]:
    starts, closes = bars
    return [
        forecast_row(fc, lists=False)
        for fc in forecast_symbol(symbol, starts, closes, settings, seed, family_from=family_from)
    ]


def _run_local(plan: _RunPlan) -> list[tuple[str, str, str, str]]:
    """Read, forecast and write in this process: bars through the driver (one query per
    partition, concurrently), the symbols forecast on ``GBM_WORKERS`` threads (numpy's
    draws and sorts release the GIL), and each symbol's rows written asynchronously while the
    next ones are computed."""
    t0 = time.perf_counter()
    bars = plan.store.read_closes(plan.partitions, plan.start, plan.as_of)
    t_read = time.perf_counter() - t0
    writer = _Writer(plan.store)
    statuses: list[tuple[str, str, str, str]] = []
    t_compute = 0.0
    with ThreadPoolExecutor(
        max_workers=plan.settings.workers, thread_name_prefix="gbm-forecast"
    ) as pool:
        futures = {
            pool.submit(
                _forecast_rows, symbol, bars[symbol], plan.settings, plan.seed, plan.family_from
            ): symbol
            for symbol in sorted(bars)
            if bars[symbol][0].size  # none in the window: the run's "0 bars" row, as on Spark
        }
        for future in as_completed(futures):
            for row in future.result():
                statuses.append((row["symbol"], row["model"], row["status"], row["message"]))
                _write_rows(writer, row, plan.settings, plan.run_id, plan.issued_at, plan.seed)
        t_compute = time.perf_counter() - t0 - t_read
    if plan.registry is not None:
        from gbm_analysis.serving import learned_forecast_rows

        rows = learned_forecast_rows(
            plan.store, plan.registry, sorted(bars), plan.settings, as_of=plan.as_of
        )
        if rows:
            logger.info("adding %d learned-model forecasts", len(rows))
        for row in rows:
            statuses.append((row["symbol"], row["model"], row["status"], row["message"]))
            _write_rows(writer, row, plan.settings, plan.run_id, plan.issued_at, plan.seed)
    writer.drain()
    logger.info(
        "run %s: read %d bars in %.2fs, forecast and queued in %.2fs, %d rows written by %.2fs",
        plan.run_id,
        sum(len(s) for s, _ in bars.values()),
        t_read,
        t_compute,
        writer.n_rows,
        time.perf_counter() - t0,
    )
    return statuses
