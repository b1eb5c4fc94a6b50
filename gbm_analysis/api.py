"""HTTP API: the latest forecast and backtest per symbol as JSON (FastAPI; OpenAPI at ``/docs``).

``python -m gbm_analysis serve`` builds the store from the environment and runs uvicorn; tests
call :func:`create_app` with a store of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from gbm_analysis.exceptions import StorageError
from gbm_analysis.io import GbmStore
from schemas.markets import annualisation_for

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

#: how many days back the API looks for the newest forecast or backtest of a symbol
SEARCH_DAYS = 7


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(store: GbmStore, *, clock: Callable[[], datetime] = _now) -> FastAPI:
    """The FastAPI application over ``store``.

    :param store: where forecasts and backtests are read
    :param clock: current time, for the search window (tests may pin it)
    """
    app = FastAPI(
        title="GBM forecasts",
        version="1.0",
        description=(
            "Hourly Monte Carlo price forecasts per symbol (GBM, EWMA-t and historical "
            "simulation) and their backtest scores. Times are UTC; rates are per second of "
            "trading time; sigma_annualised follows the convention of the symbol's market, "
            "named in annualisation (252 d x 6.5 h for stocks, 365 d x 24 h for crypto); "
            "losses are in basis points of log return."
        ),
    )

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the process is up (does not touch Cassandra)."""
        return {"status": "ok"}

    @app.get("/forecast/{symbol}")
    def forecast(symbol: str) -> dict[str, Any]:
        """Newest run's forecast of ``symbol``: one entry per model with its parameters (or the
        reason it was skipped) and its horizon steps stamped at their target time."""
        runs = store.latest_runs(symbol, days_back=SEARCH_DAYS, now=clock())
        if not runs:
            raise HTTPException(
                status_code=404,
                detail=f"unknown symbol {symbol!r}: no forecast in the last {SEARCH_DAYS} days",
            )
        first = runs[0]
        all_steps = []
        if any(run["status"] == "ok" for run in runs):
            all_steps = store.forecast_steps(
                symbol, first["day"], first["issued_at"], first["run_id"]
            )
        models = []
        for run in runs:
            steps = [s for s in all_steps if s["model"] == run["model"]]
            models.append(
                {
                    **{k: v for k, v in run.items() if k not in ("symbol", "day", "run_id")},
                    **_annualised(symbol, run["sigma"]),
                    "steps": [{k: v for k, v in s.items() if k in _STEP_FIELDS} for s in steps],
                }
            )
        return {
            "symbol": symbol,
            "run_id": first["run_id"],
            "issued_at": first["issued_at"],
            "models": models,
        }

    @app.get("/backtest/{symbol}")
    def backtest(symbol: str) -> dict[str, Any]:
        """Newest backtest of ``symbol`` (``*`` pools every symbol): per model and step, band
        coverage with its binomial band and Kupiec p-value, pinball loss, CRPS and skill."""
        rows = store.latest_backtest(symbol, days_back=SEARCH_DAYS, now=clock())
        if not rows:
            raise HTTPException(
                status_code=404,
                detail=f"unknown symbol {symbol!r}: no backtest in the last {SEARCH_DAYS} days",
            )
        return {
            "symbol": symbol,
            "backtest_id": rows[0]["backtest_id"],
            "evaluated_at": rows[0]["evaluated_at"],
            "rows": [
                {k: v for k, v in r.items() if k not in ("symbol", "day", "backtest_id")}
                for r in rows
            ],
        }

    return app


def _annualised(symbol: str, sigma: float | None) -> dict[str, Any]:
    """The displayed annualised sigma, from the stored per-second sigma by the convention of the
    symbol's market, so runs stored before the convention (over calendar seconds) show the same
    figure as new ones."""
    convention = annualisation_for(symbol)
    return {
        "sigma_annualised": None if sigma is None else convention.annualise(sigma),
        "annualisation": convention.label,
    }


_STEP_FIELDS = frozenset(
    {"step", "target_ts", "horizon_s", "mean", "q05", "q25", "q50", "q75", "q95", "p_above"}
)
