"""Scoring of past forecasts against realised prices. Pure (no I/O, no clock).

A forecast step targets ``target_ts``. Its realised price is the close of the last bar that ended
at or before ``target_ts`` (the last trade before the target, as the forecast's own last price is
the close of the bar ending at ``as_of``). A step is

* ``pending`` while no bar has ended at or after ``target_ts`` yet, for at most
  ``pending_max_seconds`` (``GBM_PENDING_MAX``) after the target;
* ``expired`` (final) when no bar ended within ``pending_max_seconds`` after the target (a stock
  after the close, a symbol no longer collected, a long outage): nothing shows the price at the
  target, so it is counted apart, not scored; a bar that comes later (the next session) does not
  revive it, so a step's final state does not depend on when the backtest runs;
* ``gap`` when a bar ended within that bound after the target but the last bar before the target
  ended more than ``max_gap_seconds`` earlier (market closed, outage): there is no trustworthy
  realised price, so it is counted, not scored,
* otherwise scored.

Scores are in log-return space relative to the forecast's last price, in basis points, so symbols
with different price levels can be pooled:

* coverage of the central 50% (q25..q75) and 90% (q05..q95) bands, edges included (a realised
  price equal to an edge, e.g. an unchanged price when most paths are flat, is a hit), with the 95%
  acceptance band of a Binomial(n, nominal) hit count and the Kupiec proportion-of-failures p-value;
* pinball loss averaged over the levels 5, 25, 50, 75 and 95%;
* CRPS from the 99 stored percentiles, ``CRPS = 2 * integral of the pinball loss over levels``,
  by the trapezoid rule over the levels 0, 1, .., 100% (:func:`crps_from_percentiles`); the same
  estimator is applied to every model;
* CRPS skill against the historical-simulation baseline (``hist_sim``) on the same
  (symbol, run, step) keys: ``1 - CRPS_model / CRPS_baseline``, > 0 means better than baseline.

Forecasts of different symbols in one run are correlated (markets co-move) and one run's steps
overlap, so the binomial band is a guide assuming independent runs, not an exact test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from gbm_analysis.model import PERCENTILE_LEVELS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BASELINE_MODEL",
    "POOLED_SYMBOL",
    "BinomialBand",
    "binomial_band",
    "crps_from_percentiles",
    "kupiec_pvalue",
    "pinball_loss",
    "realised_prices",
    "score_forecasts",
    "summarise_scores",
]

BASELINE_MODEL = "hist_sim"
#: the ``symbol`` of rows pooling every symbol
POOLED_SYMBOL = "*"
PINBALL_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
_BPS = 1e4
#: a realised price on a band edge is inside; an edge within 1e-12 of the price (rounding, e.g. a
#: flat path stored as exp(log s0) by older runs) counts as on it, far below any price tick
_TIE_BPS = 1e-8
_Counts = dict[tuple[str, int], dict[str, int]]


@dataclass(frozen=True)
class BinomialBand:
    """Hit-rate range a calibrated forecast falls in with probability >= ``confidence``."""

    low: float
    high: float


def binomial_band(n: int, p: float, confidence: float = 0.95) -> BinomialBand:
    """Central ``confidence`` acceptance band of the hit rate for ``n`` Bernoulli(``p``) trials.

    >>> b = binomial_band(100, 0.9)
    >>> (b.low, b.high)
    (0.84, 0.95)
    """
    if n <= 0:
        return BinomialBand(math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    return BinomialBand(
        float(stats.binom.ppf(alpha, n, p)) / n, float(stats.binom.ppf(1 - alpha, n, p)) / n
    )


def kupiec_pvalue(hits: int, n: int, p: float) -> float:
    """Kupiec (1995) proportion-of-failures test: p-value of ``hits`` out of ``n`` at rate ``p``.

    >>> round(kupiec_pvalue(90, 100, 0.9), 3), kupiec_pvalue(50, 100, 0.9) < 1e-6
    (1.0, True)
    """
    if n <= 0:
        return math.nan
    x = hits

    def loglik(rate: float) -> float:
        out = 0.0
        if x:
            out += x * math.log(rate) if rate > 0 else -math.inf
        if n - x:
            out += (n - x) * math.log(1 - rate) if rate < 1 else -math.inf
        return out

    lr = -2.0 * (loglik(p) - loglik(x / n))
    return float(stats.chi2.sf(max(lr, 0.0), df=1))


def pinball_loss(
    y: NDArray[np.float64], q: NDArray[np.float64], level: float
) -> NDArray[np.float64]:
    """Pinball (quantile) loss of quantile forecast ``q`` at ``level`` for outcome ``y``.

    >>> pinball_loss(np.array([1.0, -1.0]), np.array([0.0, 0.0]), 0.9).tolist()
    [0.9, 0.09999999999999998]
    """
    d = y - q
    return np.asarray(np.maximum(level * d, (level - 1.0) * d), dtype=np.float64)


def crps_from_percentiles(y: NDArray[np.float64], pct: NDArray[np.float64]) -> NDArray[np.float64]:
    """CRPS from the ``K`` = 99 stored percentiles: ``2 / (K + 1) * sum_k pinball(k / (K + 1))``.

    ``CRPS = 2 * integral over levels 0..1 of the pinball loss``; this is the trapezoid rule on the
    levels 0, 0.01, .., 1, where the loss vanishes at 0 and 1 (quantiles at the ends of the
    support). The plain mean over the 99 levels divides by 99 instead of 100 and so overstates
    every CRPS by 1%; this one is within 0.02% of the exact expected CRPS of a calibrated normal
    forecast and within 0.4% of its closed form at any outcome in -4..4 standard deviations.

    :param y: outcomes, shape ``(n,)``
    :param pct: percentiles, shape ``(n, 99)``

    A standard normal forecast and an outcome of 0 (exact CRPS ``2 phi(0) - 1 / sqrt(pi)`` =
    0.2337):

    >>> lv = PERCENTILE_LEVELS
    >>> round(float(crps_from_percentiles(np.array([0.0]), stats.norm.ppf(lv)[None, :])[0]), 4)
    0.2336
    """
    d = y[:, None] - pct
    lv = PERCENTILE_LEVELS[None, :]
    loss = np.maximum(lv * d, (lv - 1.0) * d)
    return np.asarray(2.0 * loss.sum(axis=1) / (lv.size + 1), dtype=np.float64)


def realised_prices(
    targets: NDArray[np.float64],
    bar_end: NDArray[np.float64],
    close: NDArray[np.float64],
    *,
    max_gap_seconds: float,
    now: float,
    pending_max_seconds: float,
) -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    """Realised price and status (``scored``, ``pending``, ``gap``, ``expired``) per target.

    :param targets: target times, epoch seconds
    :param bar_end: bar end times (window_start + width), epoch seconds, sorted ascending
    :param close: the bars' closes
    :param max_gap_seconds: a last bar older than this before the target makes it a ``gap``
    :param now: the evaluation time, epoch seconds
    :param pending_max_seconds: a target no bar ended within this long after is ``expired``

    >>> p, s = realised_prices(np.array([10., 20, 99, 500, 9000]), np.array([5., 10, 15, 100]),
    ...                        np.array([1., 2, 3, 4]), max_gap_seconds=30, now=9100,
    ...                        pending_max_seconds=3600)
    >>> p.tolist()[:2], s.tolist()
    ([2.0, 3.0], ['scored', 'scored', 'gap', 'expired', 'pending'])
    """
    idx = np.searchsorted(bar_end, targets, side="right") - 1
    price = np.full(targets.shape, np.nan)
    status = np.full(targets.shape, "pending", dtype="<U7")
    expired = now - targets > pending_max_seconds
    if bar_end.size == 0:
        status[expired] = "expired"
        return price, status
    known = idx >= 0
    price[known] = close[idx[known]]
    # the first bar ending at or after the target resolves it, if it came within the bound
    nxt = np.searchsorted(bar_end, targets, side="left")
    later = np.where(nxt < bar_end.size, bar_end[np.minimum(nxt, bar_end.size - 1)], np.inf)
    realised = later - targets <= pending_max_seconds
    stale = known & (targets - bar_end[np.maximum(idx, 0)] > max_gap_seconds)
    status[realised] = "scored"
    status[realised & (stale | ~known)] = "gap"
    status[~realised & (expired | np.isfinite(later))] = "expired"
    price[status != "scored"] = np.nan
    return price, status


def score_forecasts(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Per-forecast scores. ``forecasts`` has ``last_price``, ``realised`` (NaN if unscored) and
    ``percentiles`` (99 prices per row); returns it with ``y_bps``, ``hit50``, ``hit90``,
    ``pinball_bps`` and ``crps_bps`` added for the scored rows only."""
    scored = forecasts[forecasts["realised"].notna()].copy()
    if scored.empty:
        for col in ("y_bps", "hit50", "hit90", "pinball_bps", "crps_bps"):
            scored[col] = []
        return scored
    s0 = scored["last_price"].to_numpy(dtype=np.float64)
    y = np.log(scored["realised"].to_numpy(dtype=np.float64) / s0) * _BPS
    pct = np.log(np.vstack(scored["percentiles"].to_list()) / s0[:, None]) * _BPS

    def q(level: float) -> NDArray[np.float64]:
        return np.asarray(pct[:, int(round(level * 100)) - 1], dtype=np.float64)

    def inside(low: float, high: float) -> NDArray[np.bool_]:
        return np.asarray((y >= q(low) - _TIE_BPS) & (y <= q(high) + _TIE_BPS))

    scored["y_bps"] = y
    scored["hit50"] = inside(0.25, 0.75)
    scored["hit90"] = inside(0.05, 0.95)
    scored["pinball_bps"] = np.mean([pinball_loss(y, q(lv), lv) for lv in PINBALL_LEVELS], axis=0)
    scored["crps_bps"] = crps_from_percentiles(y, pct)
    return scored


