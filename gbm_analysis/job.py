"""The forecast run on Spark: read bars, forecast per symbol in parallel, write the results.

Per run: discover the (symbol, day) partitions of ``trades_agg_5s`` in the lookback window, read
them through the Cassandra connector (partition keys pushed down), ``groupBy("symbol")
.applyInPandas`` the pure :func:`gbm_analysis.forecast.forecast_frame`, and explode its one row per
(symbol, model) into ``gbm_forecast_runs``, ``gbm_forecasts`` and ``gbm_paths``. A run row goes to
``gbm_runs`` last, so a run listed there is complete.

Submit with::

    spark-submit --master local[2] --jars "$(ls .cache/jars/spark/*.jar | paste -sd,)" \\
        gbm_analysis/__main__.py run --once
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import forecast_frame
from gbm_analysis.io import GbmStore, days_between, new_run_id, to_utc
from schemas.contracts import TABLE_AGG_5S
from schemas.gbm_tables import TABLE_GBM_FORECAST_RUNS, TABLE_GBM_FORECASTS, TABLE_GBM_PATHS
from schemas.runtime.spark import read_cassandra, write_cassandra

if TYPE_CHECKING:
    from datetime import date

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


def _tables(
    result: DataFrame, settings: GbmSettings, run_id: str, issued_at: datetime, seed: int
) -> dict[str, DataFrame]:
    from pyspark.sql import functions as F

    def nan_null(name: str) -> Column:
        return F.nanvl(F.col(name), F.lit(None).cast("double")).alias(name)

    n_pct = 99
    keys = [
        F.col("symbol"),
        F.lit(issued_at.astimezone(UTC).date()).alias("day"),
        F.lit(issued_at).alias("issued_at"),
        F.lit(run_id).alias("run_id"),
        F.col("model"),
    ]
    as_of = F.when(~F.isnan("as_of"), F.timestamp_seconds(F.col("as_of")))
    learned = ["model_version", "model_run_id"] if "model_version" in result.columns else []
    runs = result.select(
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
    ok = result.where(F.col("status") == "ok")
    steps = ok.select(
        *keys,
        "as_of",
        "last_price",
        "mu",
        "sigma",
        "sigma_annualised",
        "annualisation",
        "n_bars",
        "p_above",
        "percentiles",
        F.posexplode("mean").alias("i", "mean"),
    )

    def pct(level: int) -> Column:
        return F.element_at("percentiles", F.col("i") * n_pct + level).alias(f"q{level:02d}")

    forecasts = steps.select(
        *(F.col(c) for c in ("symbol", "day", "issued_at", "run_id", "model")),
        (F.col("i") + 1).alias("step"),
        F.timestamp_seconds(F.col("as_of") + (F.col("i") + 1) * settings.step_seconds).alias(
            "target_ts"
        ),
        ((F.col("i") + 1) * settings.step_seconds).alias("horizon_s"),
        F.timestamp_seconds(F.col("as_of")).alias("as_of"),
        "last_price",
        "mu",
        "sigma",
        "sigma_annualised",
        "annualisation",
        "n_bars",
        "mean",
        pct(5),
        pct(25),
        pct(50),
        pct(75),
        pct(95),
        F.element_at("p_above", F.col("i") + 1).alias("p_above"),
        F.slice("percentiles", F.col("i") * n_pct + 1, n_pct).alias("percentiles"),
    )
    tables = {TABLE_GBM_FORECAST_RUNS: runs, TABLE_GBM_FORECASTS: forecasts}
    if settings.n_sample_paths:
        paths = (
            ok.where(F.size("sample") > 0)
            .select(  # learned models draw no paths
                *keys,
                "as_of",
                "sample",
                F.explode(F.sequence(F.lit(0), F.lit(settings.n_sample_paths - 1))).alias("path"),
            )
            .select(
                "symbol",
                "day",
                "issued_at",
                "run_id",
                "model",
                "path",
                F.timestamp_seconds(F.col("as_of")).alias("as_of"),
                F.lit(settings.step_seconds).alias("step_seconds"),
                F.slice("sample", F.col("path") * settings.n_steps + 1, settings.n_steps).alias(
                    "prices"
                ),
            )
        )
        tables[TABLE_GBM_PATHS] = paths
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
    spark: SparkSession,
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

    :param spark: a session with the Cassandra connector (``schemas.runtime.spark.build_session``)
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
    partitions = store.bar_partitions(days_between(start, as_of))
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
        bars = _read_bars(spark, store.keyspace, partitions, start, as_of)
        result = (
            bars.groupBy("symbol")
            .applyInPandas(
                partial(forecast_frame, settings=settings, run_seed=seed), schema=FORECAST_SCHEMA
            )
            .cache()
        )
        if registry is not None:
            result = _with_learned(spark, result, store, registry, found, settings, as_of)
        progress = _Progress(spark)
        progress.start()
        try:
            for table, frame in _tables(result, settings, run_id, issued_at, seed).items():
                logger.info("run %s: writing %s", run_id, table)
                write_cassandra(frame, store.keyspace, table)
            statuses = [
                (r.symbol, r.model, r.status, r.message)
                for r in result.select("symbol", "model", "status", "message").collect()
            ]
        finally:
            progress.stop()
            result.unpersist()
    # a symbol asked for by name, or with bars only outside the window, still gets a row saying
    # why it has no forecast
    covered = {symbol for symbol, *_ in statuses}
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
        statuses.extend((symbol, m, "too_few_bars", message) for m in settings.models)
    statuses.sort()
    for i, (symbol, model, status, message) in enumerate(statuses, start=1):
        if status == "ok":
            logger.info("[%d/%d] %s %s: ok", i, len(statuses), symbol, model)
        else:
            logger.warning(
                "[%d/%d] %s %s: %s (%s)", i, len(statuses), symbol, model, status, message
            )
    duration = time.perf_counter() - started
    n_ok_symbols = len({s for s, _, st, _ in statuses if st == "ok"})
    store.write_run(
        run_id=run_id,
        issued_at=issued_at,
        seed=seed,
        settings=settings,
        n_symbols=len({s for s, *_ in statuses}),
        n_ok=n_ok_symbols,
        n_skipped=len({s for s, *_ in statuses}) - n_ok_symbols,
        duration_s=duration,
    )
    return RunResult(
        run_id=run_id, issued_at=issued_at, seed=seed, statuses=statuses, duration_s=duration
    )
