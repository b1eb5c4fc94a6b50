"""What the learned forecasters (``mlp``, ``xgb``, ``prophet``) share. Pure (no I/O, no clock).

* **Minute bars.** The learned models work on 1-minute OHLCV bars (``trades_agg_1m``, or the
  Binance klines in the shared data). :func:`prepare_minutes` puts them on a gap-free minute grid:
  a minute without a bar did not trade, so its OHLC is the previous close and its volume 0.
* **Walk-forward only.** A model is trained on the oldest part of the history, calibrated on the
  part after it and scored on the part after that (:class:`WalkForwardSplit`). Each sample's
  target looks ``purge`` minutes ahead, so that many samples are dropped at each boundary: no
  training target overlaps a calibration input. :func:`check_walk_forward` refuses a split whose
  parts are out of time order (a shuffled split leaks the future into training).
* **Output contract.** Every model returns log-return quantiles at the levels 1..99% for steps
  1..60 minutes ahead, shape ``(60, 99)``, in basis points of the last close; :func:`to_summary`
  turns them into the GBM family's :class:`~gbm_analysis.model.PathSummary` (percentiles of price,
  P(above last), mean). Learned models draw no paths, so ``sample`` is empty, and the terminal
  histogram holds 9,800 notional draws between the 1% and 99% quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from gbm_analysis.backtest import crps_from_percentiles, pinball_loss
from gbm_analysis.exceptions import ConfigError, InsufficientDataError
from gbm_analysis.model import PERCENTILE_LEVELS, PathSummary

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BPS",
    "LEARNED_MODELS",
    "HorizonScores",
    "N_STEPS",
    "Forecaster",
    "WalkForwardError",
    "WalkForwardSplit",
    "check_walk_forward",
    "conformal_offsets",
    "forward_log_returns",
    "interpolate_horizons",
    "outcomes",
    "prepare_minutes",
    "score_log_quantiles",
    "to_summary",
    "walk_forward_split",
]

FloatArray = NDArray[np.float64]

LEARNED_MODELS: tuple[str, ...] = ("mlp", "xgb", "prophet")
#: steps of one minute, as the GBM family's default horizon
N_STEPS = 60
STEP_SECONDS = 60
#: quantiles are in basis points of log return: targets of order 1 keep the optimisers well scaled
BPS = 1e4
#: notional draws behind a learned model's terminal histogram (98% of them between q01 and q99)
HIST_DRAWS = 10_000
#: percentile indexes of the pinball levels of :mod:`gbm_analysis.backtest` (5, 25, 50, 75, 95%)
_PINBALL_IDX = (4, 24, 49, 74, 94)


class WalkForwardError(ConfigError):
    """A train/calibration/test split that is not in time order, or whose parts overlap."""


class Forecaster(Protocol):
    """A fitted learned model: log-return quantiles (bps) for issue positions of a minute frame."""

    name: str

    def predict(self, minutes: pd.DataFrame, positions: NDArray[np.int64]) -> FloatArray:
        """Quantiles of shape ``(len(positions), N_STEPS, 99)``, issued at the close of bar
        ``positions[i]`` of ``minutes`` (using only bars up to and including it)."""
        ...


def prepare_minutes(bars: pd.DataFrame) -> pd.DataFrame:
    """1-minute bars on a gap-free grid: columns ``t`` (bar start, epoch seconds), ``open``,
    ``high``, ``low``, ``close``, ``volume``, ``vwap``.

    ``window_start`` (datetime) or ``t`` (epoch seconds) gives the time; without a ``vwap`` column
    the typical price ``(high + low + close) / 3`` stands in. Duplicated minutes keep the last.

    >>> import pandas as pd
    >>> m = prepare_minutes(pd.DataFrame({"t": [0, 120], "open": [1.0, 2], "high": [1.0, 2],
    ...                                   "low": [1.0, 2], "close": [1.0, 2], "volume": [3.0, 4]}))
    >>> m["t"].tolist(), m["close"].tolist(), m["volume"].tolist()
    ([0, 60, 120], [1.0, 1.0, 2.0], [3.0, 0.0, 4.0])
    """
    import pandas as pd

    frame = bars.copy()
    if "t" not in frame.columns:
        ws = frame["window_start"]
        if pd.api.types.is_datetime64_any_dtype(ws):
            ns = ws.dt.tz_localize(None).astype("datetime64[ns]").astype("int64")
            frame["t"] = ns // 1_000_000_000
        else:
            frame["t"] = ws.astype("int64")
    frame["t"] = (frame["t"].astype("int64") // STEP_SECONDS) * STEP_SECONDS
    cols = ["open", "high", "low", "close", "volume"]
    for col in cols:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    if "vwap" in frame.columns:
        frame["vwap"] = pd.to_numeric(frame["vwap"], errors="coerce").astype("float64")
    else:
        frame["vwap"] = (frame["high"] + frame["low"] + frame["close"]) / 3.0
    frame = frame[np.isfinite(frame["close"]) & (frame["close"] > 0)]
    frame = frame.sort_values("t", kind="stable").drop_duplicates("t", keep="last")
    if frame.empty:
        return frame[["t", *cols, "vwap"]].reset_index(drop=True)
    grid = np.arange(frame["t"].iloc[0], frame["t"].iloc[-1] + 1, STEP_SECONDS, dtype=np.int64)
    out = frame.set_index("t")[[*cols, "vwap"]].reindex(grid)
    out["close"] = out["close"].ffill()
    for col in ("open", "high", "low", "vwap"):
        out[col] = out[col].fillna(out["close"])
    out["volume"] = out["volume"].fillna(0.0)
    out.index.name = "t"
    return out.reset_index()


def forward_log_returns(log_close: FloatArray, horizons: NDArray[np.int64]) -> FloatArray:
    """``y[i, j] = log_close[i + h_j] - log_close[i]`` in bps; NaN past the end.

    >>> forward_log_returns(np.log(np.array([1.0, 2.0, 4.0])), np.array([1, 2])) / BPS
    array([[0.69314718, 1.38629436],
           [0.69314718,        nan],
           [       nan,        nan]])
    """
    n = log_close.size
    out = np.full((n, horizons.size), np.nan)
    for j, h in enumerate(horizons):
        if h < n:
            out[: n - h, j] = (log_close[h:] - log_close[: n - h]) * BPS
    return out


@dataclass(frozen=True)
class WalkForwardSplit:
    """Positions (rows of the minute frame) of each part, in time order.

    A sample at position ``i`` uses bars up to ``i`` and its target reaches ``i + purge``.
    """

    train: NDArray[np.int64]
    calib: NDArray[np.int64]
    test: NDArray[np.int64]
    purge: int

    def __post_init__(self) -> None:
        check_walk_forward(self.train, self.calib, self.test, purge=self.purge)


def check_walk_forward(
    train: NDArray[np.int64], calib: NDArray[np.int64], test: NDArray[np.int64], *, purge: int
) -> None:
    """Refuse a split that is not walk-forward.

    Each part must be strictly increasing (a shuffled part mixes later samples into earlier ones),
    and each part's last target (``position + purge``) must come before the next part's first input.

    :raises WalkForwardError: naming the part and the positions that break the order

    >>> check_walk_forward(np.array([0, 1]), np.array([5]), np.array([9]), purge=3)
    >>> check_walk_forward(np.array([1, 0]), np.array([5]), np.array([9]), purge=3)
    Traceback (most recent call last):
    ...
    gbm_analysis.learned.WalkForwardError: train: positions are not in time order (1 before 0); \
