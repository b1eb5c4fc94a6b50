"""HTTP API: the latest forecast and backtest per symbol as JSON (FastAPI; OpenAPI at ``/docs``).

``python -m gbm_analysis serve`` builds the store from the environment and runs uvicorn; tests
call :func:`create_app` with a store of their own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from gbm_analysis.exceptions import StorageError
from gbm_analysis.io import GbmStore
from schemas.markets import annualisation_for

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

#: how many days back the API looks for the newest forecast or backtest of a symbol
SEARCH_DAYS = 7
#: a symbol as Finnhub spells them (AAPL, BRK.B, BINANCE:BTCUSDT, OANDA:EUR_USD); anything else is
#: refused before it costs a query
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._^=-]{0,31}$"
#: distinct (endpoint, symbol) answers the cache keeps; the oldest go first
CACHE_ENTRIES = 1024

Symbol = Annotated[
    str, Path(pattern=SYMBOL_PATTERN, max_length=32, description="e.g. AAPL or BINANCE:BTCUSDT")
]
ModelName = Annotated[
    str | None,
    Query(pattern=r"^[a-z_]{1,32}$", description="one model, e.g. gbm or mlp (default: all)"),
]
SymbolOrAll = Annotated[
    str,
    Path(
        pattern=SYMBOL_PATTERN[:-1] + "|^[*]$",
        max_length=32,
        description="a symbol, or * for all symbols pooled",
    ),
]


class _StoreLimiter:
    """What stands between a request and Cassandra: each answer (found or 404) is kept for
    ``ttl_s``, at most CACHE_ENTRIES of them; a miss takes a token from a bucket refilled at
    ``reads_per_s`` (burst of as many), and none left means 429. A request costs up to
    SEARCH_DAYS + 1 queries, and distinct symbols would defeat the cache alone."""

    def __init__(self, ttl_s: float, reads_per_s: float, timer: Callable[[], float]) -> None:
        self.ttl_s, self.rate, self.timer = ttl_s, reads_per_s, timer
        self.answers: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self.tokens, self.refilled = reads_per_s, timer()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str], read: Callable[[], Any]) -> Any:
        now = self.timer()
        with self.lock:
            hit = self.answers.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
            if self.rate > 0:
                self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
                self.refilled = now
                if self.tokens < 1:
                    raise HTTPException(
                        status_code=429,
                        headers={"Retry-After": "1"},
                        detail="too many uncached requests; retry in a second",
                    )
                self.tokens -= 1
        value = read()
        if self.ttl_s > 0:
            with self.lock:
                self.answers[key] = (now, value)
                self.answers.move_to_end(key)
                while len(self.answers) > CACHE_ENTRIES:
                    self.answers.popitem(last=False)
        return value


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(
    store: GbmStore,
    *,
    clock: Callable[[], datetime] = _now,
    cache_ttl_s: float = 5.0,
    reads_per_s: float = 20.0,
    timer: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The FastAPI application over ``store``.

    :param store: where forecasts and backtests are read
    :param clock: current time, for the search window (tests may pin it)
    :param cache_ttl_s: seconds an answer is served from memory (0: no cache)
    :param reads_per_s: store reads (cache misses) per second before 429 (0: no limit)
    :param timer: monotonic seconds, for the cache and the rate limit (tests may drive it)
    """
    limiter = _StoreLimiter(cache_ttl_s, reads_per_s, timer)
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
        # The driver's message names hosts, ports and the keyspace: it goes to the log only,
        # under an id the caller can quote.
        request_id = uuid.uuid4().hex
        logger.error("request %s: %s %s: %s", request_id, request.method, request.url.path, exc)
        return JSONResponse(
            status_code=503,
            content={
                "detail": "the forecast store is unavailable; try again later",
                "request_id": request_id,
            },
            headers={"X-Request-ID": request_id},
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the process is up (does not touch Cassandra)."""
        return {"status": "ok"}

    @app.get("/forecast/{symbol}")
    def forecast(symbol: Symbol, model: ModelName = None) -> dict[str, Any]:
        """Newest run's forecast of ``symbol``: one entry per model with its parameters (or the
        reason it was skipped), its MLflow ``model_version`` and ``model_run_id`` (learned models)
        and its horizon steps stamped at their target time; ``?model=`` keeps one model."""
        answer = limiter.get(("forecast", symbol), lambda: _forecast(symbol))
        if answer is None:
            raise HTTPException(
                status_code=404,
                detail=f"unknown symbol {symbol!r}: no forecast in the last {SEARCH_DAYS} days",
            )
        if model is None:
            return answer
        chosen = [m for m in answer["models"] if m["model"] == model]
        if not chosen:
            have = ", ".join(m["model"] for m in answer["models"])
            raise HTTPException(
                status_code=404,
                detail=f"model {model!r} has no forecast of {symbol!r} in its newest run "
                f"(models: {have})",
            )
        return {**answer, "models": chosen}

    def _forecast(symbol: str) -> dict[str, Any] | None:
        runs = store.latest_runs(symbol, days_back=SEARCH_DAYS, now=clock())
        if not runs:
            return None  # cached like an answer: asking again costs nothing
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
    def backtest(symbol: SymbolOrAll) -> dict[str, Any]:
        """Newest backtest of ``symbol`` (``*`` pools every symbol): per model and step, band
        coverage with its binomial band and Kupiec p-value, pinball loss, CRPS and skill."""
        answer = limiter.get(("backtest", symbol), lambda: _backtest(symbol))
        if answer is None:
            raise HTTPException(
                status_code=404,
                detail=f"unknown symbol {symbol!r}: no backtest in the last {SEARCH_DAYS} days",
            )
        return answer

    def _backtest(symbol: str) -> dict[str, Any] | None:
        rows = store.latest_backtest(symbol, days_back=SEARCH_DAYS, now=clock())
        if not rows:
            return None
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
