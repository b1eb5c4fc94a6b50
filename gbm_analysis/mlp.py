"""``mlp``: a multilayer perceptron on the past 30 one-minute bars, predicting the next 10 minutes,
with split-conformal quantiles. Pure (no I/O, no clock).

Inputs per issue time (the close of bar ``i``): for each of the bars ``i-29..i`` its log return,
its range ``log(high / low)``, its VWAP gap ``log(close / vwap)`` (all in bps) and its log volume
against the 30-bar mean: 120 numbers, standardised on the training window. Outputs: the log
returns to the closes 1..10 minutes ahead, scaled per horizon by the training window's spread.
scikit-learn's ``MLPRegressor`` (15-40-20 hidden units by default) fits them; PyTorch would do
the same but its PyPI wheels pull gigabytes of GPU libraries.

The network gives a point forecast. The quantiles come from **split-conformal calibration** on a
window that follows the training window in time (:mod:`gbm_analysis.learned`): residuals of the
calibration window, divided by the recent volatility (RMS of the 30 inputs' returns) times
``sqrt(step)``, give per-step offsets at the levels 1..99%; steps 11..60 use the 10-minute point
forecast and their own calibrated offsets. ``early_stopping`` stays off: scikit-learn would carve
its validation set out of the training window at random, which is the shuffled validation this
model must not have.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from gbm_analysis.learned import (
    BPS,
    N_STEPS,
    WalkForwardSplit,
    conformal_offsets,
    forward_log_returns,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MlpForecaster", "MlpParams", "features", "fit"]

FloatArray = NDArray[np.float64]

#: bars of input, minutes of output
LOOKBACK = 30
HORIZON = 10
_EPS_BPS = 0.1


@dataclass(frozen=True)
class MlpParams:
    """``MLPRegressor`` settings; the defaults are the layout the issue names."""

    hidden: tuple[int, ...] = (15, 40, 20)
    max_iter: int = 200
    alpha: float = 1e-3
    learning_rate_init: float = 1e-3
    seed: int = 0


def features(minutes: pd.DataFrame) -> tuple[FloatArray, FloatArray]:
    """Inputs of every position ``i >= LOOKBACK`` (earlier rows are NaN) and the recent
    volatility (bps per minute) that scales the conformal offsets."""
    c = minutes["close"].to_numpy(dtype=np.float64)
    h = minutes["high"].to_numpy(dtype=np.float64)
    lo = minutes["low"].to_numpy(dtype=np.float64)
    vw = minutes["vwap"].to_numpy(dtype=np.float64)
    vol = np.log1p(minutes["volume"].to_numpy(dtype=np.float64))
    n = c.size
    ret = np.full(n, np.nan)
    ret[1:] = np.diff(np.log(c)) * BPS
    rng = np.log(h / lo) * BPS
    gap = np.log(c / vw) * BPS
    x = np.full((n, 4 * LOOKBACK), np.nan)
    sigma = np.full(n, np.nan)
    if n <= LOOKBACK:
        return x, sigma
    rows = slice(LOOKBACK, n)
    w_ret = sliding_window_view(ret, LOOKBACK)[1:]  # windows ending at LOOKBACK..n-1
    w_vol = sliding_window_view(vol, LOOKBACK)[1:]
    x[rows, :LOOKBACK] = w_ret
    x[rows, LOOKBACK : 2 * LOOKBACK] = sliding_window_view(rng, LOOKBACK)[1:]
    x[rows, 2 * LOOKBACK : 3 * LOOKBACK] = sliding_window_view(gap, LOOKBACK)[1:]
    x[rows, 3 * LOOKBACK :] = w_vol - w_vol.mean(axis=1, keepdims=True)
    sigma[rows] = np.sqrt(np.mean(w_ret**2, axis=1)) + _EPS_BPS
    return x, sigma


@dataclass
class MlpForecaster:
    """A fitted ``mlp``: the network, its output scale and the conformal offsets per step."""

    params: MlpParams
    network: object  # sklearn Pipeline(StandardScaler, MLPRegressor)
    y_scale: FloatArray  # (HORIZON,)
    offsets: FloatArray  # (99, N_STEPS), in units of sigma * sqrt(step)
    name: str = "mlp"

    def point(self, x: FloatArray) -> FloatArray:
        """Point forecasts (bps) for steps 1..N_STEPS; steps past ``HORIZON`` hold the last."""
        pred = np.asarray(self.network.predict(x), dtype=np.float64).reshape(len(x), HORIZON)  # type: ignore[attr-defined]
        pred = pred * self.y_scale
        held = np.repeat(pred[:, -1:], N_STEPS - HORIZON, axis=1)
        return np.concatenate([pred, held], axis=1)

    def predict(self, minutes: pd.DataFrame, positions: NDArray[np.int64]) -> FloatArray:
        x, sigma = features(minutes)
        return self._quantiles(x[positions], sigma[positions])

    def _quantiles(self, x: FloatArray, sigma: FloatArray) -> FloatArray:
        point = self.point(x)  # (n, steps)
        scale = sigma[:, None] * np.sqrt(np.arange(1, N_STEPS + 1))[None, :]
        out: FloatArray = point[:, :, None] + scale[:, :, None] * self.offsets.T[None, :, :]
        return out


def fit(minutes: pd.DataFrame, split: WalkForwardSplit, params: MlpParams) -> MlpForecaster:
    """Train on ``split.train``, calibrate on ``split.calib``; ``split.test`` is not touched."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, sigma = features(minutes)
    log_c = np.log(minutes["close"].to_numpy(dtype=np.float64))
    y = forward_log_returns(log_c, np.arange(1, N_STEPS + 1, dtype=np.int64))
    train = split.train[np.isfinite(x[split.train]).all(axis=1)]
    y_train = y[train, :HORIZON]
    y_scale = np.std(y_train, axis=0) + _EPS_BPS
    network = make_pipeline(
        StandardScaler(),
        MLPRegressor(
            hidden_layer_sizes=params.hidden,
            max_iter=params.max_iter,
            alpha=params.alpha,
            learning_rate_init=params.learning_rate_init,
            early_stopping=False,  # its validation split is random: never across time
            random_state=params.seed,
        ),
    )
    with warnings.catch_warnings():
        # max_iter is the training budget, not a convergence target: stopping at it is expected
        warnings.simplefilter("ignore", ConvergenceWarning)
        network.fit(x[train], y_train / y_scale)
    model = MlpForecaster(
        params=params, network=network, y_scale=y_scale, offsets=np.zeros((99, N_STEPS))
    )
    calib = split.calib
    resid = (y[calib] - model.point(x[calib])) / (
        sigma[calib, None] * np.sqrt(np.arange(1, N_STEPS + 1))[None, :]
    )
    model.offsets = conformal_offsets(resid)
    return model