def _aggregate(scored: pd.DataFrame, counts: _Counts, symbol: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    base = scored[scored["model"] == BASELINE_MODEL].set_index(["symbol", "run_id", "step"])
    for (model, step), grp in scored.groupby(["model", "step"], sort=True):
        n = len(grp)
        h50, h90 = int(grp["hit50"].sum()), int(grp["hit90"].sum())
        b50, b90 = binomial_band(n, 0.5), binomial_band(n, 0.9)
        keys = list(zip(grp["symbol"], grp["run_id"], grp["step"], strict=True))
        paired = base["crps_bps"].reindex(keys)
        mask = paired.notna().to_numpy()
        crps_model = float(grp["crps_bps"].to_numpy()[mask].mean()) if mask.any() else math.nan
        crps_base = float(paired.to_numpy()[mask].mean()) if mask.any() else math.nan
        skill = 1.0 - crps_model / crps_base if mask.any() and crps_base > 0 else math.nan
        c = counts.get((model, step), {})
        rows.append(
            {
                "symbol": symbol,
                "model": model,
                "step": int(step),
                "horizon_s": int(grp["horizon_s"].iloc[0]),
                "n": n,
                "n_pending": int(c.get("pending", 0)),
                "n_gap": int(c.get("gap", 0)),
                "n_expired": int(c.get("expired", 0)),
                "cover50": h50 / n,
                "cover50_lo": b50.low,
                "cover50_hi": b50.high,
                "kupiec50_p": kupiec_pvalue(h50, n, 0.5),
                "cover90": h90 / n,
                "cover90_lo": b90.low,
                "cover90_hi": b90.high,
                "kupiec90_p": kupiec_pvalue(h90, n, 0.9),
                "pinball_bps": float(grp["pinball_bps"].mean()),
                "crps_bps": float(grp["crps_bps"].mean()),
                "crps_baseline_bps": crps_base,
                "crps_skill": skill,
                "n_paired": int(mask.sum()),
                "first_issued": grp["issued_at"].min(),
                "last_issued": grp["issued_at"].max(),
            }
        )
    return rows


def summarise_scores(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per (symbol, model, step) and pooled over symbols (``symbol == "*"``).

    ``forecasts`` needs ``symbol``, ``model``, ``run_id``, ``issued_at``, ``step``, ``horizon_s``,
    ``last_price``, ``percentiles``, ``realised`` and ``status`` (from :func:`realised_prices`).
    """
    import pandas as pd

    scored = score_forecasts(forecasts)
    rows: list[dict[str, object]] = []
    if scored.empty:
        return pd.DataFrame(rows)

    def status_counts(frame: pd.DataFrame) -> _Counts:
        table = frame.groupby(["model", "step"])["status"].value_counts().unstack(fill_value=0)
        return {
            cast(tuple[str, int], k): {str(c): int(n) for c, n in v.items()}
            for k, v in table.iterrows()
        }

    for symbol, grp in scored.groupby("symbol", sort=True):
        counts = status_counts(forecasts[forecasts["symbol"] == symbol])
        rows.extend(_aggregate(grp, counts, str(symbol)))
    rows.extend(_aggregate(scored, status_counts(forecasts), POOLED_SYMBOL))
    return pd.DataFrame(rows)
