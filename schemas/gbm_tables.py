"""Table names of ``cql/004_gbm.cql`` and ``cql/008_forecast_models.cql``: written by
``gbm_analysis``, read by dashboards."""

from __future__ import annotations

__all__ = [
    "TABLE_GBM_BACKTEST",
    "TABLE_GBM_FORECASTS",
    "TABLE_GBM_FORECAST_RUNS",
    "TABLE_GBM_PATHS",
    "TABLE_GBM_RUNS",
    "TABLE_MODEL_DRIFT",
    "TABLE_MODEL_SCORES",
]

TABLE_GBM_RUNS = "gbm_runs"
TABLE_GBM_FORECAST_RUNS = "gbm_forecast_runs"
TABLE_GBM_FORECASTS = "gbm_forecasts"
TABLE_GBM_PATHS = "gbm_paths"
TABLE_GBM_BACKTEST = "gbm_backtest"
TABLE_MODEL_SCORES = "model_scores"
TABLE_MODEL_DRIFT = "model_drift"
