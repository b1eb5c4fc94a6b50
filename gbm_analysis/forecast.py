"""Per-symbol forecast: bars in, one result per model out. Pure (no I/O, no clock).

The Spark job calls :func:`forecast_frame` once per symbol inside ``applyInPandas``; the same
function runs without Spark in tests and benchmarks.

Seeds: the run stores one seed. Each (symbol, model) draws from an SFC64 generator seeded with
``SeedSequence(run_seed, spawn_key=(crc32(symbol), model_index))``, so a symbol's numbers do not
depend on which executor handles it or on which other symbols are in the run. SFC64 (Chris
Doty-Humphrey's small fast chaotic generator, which passes PractRand and BigCrush as numpy's
default PCG64 does) draws the float64 uniforms of the normal and Student-t innovations for 0.7x
PCG64's CPU: about 3 ms of a symbol's 45 ms. Runs stored before it came in (the same seed drew
from PCG64, and the innovations by other methods) are not reproduced to the bit by this
version; their distributions are the same.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from gbm_analysis.config import MODEL_NAMES, GbmSettings
from gbm_analysis.exceptions import DataError
from gbm_analysis.model import (
    PathSummary,
    ReturnSeries,
    StepDraws,
    bootstrap_step_draws,
    centre_step_returns,
    estimate,
    estimate_ewma,
    gbm_step_draws,
    grid_log_returns,
    step_log_returns,
    summarise_draws,
    summarise_log_paths,
)
from gbm_analysis.seasonal import block_log_paths, seasonal_blocks
from schemas.markets import annualisation_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORECAST_COLUMNS",
    "ModelForecast",
    "forecast_frame",
    "forecast_row",
    "forecast_symbol",
    "generator_for",
]

logger = logging.getLogger(__name__)

STATUS_OK = "ok"


@dataclass(frozen=True)
class ModelForecast:
    """One model's forecast for one symbol, or the reason there is none (``status != "ok"``).

    Rates are per second of trading time; ``as_of`` is the end of the last bar (epoch seconds,
    event time), and step ``k`` (1-based) targets ``as_of + k * step_seconds``.
    ``sigma_annualised`` follows the convention of the symbol's market, which ``annualisation``
    names (``252 d x 6.5 h`` for a stock, ``365 d x 24 h`` for crypto; :mod:`schemas.markets`).
    """

    symbol: str
    model: str
    status: str
    message: str
    as_of: float
    last_price: float
    mu: float
    sigma: float
    sigma_annualised: float
    annualisation: str
    sigma_stderr: float
    dof: float
    n_bars: int
    n_returns: int
    n_rejected: int
    n_segments: int
    summary: PathSummary | None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def generator_for(run_seed: int, symbol: str, model: str) -> np.random.Generator:
    """The generator of one (symbol, model) in a run.

    >>> a = generator_for(1, "AAPL", "gbm").standard_normal()
    >>> a == generator_for(1, "AAPL", "gbm").standard_normal() != generator_for(1, "AAPL",
    ...     "ewma_t").standard_normal()
    True
    """
    key = (zlib.crc32(symbol.encode("utf-8")), MODEL_NAMES.index(model))
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(run_seed, spawn_key=key)))


def _failed(symbol: str, model: str, exc: DataError, series: ReturnSeries | None) -> ModelForecast:
    nan = math.nan
    return ModelForecast(
        symbol=symbol,
        model=model,
        status=exc.status,
        message=str(exc),
        as_of=series.last_end if series else nan,
        last_price=series.last_price if series else nan,
        mu=nan,
        sigma=nan,
        sigma_annualised=nan,
        annualisation=annualisation_for(symbol).label,
        sigma_stderr=nan,
        dof=nan,
        n_bars=series.n_bars if series else 0,
        n_returns=int(series.returns.size) if series else 0,
        n_rejected=series.n_rejected if series else 0,
        n_segments=series.n_segments if series else 0,
        summary=None,
    )


def _one_model(
    symbol: str,
    model: str,
    series: ReturnSeries,
    settings: GbmSettings,
    run_seed: int,
    long_series: ReturnSeries | None = None,
) -> ModelForecast:
    rng = generator_for(run_seed, symbol, model)
    s0 = series.last_price
    n_steps, n_paths = settings.n_steps, settings.n_paths
    dt = float(settings.step_seconds)
    stderr = dof = math.nan
    n_sample, bins = settings.n_sample_paths, settings.histogram_bins
    # the GBM family's steps, summarised below as they are drawn, a few steps at a time;
    # seasonal_fhs draws whole paths (blocks of history) and is summarised in its branch
    draws: StepDraws | None = None
    if model == "gbm":
        est = estimate(series, drift=settings.drift)
        mu, sigma, stderr = est.mu, est.sigma, est.sigma_stderr
        draws = gbm_step_draws(mu, sigma, dt, rng)
    elif model == "ewma_t":
        ewma = estimate_ewma(
            series,
            half_life_seconds=settings.ewma_half_life_seconds,
            step_seconds=settings.step_seconds,
            drift=settings.drift,
            dof=settings.t_dof,
        )
        mu, sigma, dof = ewma.mu, ewma.sigma, ewma.dof
        draws = gbm_step_draws(mu, sigma, dt, rng, dof=dof)
    elif model == "seasonal_fhs":
        blocks = seasonal_blocks(
            long_series or series,
            bar_seconds=settings.bar_seconds,
            step_seconds=settings.step_seconds,
            n_steps=n_steps,
            half_life_seconds=settings.ewma_half_life_seconds,
            drift=settings.drift,
        )
        log_paths = block_log_paths(blocks, n_paths, rng, chunk_paths=settings.chunk_paths)
        summary = summarise_log_paths(log_paths, s0, n_sample=n_sample, bins=bins)
        mu = (
            _arithmetic_drift(blocks.cumulative[:, -1], settings.horizon_seconds)
            if settings.drift != "zero"
            else 0.0
        )
        sigma = blocks.sigma
    else:  # hist_sim: bootstrap of overlapping historical step returns, drift as GBM_DRIFT says
        raw = step_log_returns(series, step_bars=settings.step_seconds // settings.bar_seconds)
        hist = centre_step_returns(raw, drift=settings.drift)
        draws = bootstrap_step_draws(hist, rng)
        # arithmetic drift per second, E[S(t+d)] = S(t) exp(mu d), as the GBM's mu (0 under zero)
        mu = _arithmetic_drift(hist, settings.step_seconds) if settings.drift != "zero" else 0.0
        sigma = float(hist.std(ddof=1) / math.sqrt(settings.step_seconds))
    if draws is not None:
        summary = summarise_draws(draws, n_steps, n_paths, s0, n_sample=n_sample, bins=bins)
    convention = annualisation_for(symbol)
    return ModelForecast(
        symbol=symbol,
        model=model,
        status=STATUS_OK,
        message="",
        as_of=series.last_end,
        last_price=s0,
        mu=mu,
        sigma=sigma,
        sigma_annualised=convention.annualise(sigma),
        annualisation=convention.label,
        sigma_stderr=stderr,
        dof=dof,
        n_bars=series.n_bars,
        n_returns=int(series.returns.size),
        n_rejected=series.n_rejected,
        n_segments=series.n_segments,
        summary=summary,
    )


def _arithmetic_drift(step_returns: NDArray[np.float64], step_seconds: int) -> float:
    top = float(step_returns.max())
    return (top + math.log(float(np.mean(np.exp(step_returns - top))))) / step_seconds


def forecast_symbol(
    symbol: str,
    window_start: NDArray[np.float64],
    close: NDArray[np.float64],
    settings: GbmSettings,
    run_seed: int,
    *,
    family_from: float | None = None,
) -> list[ModelForecast]:
    """Run every configured model on one symbol's bars.

    Thin or bad data never raises: each model gets a result whose ``status`` says why it was
    skipped (``too_few_bars``, ``constant_price``, ``invalid_data``) and whose ``message`` is a
    one-line explanation naming the symbol's numbers.

    :param symbol: the symbol, used for the seed and the messages
    :param window_start: bar start times, epoch seconds
    :param close: bar closes
    :param settings: the run's settings
    :param run_seed: the run's seed
    :param family_from: bars starting before this (epoch seconds) are history for
        ``seasonal_fhs`` only (``GBM_SEASONAL_HISTORY``); the other models use the rest, their
        ``GBM_LOOKBACK`` window. None: every model uses every bar.
    """
    starts = np.asarray(window_start, dtype=np.float64)
    closes = np.asarray(close, dtype=np.float64)
    long_series: ReturnSeries | None = None
    if family_from is not None and "seasonal_fhs" in settings.models:
        recent = starts >= family_from
        try:
            long_series = _grid(starts, closes, settings)
        except DataError:
            long_series = None  # the recent window's own error is reported below
        starts, closes = starts[recent], closes[recent]
    elif family_from is not None:
        recent = starts >= family_from
        starts, closes = starts[recent], closes[recent]
    try:
        series = _grid(starts, closes, settings)
    except DataError as exc:
        logger.warning("symbol %s: skipped, %s", symbol, exc)
        return [_failed(symbol, model, exc, None) for model in settings.models]
    if series.n_rejected:
        logger.warning(
            "symbol %s: %d bars with a NaN or non-positive close were left out",
            symbol,
            series.n_rejected,
        )
    results = []
    for model in settings.models:
        try:
            results.append(_one_model(symbol, model, series, settings, run_seed, long_series))
        except DataError as exc:
            logger.warning("symbol %s model %s: skipped, %s", symbol, model, exc)
            results.append(_failed(symbol, model, exc, series))
    return results


def _grid(
    starts: NDArray[np.float64], closes: NDArray[np.float64], settings: GbmSettings
) -> ReturnSeries:
    return grid_log_returns(
        starts,
        closes,
        bar_seconds=settings.bar_seconds,
        max_gap_seconds=settings.max_gap_seconds,
        min_bars=settings.min_bars,
    )


#: columns of :func:`forecast_frame`, one row per (symbol, model); arrays are flattened row-major
FORECAST_COLUMNS: tuple[str, ...] = (
    "symbol",
    "model",
    "status",
    "message",
    "as_of",
    "last_price",
    "mu",
    "sigma",
    "sigma_annualised",
    "annualisation",
    "sigma_stderr",
    "dof",
    "n_bars",
    "n_returns",
    "n_rejected",
    "n_segments",
    "mean",
    "p_above",
    "percentiles",
    "sample",
    "hist_edges",
    "hist_counts",
)


def forecast_row(fc: ModelForecast, *, lists: bool = True) -> dict[str, Any]:
    """One forecast as a row of :data:`FORECAST_COLUMNS` (arrays flat, row-major): as lists, or
    with ``lists=False`` as numpy arrays (the local engine encodes them itself)."""
    s = fc.summary

    def flat(values: NDArray[Any] | None) -> Any:
        if values is None:
            return []
        return values.ravel().tolist() if lists else values.ravel()

    return {
        "symbol": fc.symbol,
        "model": fc.model,
        "status": fc.status,
        "message": fc.message,
        "as_of": fc.as_of,
        "last_price": fc.last_price,
        "mu": fc.mu,
        "sigma": fc.sigma,
        "sigma_annualised": fc.sigma_annualised,
        "annualisation": fc.annualisation,
        "sigma_stderr": fc.sigma_stderr,
        "dof": fc.dof,
        "n_bars": fc.n_bars,
        "n_returns": fc.n_returns,
        "n_rejected": fc.n_rejected,
        "n_segments": fc.n_segments,
        "mean": flat(s.mean if s else None),
        "p_above": flat(s.p_above if s else None),
        "percentiles": flat(s.percentiles if s else None),
        "sample": flat(s.sample if s else None),
        "hist_edges": flat(s.hist_edges if s else None),
        "hist_counts": flat(s.hist_counts if s else None),
    }


def forecast_frame(
    bars: pd.DataFrame, settings: GbmSettings, run_seed: int, family_from: float | None = None
) -> pd.DataFrame:
    """``applyInPandas`` body: one symbol's bars (``symbol``, ``window_start``, ``close``) in,
    one row per model out (see :data:`FORECAST_COLUMNS`); ``family_from`` as in
    :func:`forecast_symbol`.

    ``window_start`` may be a datetime column (as Spark delivers it) or epoch seconds.
    """
    import pandas as pd

    if bars.empty:
        return pd.DataFrame({c: [] for c in FORECAST_COLUMNS})
    symbol = str(bars["symbol"].iloc[0])
    ws = bars["window_start"]
    if pd.api.types.is_datetime64_any_dtype(ws):
        starts = ws.dt.tz_localize(None).astype("datetime64[ns]").astype("int64") / 1e9
        start_s = starts.to_numpy(dtype=np.float64)
    else:
        start_s = ws.to_numpy(dtype=np.float64)
    close = pd.to_numeric(bars["close"], errors="coerce").to_numpy(dtype=np.float64)
    forecasts = forecast_symbol(symbol, start_s, close, settings, run_seed, family_from=family_from)
    rows = [forecast_row(fc) for fc in forecasts]
    return pd.DataFrame(rows, columns=list(FORECAST_COLUMNS))
