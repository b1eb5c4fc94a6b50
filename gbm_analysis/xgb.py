"""``xgb``: gradient-boosted quantile regression on 1-minute OHLC features. Pure (no I/O, no clock).

One booster per trained horizon (1, 2, 5, 10, 15, 30 and 60 minutes) fits nine quantiles at once
(xgboost's ``reg:quantileerror`` with a vector ``quantile_alpha``) of the log return to that
horizon, in bps. The 99 levels come from the nine by linear interpolation in the normal score of
the level; the other steps from :func:`~gbm_analysis.learned.interpolate_horizons` (linear in
``sqrt(step)``). Quantiles are sorted per step, so they never cross.

Features at the close of bar ``i``: log returns over the last 1, 2, 3, 5, 10, 15, 30 and 60
minutes; realised volatility over 5, 15, 30 and 60 minutes; the last bar's range and VWAP gap and
the 15-minute mean range; log volume against its 60-minute mean; the minute of the hour and the
hour of the day (UTC), which let the trees learn the intraday volatility pattern (the first minutes
after a full hour are the most volatile in the Binance data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from gbm_analysis.learned import BPS, WalkForwardSplit, forward_log_returns, interpolate_horizons
from gbm_analysis.model import PERCENTILE_LEVELS

__all__ = ["FIRST", "XgbForecaster", "XgbParams", "features", "fit"]

FloatArray = NDArray[np.float64]

#: the first position with every feature (60 minutes of history)
FIRST = 60
TRAINED_LEVELS = np.array([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])


@dataclass(frozen=True)
class XgbParams:
    horizons: tuple[int, ...] = (1, 2, 5, 10, 15, 30, 60)
    n_estimators: int = 150
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    seed: int = 0
    n_jobs: int = 1  # the machine is shared; Spark runs symbols in parallel instead


def features(minutes: pd.DataFrame) -> FloatArray:
    """Feature rows for every position; rows before :data:`FIRST` hold NaN."""
    c = np.log(minutes["close"].to_numpy(dtype=np.float64))
    h = minutes["high"].to_numpy(dtype=np.float64)
    lo = minutes["low"].to_numpy(dtype=np.float64)
    vw = minutes["vwap"].to_numpy(dtype=np.float64)
    t = minutes["t"].to_numpy(dtype=np.int64)
    s = pd.Series
    ret = s(np.append(np.nan, np.diff(c)) * BPS)
    cols: list[FloatArray] = []
    for k in (1, 2, 3, 5, 10, 15, 30, 60):
        lag = np.full(c.size, np.nan)
        lag[k:] = (c[k:] - c[:-k]) * BPS
        cols.append(lag)
    for k in (5, 15, 30, 60):
        cols.append(((ret**2).rolling(k).mean() ** 0.5).to_numpy())
    rng = np.log(h / lo) * BPS
    cols.append(rng)
    cols.append(s(rng).rolling(15).mean().to_numpy())
    cols.append((c - np.log(vw)) * BPS)
    lv = s(np.log1p(minutes["volume"].to_numpy(dtype=np.float64)))
    cols.append((lv - lv.rolling(60).mean()).to_numpy())
    # the bar at position i closes at t + 60: the features describe the minute the forecast starts
    close_t = t + 60
    cols.append(((close_t // 60) % 60).astype(np.float64))
    cols.append(((close_t // 3600) % 24).astype(np.float64))
    x = np.column_stack(cols)
    x[:FIRST] = np.nan
    return x


@dataclass
class XgbForecaster:
    params: XgbParams
    boosters: list[object] = field(default_factory=list)  # one xgboost.Booster per horizon
    name: str = "xgb"

    def predict(self, minutes: pd.DataFrame, positions: NDArray[np.int64]) -> FloatArray:
        return self.quantiles(features(minutes)[positions])

    def quantiles(self, x: FloatArray) -> FloatArray:
        import xgboost as xgb

        data = xgb.DMatrix(x)
        trained = np.stack(
            [np.asarray(b.predict(data)).reshape(len(x), -1) for b in self.boosters],  # type: ignore[attr-defined]
            axis=1,
        )  # (n, horizons, 9)
        trained = np.sort(trained, axis=-1)
        levels = _expand_levels(trained)  # (n, horizons, 99)
        return interpolate_horizons(np.array(self.params.horizons), levels)


def _expand_levels(q: FloatArray) -> FloatArray:
    """The 99 percentiles from the nine trained levels, linear in the normal score."""
    z_trained = stats.norm.ppf(TRAINED_LEVELS)
    z_all = stats.norm.ppf(PERCENTILE_LEVELS)
    flat = q.reshape(-1, q.shape[-1])
    out = np.array([np.interp(z_all, z_trained, row) for row in flat])
    return out.reshape(*q.shape[:-1], PERCENTILE_LEVELS.size)


def fit(minutes: pd.DataFrame, split: WalkForwardSplit, params: XgbParams) -> XgbForecaster:
    """One booster per horizon on ``split.train``; xgboost fits quantiles directly, so the
    calibration window is not used (it stays out of training, as for every model)."""
    import xgboost as xgb

    x = features(minutes)
    log_c = np.log(minutes["close"].to_numpy(dtype=np.float64))
    horizons = np.array(params.horizons, dtype=np.int64)
    y = forward_log_returns(log_c, horizons)
    train = split.train[np.isfinite(x[split.train]).all(axis=1)]
    model = XgbForecaster(params=params)
    for j in range(horizons.size):
        rows = train[np.isfinite(y[train, j])]
        booster = xgb.train(
            {
                "objective": "reg:quantileerror",
                "quantile_alpha": TRAINED_LEVELS,
                "tree_method": "hist",
                "max_depth": params.max_depth,
                "learning_rate": params.learning_rate,
                "subsample": params.subsample,
                "seed": params.seed,
                "nthread": params.n_jobs,
            },
            xgb.DMatrix(x[rows], label=y[rows, j]),
            num_boost_round=params.n_estimators,
        )
        model.boosters.append(booster)
    return model
