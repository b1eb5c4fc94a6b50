"""``python -m gbm_analysis train``: the learned forecasters trained per symbol, logged to MLflow.

On Spark (the default): the 1-minute bars of the last ``train + calib + test`` window are read
from ``trades_agg_1m`` through the Cassandra connector and ``groupBy("symbol").applyInPandas`` runs
:func:`gbm_analysis.training.train_frame` on each symbol in parallel. The models being replaced
(each symbol's ``production`` versions) travel with the function, so each executor scores the new
and the old model on the same test window. The driver then logs every run and moves the aliases
(:class:`gbm_analysis.registry.Registry`): SQLite takes one writer at a time, so only the driver
writes. Submit it like the forecast job::

    SPARK_SUBMIT_MODE=1 spark-submit --master local[2] --driver-memory 1g \\
        --jars "$(ls .cache/jars/spark/*.jar | paste -sd,)" gbm_analysis/__main__.py train

``--bars-csv FILE`` trains from a file of 1-minute bars instead (columns ``symbol``, ``t_ms`` or
``window_start``, ``open``, ``high``, ``low``, ``close``, ``volume``; the Binance klines in the
shared data), symbol after symbol in this process, without Spark or Cassandra.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from gbm_analysis.exceptions import StorageError
from gbm_analysis.io import days_between
from gbm_analysis.leaderboard import ScoreKey, score_rows
from gbm_analysis.registry import Registry, RegistryResult
from gbm_analysis.training import (
    TRAIN_SCHEMA,
    TrainOutcome,
    TrainSettings,
    outcome_from_row,
    train_frame,
    train_symbol,
)
from schemas.contracts import TABLE_AGG_1M
from schemas.gbm_tables import TABLE_MODEL_SCORES
from schemas.runtime.spark import read_cassandra

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from gbm_analysis.io import GbmStore

__all__ = [
    "format_results",
    "read_bars_csv",
    "read_scores",
    "score_table_rows",
    "train_from_frame",
    "train_on_spark",
    "write_scores",
]

logger = logging.getLogger(__name__)


def read_bars_csv(path: str) -> pd.DataFrame:
    """1-minute bars from a CSV (gzip by extension), ``t`` in epoch seconds."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "t_ms" in frame.columns:
        frame["t"] = frame["t_ms"] // 1000
    return frame


def _incumbents(
    registry: Registry, symbols: Iterable[str], models: Sequence[str]
) -> dict[tuple[str, str], bytes]:
    import cloudpickle

    out = {}
    for symbol in symbols:
        for model in models:
            found = registry.production(model, symbol)
            if found is not None:
                out[(symbol, model)] = cloudpickle.dumps(found[2])
    return out


Result = tuple[TrainOutcome, RegistryResult | None]


def _log_all(registry: Registry, outcomes: Iterable[TrainOutcome]) -> list[Result]:
    """Log each trained model (status ok); baselines (``scored``) and skips are passed through."""
    results: list[Result] = []
    for outcome in outcomes:
        if outcome.status not in ("ok", "scored"):
            logger.warning(
                "%s %s: %s (%s)", outcome.symbol, outcome.model, outcome.status, outcome.message
            )
        results.append((outcome, registry.log(outcome) if outcome.ok else None))
    return results


def score_table_rows(results: Iterable[Result], *, evaluated_at: datetime) -> list[dict[str, Any]]:
    """``model_scores`` rows of every scored outcome, with the registered version."""
    rows: list[dict[str, Any]] = []
    for outcome, logged in results:
        if outcome.scores is None:
            continue
        key = ScoreKey(outcome.symbol, outcome.model, logged.version if logged else None)
        rows.extend(
            score_rows(
                key,
                outcome.scores,
                evaluated_at=evaluated_at,
                window_start=datetime.fromtimestamp(outcome.windows["test_start"], UTC),
                window_end=datetime.fromtimestamp(outcome.windows["test_end"], UTC),
            )
        )
    return rows


