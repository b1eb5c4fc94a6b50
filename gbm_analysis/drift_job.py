"""``python -m gbm_analysis drift``: recent 1-minute bars against each production model's
training window, stored in ``model_drift`` and exported for Prometheus.

For every symbol with a registered ``production`` learned model, the bars of the model's training
window (its MLflow run's ``window.train_start``/``train_end``) are compared with the last
``GBM_DRIFT_WINDOW`` (6 h) of bars (:mod:`gbm_analysis.drift`). Each (symbol, model, feature) check
is a ``model_drift`` row; the latest gauges are written in Prometheus' text format to
``$STATE_DIR/metrics/forecast_drift.prom`` (a node-exporter textfile collector reads that folder).

A symbol with any PSI at or past the threshold (:func:`gbm_analysis.drift.retrain_symbols`) is
trained again at once, by this job (``train`` restricted to those symbols; ``--no-retrain`` only
checks): its rows say ``retrain = true`` and the gauge ``forecast_drift_retrain`` is 1. The new
versions replace production only if they score better on the latest test window, as always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gbm_analysis.drift import DriftResult, check_drift, drift_registry, retrain_symbols
from gbm_analysis.exceptions import StorageError
from gbm_analysis.learned import LEARNED_MODELS, prepare_minutes
from gbm_analysis.serving import _minute_bars
from schemas.gbm_tables import TABLE_MODEL_DRIFT

if TYPE_CHECKING:
    from gbm_analysis.io import GbmStore
    from gbm_analysis.registry import Registry

__all__ = [
    "DriftCheck",
    "check_and_retrain",
    "format_drift",
    "run_drift",
    "write_drift",
    "write_textfile",
]

logger = logging.getLogger(__name__)


def _bars(store: GbmStore, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    parts = []
    day = start
    while day < end:  # one day at a time: _minute_bars reads the days its bounds touch
        nxt = min(end, datetime.combine(day.date() + timedelta(days=1), datetime.min.time(), UTC))
        part = _minute_bars(store, symbol, day, nxt)
        if not part.empty:
            parts.append(part)
        day = nxt
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def run_drift(
    store: GbmStore,
    registry: Registry,
    symbols: Iterable[str],
    *,
    now: datetime,
    recent: timedelta,
    threshold: float,
) -> tuple[list[DriftResult], dict[tuple[str, str], int]]:
    """Check every production model of ``symbols``; bars newer than ``now`` are not used.

    :returns: the results and the production version checked per (symbol, model)
    """
    out: list[DriftResult] = []
    versions: dict[tuple[str, str], int] = {}
    for symbol in symbols:
        recent_bars = _bars(store, symbol, now - recent, now)
        if recent_bars.empty:
            logger.warning("%s: no 1-minute bars in the last %s, no drift check", symbol, recent)
            continue
        for model in LEARNED_MODELS:
            found = registry.production(model, symbol)
            if found is None:
                continue
            versions[(symbol, model)] = found[0]
            windows = registry.run_windows(found[1])
            start = datetime.fromtimestamp(windows["train_start"], UTC)
            end = datetime.fromtimestamp(windows["train_end"], UTC)
            reference = _bars(store, symbol, start, end)
            if reference.empty:
                logger.warning("%s %s: the training window's bars are gone", symbol, model)
                continue
            out.extend(
                check_drift(
                    symbol,
                    model,
                    prepare_minutes(reference),
                    prepare_minutes(recent_bars),
                    threshold=threshold,
                )
            )
    return out, versions


def write_drift(
    store: GbmStore,
    results: Sequence[DriftResult],
    *,
    checked_at: datetime,
    versions: dict[tuple[str, str], int],
    retrained: Collection[str] = (),
) -> None:
    """One ``model_drift`` row per result; ``retrain`` is true on the rows of ``retrained``."""
    stmt = (
        f"INSERT INTO {store.keyspace}.{TABLE_MODEL_DRIFT} (symbol, checked_at, model, feature, "
        "model_version, psi, ks_stat, ks_p, threshold, drifted, n_reference, n_recent, retrain) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    for r in results:
        try:
            store.session.execute(
                stmt,
                (
                    r.symbol,
                    checked_at,
                    r.model,
                    r.feature,
                    versions.get((r.symbol, r.model)),
                    r.psi,
                    r.ks_stat,
                    r.ks_p,
                    r.threshold,
                    r.drifted,
                    r.n_reference,
                    r.n_recent,
                    r.symbol in retrained,
                ),
            )
        except Exception as exc:
            if type(exc).__module__.split(".")[0] != "cassandra":
                raise
            raise StorageError(f"writing {TABLE_MODEL_DRIFT}: {exc}") from exc


def write_textfile(
    results: Sequence[DriftResult], path: Path, retrained: Collection[str] = ()
) -> None:
    """The gauges in Prometheus' text format (written to a temporary file, then renamed)."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), drift_registry(list(results), retrained))


@dataclass(frozen=True)
class DriftCheck:
    results: list[DriftResult]
    versions: dict[tuple[str, str], int]
    #: symbols whose check triggered a retrain (empty with ``retrain=None``)
    retrained: list[str]


def check_and_retrain(
    store: GbmStore,
    registry: Registry,
    symbols: Iterable[str],
    *,
    now: datetime,
    recent: timedelta,
    threshold: float,
    textfile: Path,
    retrain: Callable[[DriftCheck], object] | None,
) -> DriftCheck:
    """The drift job: check every production model of ``symbols``, store the rows and the
    gauges, then call ``retrain`` (None: check only) with the check when a symbol's PSI crossed
    ``threshold``; ``check.retrained`` names those symbols."""
    results, versions = run_drift(
        store, registry, symbols, now=now, recent=recent, threshold=threshold
    )
    check = DriftCheck(results, versions, retrain_symbols(results) if retrain is not None else [])
    write_drift(store, results, checked_at=now, versions=versions, retrained=check.retrained)
    write_textfile(results, textfile, check.retrained)
    if check.retrained and retrain is not None:
        logger.info("drift past PSI %.3g: retraining %s", threshold, ", ".join(check.retrained))
        retrain(check)
    return check


def format_drift(results: Sequence[DriftResult]) -> str:
    if not results:
        return "no production model to check (run `python -m gbm_analysis train` first)"
    lines = [f"{'symbol':<20} {'model':<8} {'feature':<11} {'PSI':>7} {'KS p':>9}  verdict"]
    for r in results:
        verdict = "DRIFT (PSI: retrain)" if r.psi_exceeded else "drift (KS)" if r.drifted else "ok"
        lines.append(
            f"{r.symbol:<20} {r.model:<8} {r.feature:<11} {r.psi:7.3f} {r.ks_p:9.2g}  {verdict}"
        )
    return "\n".join(lines)
