"""The hourly forecast with the registered learned models.

The forecast run (:func:`gbm_analysis.job.run_forecasts`) calls :func:`learned_forecast_rows` after
the GBM family: for each symbol of the run and each learned model whose ``production`` alias is
set in the MLflow registry, the newest 1-minute bars (``trades_agg_1m``, the 3 hours before the
run's as-of time) go through the registered forecaster, and the result joins the run's rows in
``gbm_forecast_runs``/``gbm_forecasts`` as model ``mlp``/``xgb``/``prophet`` with its MLflow version
and run id. Nothing happens while the registry does not exist (no ``train`` yet), so the GBM
family runs exactly as before.

Learned models forecast one-minute steps; with another ``GBM_STEP`` they are skipped with a
status saying so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gbm_analysis.config import GbmSettings
from gbm_analysis.learned import (
    LEARNED_MODELS,
    STEP_SECONDS,
    Forecaster,
    prepare_minutes,
    to_summary,
)
from gbm_analysis.model import PathSummary
from schemas.contracts import TABLE_AGG_1M
from schemas.markets import annualisation_for

if TYPE_CHECKING:
    import pandas as pd

    from gbm_analysis.io import GbmStore
    from gbm_analysis.registry import Registry

__all__ = ["HISTORY", "learned_forecast_rows", "registry_if_trained", "summary_row"]

logger = logging.getLogger(__name__)

#: 1-minute bars read per symbol: the xgb features need 60 minutes, the mlp 30
HISTORY = timedelta(hours=3)


def registry_if_trained(tracking_uri: str, artifact_root: str) -> Registry | None:
    """The registry, or None while its SQLite file does not exist (nothing trained)."""
    if tracking_uri.startswith("sqlite:///"):
        if not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
            return None
    from gbm_analysis.registry import Registry

    return Registry(tracking_uri, artifact_root)


def _minute_bars(store: GbmStore, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for day in sorted({start.date(), end.date()}):
        rows += store._execute(  # noqa: SLF001 - the run's driver-side session
            f"1-minute bars {symbol}",
            f"SELECT window_start, window_end, open, high, low, close, volume, vwap "
            f"FROM {store.keyspace}.{TABLE_AGG_1M} WHERE symbol = %s AND day = %s "
            "AND window_start >= %s AND window_start < %s",
            (symbol, day, start, end),
        )
    frame = pd.DataFrame([r._asdict() for r in rows])
    if frame.empty:
        return frame
    frame = frame[pd.to_datetime(frame["window_end"], utc=True) <= pd.Timestamp(end)]
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame


def summary_row(
    symbol: str,
    model: str,
    *,
    status: str,
    message: str,
    as_of: float,
    last_price: float,
    n_bars: int,
    summary: PathSummary | None,
    version: int | None,
    run_id: str | None,
) -> dict[str, Any]:
    """One row in :data:`gbm_analysis.forecast.FORECAST_COLUMNS` plus the MLflow version/run."""
    nan = math.nan
    sigma = nan
    if summary is not None:
        # the spread of the first step's central 68% as a per-second volatility, for display
        q16, q84 = summary.quantile(0.16)[0], summary.quantile(0.84)[0]
        sigma = float(np.log(q84 / q16) / 2 / math.sqrt(STEP_SECONDS))
    convention = annualisation_for(symbol)
    return {
        "symbol": symbol,
        "model": model,
        "status": status,
        "message": message,
        "as_of": as_of,
        "last_price": last_price,
        "mu": nan,
        "sigma": sigma,
        "sigma_annualised": convention.annualise(sigma) if math.isfinite(sigma) else nan,
        "annualisation": convention.label,
        "sigma_stderr": nan,
        "dof": nan,
        "n_bars": n_bars,
        "n_returns": max(n_bars - 1, 0),
        "n_rejected": 0,
        "n_segments": 1 if n_bars else 0,
        "mean": summary.mean.tolist() if summary else [],
        "p_above": summary.p_above.tolist() if summary else [],
        "percentiles": summary.percentiles.ravel().tolist() if summary else [],
        "sample": [],
        "hist_edges": summary.hist_edges.tolist() if summary else [],
        "hist_counts": summary.hist_counts.tolist() if summary else [],
        "model_version": version,
        "model_run_id": run_id,
    }


def learned_forecast_rows(
    store: GbmStore,
    registry: Registry,
    symbols: Iterable[str],
    settings: GbmSettings,
    *,
    as_of: datetime,
) -> list[dict[str, Any]]:
    """Rows of every registered production model for ``symbols`` at ``as_of``."""
    end = as_of.astimezone(UTC)
    rows: list[dict[str, Any]] = []
    for symbol in symbols:
        loaded: dict[str, tuple[int, str, Forecaster]] = {}
        for m in LEARNED_MODELS:
            found = registry.production(m, symbol)
            if found is not None:
                loaded[m] = found
        if not loaded:
            continue
        bars = _minute_bars(store, symbol, end - HISTORY, end)
        minutes = prepare_minutes(bars) if not bars.empty else None
        for model, (version, run_id, forecaster) in sorted(loaded.items()):
            message = ""
            n = 0 if minutes is None else len(minutes)
            if settings.step_seconds != STEP_SECONDS:
                status = "invalid_data"
                message = f"learned models forecast 60 s steps; GBM_STEP={settings.step_seconds}s"
            elif minutes is None or n < 61:
                status = "too_few_bars"
                message = f"{n} one-minute bars in the {HISTORY} before {end.isoformat()}, need 61"
            if message or minutes is None:
                rows.append(
                    summary_row(
                        symbol,
                        model,
                        status=status,
                        message=message,
                        as_of=math.nan,
                        last_price=math.nan,
                        n_bars=n,
                        summary=None,
                        version=version,
                        run_id=run_id,
                    )
                )
                continue
            last = len(minutes) - 1
            s0 = float(minutes["close"].iloc[last])
            q = forecaster.predict(minutes, np.array([last]))[0][: settings.n_steps]
            rows.append(
                summary_row(
                    symbol,
                    model,
                    status="ok",
                    message="",
                    as_of=float(minutes["t"].iloc[last] + STEP_SECONDS),
                    last_price=s0,
                    n_bars=len(minutes),
                    summary=to_summary(q, s0, bins=settings.histogram_bins),
                    version=version,
                    run_id=run_id,
                )
            )
    return rows
