"""Table names of ``cql/004_gbm.cql`` and ``cql/008_forecast_models.cql``: written by
``gbm_analysis``, read by dashboards; and the list columns that ``cql/010_gbm_frozen_lists.cql``
replaced, with the reading rule that spans both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "PATH_PRICES",
    "PATH_PRICES_BEFORE_010",
    "PERCENTILES",
    "PERCENTILES_BEFORE_010",
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

#: ``gbm_forecasts``: a step's 99 percentiles 1..99 (prices), one frozen cell (migration 010)
PERCENTILES = "percentile_prices"
#: the same, as one cell per element, in rows written before migration 010
PERCENTILES_BEFORE_010 = "percentiles"
#: ``gbm_paths``: a sample path's prices at steps 1..n, one frozen cell (migration 010)
PATH_PRICES = "path_prices"
#: the same, as one cell per element, in rows written before migration 010
PATH_PRICES_BEFORE_010 = "prices"


def stored_list(row: Mapping[str, Any], column: str, before_010: str) -> Sequence[float] | None:
    """A row's list from ``column``, or from ``before_010`` for a row written before migration
    010 (whose ``column`` is null).

    >>> stored_list({"percentile_prices": None, "percentiles": [1.0]}, PERCENTILES,
    ...             PERCENTILES_BEFORE_010)
    [1.0]
    >>> stored_list({"percentile_prices": [2.0], "percentiles": None}, PERCENTILES,
    ...             PERCENTILES_BEFORE_010)
    [2.0]
    """
    value = row.get(column)
    return row.get(before_010) if value is None else value
