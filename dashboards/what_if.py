""" "What if" forecasts: a stored model's paths re-simulated with other parameters, using the
forecast job's own simulator and seeding (:mod:`gbm_analysis.model`, :mod:`gbm_analysis.forecast`).

With the stored seed, sigma, drift, horizon and number of paths, the ``gbm`` and ``ewma_t`` what-if
reproduces the stored run exactly. ``hist_sim`` has no parameters to scale (it resamples history),
so its what-if is a GBM with the standard deviation of those returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from dashboards.forecasts import QUANTILES, histogram_frame, terminal_density

__all__ = ["StoredModel", "WhatIf", "WhatIfResult", "what_if_forecast"]

SECONDS_PER_DAY = 86_400
HIST_BINS = 50


@dataclass(frozen=True)
class StoredModel:
    """What a stored run says about one model: enough to simulate it again.

    :param mu: arithmetic drift per second
    :param sigma: volatility per second
    :param dof: Student-t degrees of freedom (``ewma_t``), else None
    """

    symbol: str
    model: str
    as_of: datetime
    last_price: float
    mu: float
    sigma: float
    dof: float | None
    step_seconds: int
    n_steps: int
    n_paths: int
    seed: int

    @property
    def drift_pct_per_day(self) -> float:
        return self.mu * SECONDS_PER_DAY * 100


@dataclass(frozen=True)
class WhatIf:
    """The user's changes. ``drift_pct_per_day`` is the arithmetic drift in % per day (a rate
    per second or per year is too small or too large to type over an intraday horizon)."""

    sigma_multiplier: float
    drift_pct_per_day: float
    n_steps: int
    n_paths: int
    seed: int
    n_sample: int = 20

    def __post_init__(self) -> None:
        if not (self.sigma_multiplier >= 0 and math.isfinite(self.sigma_multiplier)):
            raise ValueError(f"sigma multiplier {self.sigma_multiplier!r} must be >= 0")
        if self.n_steps < 1 or self.n_paths < 1:
            raise ValueError(f"horizon {self.n_steps} steps and {self.n_paths} paths must be >= 1")

    @classmethod
    def unchanged(cls, base: StoredModel, n_sample: int = 20) -> WhatIf:
        return cls(
            sigma_multiplier=1.0,
            drift_pct_per_day=base.drift_pct_per_day,
            n_steps=base.n_steps,
            n_paths=base.n_paths,
            seed=base.seed,
            n_sample=n_sample,
        )


@dataclass(frozen=True)
class WhatIfResult:
    """:param fan: ``step, time, mean, q05..q95, p_above`` (step 0 is the last price)
    :param paths: ``path, step, time, price`` of the first ``n_sample`` paths
    :param histogram: :func:`dashboards.forecasts.histogram_frame` of the terminal prices
    :param density: :func:`dashboards.forecasts.terminal_density` at the horizon
    """

    model: str
    fan: pd.DataFrame
    paths: pd.DataFrame
    histogram: pd.DataFrame
    density: pd.DataFrame


def what_if_forecast(base: StoredModel, change: WhatIf) -> WhatIfResult:
    """Simulate ``base`` with ``change`` applied; the same inputs give the same numbers."""
    # Imported here, not with the module: the explorer needs this module's dataclasses for its
    # first page, the job's simulator (and what that imports) only once the overlay is turned on.
    from gbm_analysis.forecast import generator_for
    from gbm_analysis.model import simulate_log_paths, summarise_log_paths

    # hist_sim draws from its own stream in the job; use it too, so each model's what-if differs.
    rng = generator_for(change.seed, base.symbol, base.model)
    mu = change.drift_pct_per_day / 100 / SECONDS_PER_DAY
    dof = base.dof if base.model == "ewma_t" else None
    # the job's own simulation and summary (float32 sort keys): the unchanged what-if is the
    # stored forecast to the bit
    log_paths = simulate_log_paths(
        mu,
        base.sigma * change.sigma_multiplier,
        float(base.step_seconds),
        change.n_steps,
        change.n_paths,
        rng,
        dof=dof,
    )
    summary = summarise_log_paths(
        log_paths, base.last_price, n_sample=change.n_sample, bins=HIST_BINS
    )
    steps = np.arange(change.n_steps + 1)
    times = [base.as_of + timedelta(seconds=int(s) * base.step_seconds) for s in steps]
    fan = pd.DataFrame(
        {
            "step": steps,
            "time": pd.to_datetime(times, utc=True),
            "mean": [base.last_price, *summary.mean],
            **{q: [base.last_price, *summary.quantile(int(q[1:]) / 100)] for q in QUANTILES},
            "p_above": [np.nan, *summary.p_above],
        }
    )
    sample = summary.sample
    long = pd.DataFrame(
        {
            "path": np.repeat(np.arange(sample.shape[0]), change.n_steps + 1),
            "step": np.tile(steps, sample.shape[0]),
            "time": np.tile(fan["time"].to_numpy(), sample.shape[0]),
            "price": np.hstack([np.full((sample.shape[0], 1), base.last_price), sample]).ravel(),
        }
    )
    return WhatIfResult(
        model=base.model,
        fan=fan,
        paths=long,
        histogram=histogram_frame(summary.hist_edges.tolist(), summary.hist_counts.tolist()),
        density=terminal_density(summary.percentiles[-1]),
    )
