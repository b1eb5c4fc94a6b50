"""``prophet``: Prophet on one symbol's 1-minute log closes, with its own intervals.

(Named ``prophet_model`` so that running ``gbm_analysis/__main__.py`` as a script, as
``spark-submit`` does, cannot shadow the ``prophet`` package.)

Prophet fits a piecewise-linear trend plus a daily seasonality to the training window's log
closes (the last ``train_days`` of it: Prophet's fit grows with the points). Its forecast is of the
price *level* at a clock time, not conditioned on the latest price, so a forecast issued at ``t``
is anchored there: the quantiles of step ``s`` are those of Prophet's predictive samples at
``t + s`` minus its point forecast at ``t``. Those samples carry Prophet's observation noise
(the spread of the training closes around the fitted curve), its own interval, which is far wider
than a minute's move; the backtest shows what that costs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from gbm_analysis.learned import BPS, N_STEPS, WalkForwardSplit
from gbm_analysis.model import PERCENTILE_LEVELS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ProphetForecaster", "ProphetParams", "fit"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ProphetParams:
    train_days: float = 7.0
    uncertainty_samples: int = 200
    changepoint_prior_scale: float = 0.05
    seed: int = 0


@dataclass
class ProphetForecaster:
    params: ProphetParams
    model: object  # prophet.Prophet, fitted
    name: str = "prophet"

    def predict(self, minutes: pd.DataFrame, positions: NDArray[np.int64]) -> FloatArray:
        import pandas as pd

        t = minutes["t"].to_numpy(dtype=np.int64)
        close_t = t[positions] + 60  # a forecast issued at a bar's close
        steps = np.arange(0, N_STEPS + 1, dtype=np.int64) * 60
        times = np.unique((close_t[:, None] + steps[None, :]).ravel())
        frame = pd.DataFrame({"ds": pd.to_datetime(times, unit="s")})
        np.random.seed(self.params.seed)  # Prophet samples with numpy's global generator
        samples = np.asarray(self.model.predictive_samples(frame)["yhat"])  # type: ignore[attr-defined]
        point = np.asarray(self.model.predict(frame)["yhat"])  # type: ignore[attr-defined]
        index = {int(v): k for k, v in enumerate(times)}
        out = np.empty((positions.size, N_STEPS, PERCENTILE_LEVELS.size))
        for i, start in enumerate(close_t):
            rows = [index[int(start + s)] for s in steps[1:]]
            increments = (samples[rows] - point[index[int(start)]]) * BPS
            out[i] = np.quantile(increments, PERCENTILE_LEVELS, axis=1).T
        return np.sort(out, axis=-1)


def fit(minutes: pd.DataFrame, split: WalkForwardSplit, params: ProphetParams) -> ProphetForecaster:
    """Fit on the last ``train_days`` of ``split.train``."""
    import pandas as pd
    from prophet import Prophet

    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.WARNING)
    keep = int(params.train_days * 1440)
    train = split.train[-keep:]
    t = minutes["t"].to_numpy(dtype=np.int64)[train] + 60
    frame = pd.DataFrame(
        {
            "ds": pd.to_datetime(t, unit="s"),
            "y": np.log(minutes["close"].to_numpy(dtype=np.float64)[train]),
        }
    )
    model = Prophet(
        daily_seasonality=True,
        weekly_seasonality=False,
        yearly_seasonality=False,
        uncertainty_samples=params.uncertainty_samples,
        changepoint_prior_scale=params.changepoint_prior_scale,
    )
    model.fit(frame)
    return ProphetForecaster(params=params, model=model)