a walk-forward split never shuffles
    """
    parts = {"train": np.asarray(train), "calib": np.asarray(calib), "test": np.asarray(test)}
    for name, pos in parts.items():
        if pos.size == 0:
            raise WalkForwardError(f"{name}: no samples")
        steps = np.diff(pos)
        if np.any(steps <= 0):
            k = int(np.flatnonzero(steps <= 0)[0])
            raise WalkForwardError(
                f"{name}: positions are not in time order ({pos[k]} before {pos[k + 1]}); "
                "a walk-forward split never shuffles"
            )
    order = list(parts.items())
    for (name_a, a), (name_b, b) in zip(order, order[1:], strict=False):
        if a[-1] + purge >= b[0]:
            raise WalkForwardError(
                f"{name_a} reaches position {a[-1]} + {purge} (its target) but {name_b} starts at "
                f"{b[0]}: the parts overlap in time"
            )


def walk_forward_split(
    n: int, *, first: int, calib: int, test: int, purge: int, train: int | None = None
) -> WalkForwardSplit:
    """The newest ``test`` issue positions for scoring, the ``calib`` before them for
    calibration, and the ``train`` (default: all) before those, skipping ``purge`` between parts.

    :param n: rows of the minute frame
    :param first: the first position with a full feature window
    :raises InsufficientDataError: too few rows for the three parts
    """
    test_end = n - purge  # the last test target must be inside the data
    test_start = test_end - test
    calib_end = test_start - purge
    calib_start = calib_end - calib
    train_end = calib_start - purge
    train_start = first if train is None else max(first, train_end - train)
    if min(test, calib) <= 0 or train_end - train_start < 10 * purge:
        raise InsufficientDataError(
            f"{n} minutes cannot hold a training window (at least {10 * purge} minutes), "
            f"{calib} calibration and {test} test minutes with {purge}-minute gaps"
        )
    return WalkForwardSplit(
        train=np.arange(train_start, train_end, dtype=np.int64),
        calib=np.arange(calib_start, calib_end, dtype=np.int64),
        test=np.arange(test_start, test_end, dtype=np.int64),
        purge=purge,
    )


def conformal_offsets(residuals: FloatArray, levels: FloatArray = PERCENTILE_LEVELS) -> FloatArray:
    """Split-conformal quantile offsets per level and column, from calibration residuals
    ``y - prediction`` of shape ``(n, H)`` (NaN rows are left out per column).

    For a level ``tau >= 0.5`` the offset is the ``ceil((n + 1) tau)``-th smallest residual, for
    ``tau < 0.5`` the ``floor((n + 1) tau)``-th: with exchangeable residuals,
    ``P(y <= pred + offset) >= tau`` above the median and ``P(y < pred + offset) <= tau`` below,
    so the central band ``[tau, 1 - tau]`` covers at least ``1 - 2 tau`` of new outcomes.

    :returns: shape ``(len(levels), H)``
    :raises InsufficientDataError: a column has fewer than 99 residuals (the 1% and 99% levels
        would be the sample's extremes or beyond)
    """
    out = np.empty((levels.size, residuals.shape[1]))
    for j in range(residuals.shape[1]):
        r = np.sort(residuals[:, j][np.isfinite(residuals[:, j])])
        n = r.size
        if n < 99:
            raise InsufficientDataError(f"{n} calibration residuals at column {j}, need 99")
        upper = np.ceil((n + 1) * levels).astype(np.int64)
        lower = np.floor((n + 1) * levels).astype(np.int64)
        rank = np.where(levels >= 0.5, upper, lower)
        out[:, j] = r[np.clip(rank, 1, n) - 1]
    return out


def interpolate_horizons(
    horizons: NDArray[np.int64], quantiles: FloatArray, n_steps: int = N_STEPS
) -> FloatArray:
    """Quantiles at steps ``1..n_steps`` from those at ``horizons``, shape ``(..., H, 99)``.

    Between trained horizons the quantile is linear in ``sqrt(step)`` (a random walk's spread grows
    as the square root of time); before the first it scales by ``sqrt(step / h_0)``, after the
    last it is held (a learned model says nothing beyond its horizons). Levels are re-sorted per
    step, so interpolated quantiles never cross.
    """
    root = np.sqrt(horizons.astype(np.float64))
    steps = np.arange(1, n_steps + 1, dtype=np.float64)
    out = np.empty((*quantiles.shape[:-2], n_steps, quantiles.shape[-1]))
    for k, s in enumerate(steps):
        x = math.sqrt(s)
        if s <= horizons[0]:
            out[..., k, :] = quantiles[..., 0, :] * (x / root[0])
        elif s >= horizons[-1]:
            out[..., k, :] = quantiles[..., -1, :]
        else:
            j = int(np.searchsorted(root, x)) - 1
            w = (x - root[j]) / (root[j + 1] - root[j])
            out[..., k, :] = (1 - w) * quantiles[..., j, :] + w * quantiles[..., j + 1, :]
    return np.sort(out, axis=-1)


def to_summary(log_q_bps: FloatArray, s0: float, *, bins: int = 50) -> PathSummary:
    """The GBM family's summary from log-return quantiles (bps) of shape ``(steps, 99)``.

    P(above) is ``1 - F(0)`` with ``F`` interpolated linearly between the levels (0 below the 1%
    quantile's level when every quantile is above 0, and so on); the mean is the average of the
    99 price quantiles, the same trapezoid as the CRPS.

    >>> q = np.tile(np.linspace(-49, 49, 99), (2, 1))
    >>> s = to_summary(q, 100.0)
    >>> s.percentiles.shape, [round(float(p), 2) for p in s.p_above], s.sample.shape
    ((2, 99), [0.5, 0.5], (0, 2))
    """
    q = np.sort(np.asarray(log_q_bps, dtype=np.float64), axis=1)
    prices = s0 * np.exp(q / BPS)
    lv = PERCENTILE_LEVELS
    p_above = np.array([1.0 - _cdf_at(row, lv, 0.0) for row in q])
    last = prices[-1]
    edges = np.linspace(last[0], last[-1], bins + 1)
    if edges[-1] <= edges[0]:
        edges = np.linspace(last[0] * (1 - 1e-9), last[0] * (1 + 1e-9), bins + 1)
    cdf = np.array([_cdf_at(last, lv, e) for e in edges])
    cum = np.rint(cdf * HIST_DRAWS).astype(np.int64)
    return PathSummary(
        mean=prices.mean(axis=1),
        percentiles=prices,
        p_above=p_above,
        sample=np.empty((0, q.shape[0])),
        hist_edges=edges,
        hist_counts=np.diff(cum),
    )


def _cdf_at(sorted_q: FloatArray, levels: FloatArray, x: float) -> float:
    if x < sorted_q[0]:
        return 0.0
    if x > sorted_q[-1]:
        return 1.0
    # the levels of tied quantiles: the largest level at or below x
    return float(np.interp(x, sorted_q, levels, left=0.0, right=1.0))


@dataclass(frozen=True)
class HorizonScores:
    """Out-of-sample scores per step (arrays of length ``N_STEPS``) over ``n`` issue times."""

    n: int
    coverage_50: FloatArray
    coverage_90: FloatArray
    crps_bps: FloatArray
    pinball_bps: FloatArray  # mean pinball loss over the levels 5, 25, 50, 75, 95%
    rmse_bps: FloatArray
    rmse_rw_bps: FloatArray
    directional: FloatArray


def score_log_quantiles(y_bps: FloatArray, q_bps: FloatArray) -> HorizonScores:
    """Score quantile forecasts ``q`` (``(n, steps, 99)``) against outcomes ``y`` (``(n, steps)``),
    both log returns in bps from the issue time's close; rows with a NaN outcome are left out per
    step.

    Coverage counts band edges as inside (as :mod:`gbm_analysis.backtest`); the random walk's
    median is 0, so ``rmse_rw`` is the RMS of the outcome; directional accuracy is the share of
    non-zero outcomes whose sign the median gets right (a zero median counts as a miss).
    """
    n, steps = y_bps.shape
    out = {k: np.full(steps, np.nan) for k in ("c50", "c90", "crps", "pin", "rmse", "rw", "dir")}
    for k in range(steps):
        y = y_bps[:, k]
        ok = np.isfinite(y)
        if not ok.any():
            continue
        yk, qk = y[ok], q_bps[ok, k, :]
        out["c50"][k] = np.mean((qk[:, 24] <= yk) & (yk <= qk[:, 74]))
        out["c90"][k] = np.mean((qk[:, 4] <= yk) & (yk <= qk[:, 94]))
        out["crps"][k] = float(np.mean(crps_from_percentiles(yk, qk)))
        out["pin"][k] = float(
            np.mean([np.mean(pinball_loss(yk, qk[:, i], (i + 1) / 100)) for i in _PINBALL_IDX])
        )
        med = qk[:, 49]
        out["rmse"][k] = math.sqrt(float(np.mean((yk - med) ** 2)))
        out["rw"][k] = math.sqrt(float(np.mean(yk**2)))
        moved = yk != 0
        out["dir"][k] = (
            float(np.mean(np.sign(med[moved]) == np.sign(yk[moved]))) if moved.any() else np.nan
        )
    return HorizonScores(
        n=n,
        coverage_50=out["c50"],
        coverage_90=out["c90"],
        crps_bps=out["crps"],
        pinball_bps=out["pin"],
        rmse_bps=out["rmse"],
        rmse_rw_bps=out["rw"],
        directional=out["dir"],
    )


def outcomes(
    minutes: pd.DataFrame, positions: NDArray[np.int64], n_steps: int = N_STEPS
) -> FloatArray:
    """Realised log returns (bps) from the close at each position to steps ``1..n_steps`` later."""
    log_c = np.log(minutes["close"].to_numpy(dtype=np.float64))
    y = forward_log_returns(log_c, np.arange(1, n_steps + 1, dtype=np.int64))
    return y[positions]