def train_from_frame(
    bars: pd.DataFrame, settings: TrainSettings, registry: Registry
) -> list[Result]:
    """Train every symbol of ``bars`` in this process (no Spark), newest window per symbol."""
    symbols = sorted(set(bars["symbol"]))
    if settings.symbols:
        symbols = [s for s in symbols if s in settings.symbols]
    results: list[Result] = []
    for symbol in symbols:
        mine = bars[bars["symbol"] == symbol]
        incumbents = {
            model: pickle.loads(blob)  # noqa: S301 - our own registry's models
            for (_, model), blob in _incumbents(registry, [symbol], settings.models).items()
        }
        logger.info("%s: training %s on %d bars", symbol, ",".join(settings.models), len(mine))
        results.extend(_log_all(registry, train_symbol(symbol, mine, settings, incumbents)))
    return results


def train_on_spark(
    spark: SparkSession,
    store: GbmStore,
    settings: TrainSettings,
    registry: Registry,
    *,
    now: datetime,
) -> list[Result]:
    """Train every symbol with 1-minute bars in the window ending at ``now``, in parallel."""
    from pyspark.sql import functions as F

    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=settings.history_minutes)
    partitions = store.bar_partitions(days_between(start, end), TABLE_AGG_1M)
    if settings.symbols:
        partitions = [p for p in partitions if p[0] in settings.symbols]
    symbols = sorted({s for s, _ in partitions})
    logger.info("training on %d symbols' 1-minute bars from %s to %s", len(symbols), start, end)
    if not symbols:
        return []
    bars = (
        read_cassandra(spark, store.keyspace, TABLE_AGG_1M)
        .where(F.col("symbol").isin(symbols))
        .where(F.col("day").isin(sorted({d for _, d in partitions})))
        .where((F.col("window_start") >= F.lit(start)) & (F.col("window_end") <= F.lit(end)))
        .select("symbol", "window_start", "open", "high", "low", "close", "volume", "vwap")
    )
    incumbents = _incumbents(registry, symbols, settings.models)
    body = partial(train_frame, settings=settings, incumbents=incumbents)
    rows = bars.groupBy("symbol").applyInPandas(body, schema=TRAIN_SCHEMA).collect()
    outcomes = sorted(
        (outcome_from_row(r.asDict()) for r in rows), key=lambda o: (o.symbol, o.model)
    )
    results = _log_all(registry, outcomes)
    write_scores(store, score_table_rows(results, evaluated_at=now))
    return results


def write_scores(store: GbmStore, rows: Sequence[Mapping[str, Any]]) -> None:
    """Upsert ``model_scores`` rows (the latest evaluation per source, symbol, model, step)."""
    from cassandra.concurrent import execute_concurrent_with_args

    if not rows:
        return
    columns = list(rows[0])
    stmt = store.session.prepare(
        f"INSERT INTO {store.keyspace}.{TABLE_MODEL_SCORES} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    try:
        execute_concurrent_with_args(
            store.session, stmt, [tuple(r[c] for c in columns) for r in rows], concurrency=16
        )
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "cassandra":
            raise
        raise StorageError(f"writing {TABLE_MODEL_SCORES}: {exc}") from exc


def read_scores(store: GbmStore, source: str = "walk_forward") -> list[dict[str, Any]]:
    """Every ``model_scores`` row of ``source``."""
    rows = store._execute(  # noqa: SLF001
        "model scores",
        f"SELECT * FROM {store.keyspace}.{TABLE_MODEL_SCORES} WHERE source = %s",
        (source,),
    )
    return [row._asdict() for row in rows]


def format_results(results: Sequence[Result]) -> str:
    """One line per trained (symbol, model): version, CRPS against the production version."""
    lines = [f"{'symbol':<20} {'model':<8} {'version':>7} {'CRPS bps':>9} {'prod CRPS':>9}  result"]
    for outcome, r in results:
        if r is None:
            if outcome.status != "scored":
                lines.append(
                    f"{outcome.symbol:<20} {outcome.model:<8} {'-':>7} {'-':>9} {'-':>9}  "
                    f"{outcome.status}: {outcome.message}"
                )
            continue
        old = f"{r.incumbent_crps:9.3f}" if r.incumbent_version else f"{'-':>9}"
        verdict = "production" if r.promoted else f"kept v{r.incumbent_version}"
        lines.append(
            f"{r.symbol:<20} {r.model:<8} {'v' + str(r.version):>7} {r.crps:9.3f} {old}  {verdict}"
        )
    return "\n".join(lines)
