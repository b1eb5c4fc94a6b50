"""One backtest for every forecaster: the GBM family and the learned models on the same issue
times, scored the same way, into ``model_scores``. Pure except :func:`walk_forward_table`'s
training (no I/O, no clock).

The GBM family runs here on 1-minute bars (``bar_seconds=60``, its default 6-hour lookback, 2,000
paths), issued at the same test-window times as the learned models, so every row of the
leaderboard compares models on identical outcomes. Per model, symbol and horizon: coverage of the
50% and 90% bands with the Kupiec p-value, the pinball loss (levels 5..95%), CRPS, the median's
RMSE against the random walk's (a zero return) and its directional accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from gbm_analysis.backtest import kupiec_pvalue
from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import forecast_symbol
from gbm_analysis.learned import BPS, N_STEPS, HorizonScores

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FAMILY_MODELS",
    "LEADERBOARD_STEPS",
    "family_quantiles",
    "format_leaderboard",
    "score_rows",
]

FAMILY_MODELS: tuple[str, ...] = ("gbm", "ewma_t", "hist_sim")
LEADERBOARD_STEPS = (1, 5, 15, 30, 60)
FAMILY_LOOKBACK_MINUTES = 360


def family_quantiles(
    minutes: pd.DataFrame,
    positions: NDArray[np.int64],
    model: str,
    *,
    n_paths: int = 2_000,
    seed: int = 0,
    lookback_minutes: int = FAMILY_LOOKBACK_MINUTES,
) -> NDArray[np.float64]:
    """The GBM family's quantiles (bps of log return) issued at each position's close, from the
    ``lookback_minutes`` bars up to it; shape ``(n, 60, 99)``, NaN where the model had no data."""
    settings = GbmSettings(
        lookback_seconds=lookback_minutes * 60,
        bar_seconds=60,
        step_seconds=60,
        n_steps=N_STEPS,
        n_paths=n_paths,
        n_sample_paths=0,
        models=(model,),  # type: ignore[arg-type]
    )
    t = minutes["t"].to_numpy(dtype=np.float64)
    close = minutes["close"].to_numpy(dtype=np.float64)
    out = np.full((positions.size, N_STEPS, 99), np.nan)
    for i, pos in enumerate(positions):
        lo = max(0, pos - lookback_minutes + 1)
        (fc,) = forecast_symbol("X", t[lo : pos + 1], close[lo : pos + 1], settings, seed + i)
        if fc.ok and fc.summary is not None:
            out[i] = np.log(fc.summary.percentiles / fc.last_price) * BPS
    return out


@dataclass(frozen=True)
class ScoreKey:
    symbol: str
    model: str
    model_version: int | None


def score_rows(
    key: ScoreKey,
    scores: HorizonScores,
    *,
    evaluated_at: datetime,
    window_start: datetime,
    window_end: datetime,
    source: str = "walk_forward",
) -> list[dict[str, Any]]:
    """``model_scores`` rows, one per step 1..60."""
    rows = []
    for k in range(scores.crps_bps.size):
        n = scores.n
        rw = float(scores.rmse_rw_bps[k])
        rows.append(
            {
                "source": source,
                "symbol": key.symbol,
                "model": key.model,
                "horizon": k + 1,
                "evaluated_at": evaluated_at,
                "model_version": key.model_version,
                "n": n,
                "coverage_50": _f(scores.coverage_50[k]),
                "coverage_90": _f(scores.coverage_90[k]),
                "kupiec_p_50": _kupiec(scores.coverage_50[k], n, 0.5),
                "kupiec_p_90": _kupiec(scores.coverage_90[k], n, 0.9),
                "pinball_bps": _f(scores.pinball_bps[k]),
                "crps_bps": _f(scores.crps_bps[k]),
                "rmse_bps": _f(scores.rmse_bps[k]),
                "rmse_rw_bps": _f(rw),
                "rmse_ratio": _f(scores.rmse_bps[k] / rw) if rw > 0 else None,
                "directional": _f(scores.directional[k]),
                "window_start": window_start,
                "window_end": window_end,
            }
        )
    return rows


def _f(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _kupiec(coverage: float, n: int, nominal: float) -> float | None:
    if not math.isfinite(coverage) or n <= 0:
        return None
    return _f(kupiec_pvalue(int(round(coverage * n)), n, nominal))


def format_leaderboard(
    rows: Iterable[Mapping[str, Any]], steps: Sequence[int] = LEADERBOARD_STEPS
) -> str:
    """Per symbol and step, the models ranked by CRPS (lowest first)."""
    by: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["horizon"] in steps:
            by.setdefault((row["symbol"], int(row["horizon"])), []).append(row)
    if not by:
        return "no scores yet: run `python -m gbm_analysis train` first"
    lines = [
        f"{'symbol':<20} {'step':>4} {'rank':>4} {'model':<9} {'ver':>4} {'n':>5} {'cov50':>6} "
        f"{'cov90':>6} {'CRPS':>8} {'skill':>7} {'RMSE/RW':>8} {'dir':>5}"
    ]
    for (symbol, step), group in sorted(by.items()):
        group = sorted(group, key=lambda r: (r["crps_bps"] is None, r["crps_bps"] or 0.0))
        base = next((r["crps_bps"] for r in group if r["model"] == "hist_sim"), None)
        for rank, r in enumerate(group, start=1):
            crps = r["crps_bps"]
            skill = 1 - crps / base if crps is not None and base else math.nan
            version = r.get("model_version")
            lines.append(
                f"{symbol:<20} {step:>4} {rank:>4} {r['model']:<9} "
                f"{('v' + str(version)) if version else '-':>4} {r['n']:>5} "
                f"{_fmt(r['coverage_50'], '.3f'):>6} {_fmt(r['coverage_90'], '.3f'):>6} "
                f"{_fmt(crps, '.2f'):>8} {_fmt(skill, '+.3f'):>7} "
                f"{_fmt(r['rmse_ratio'], '.3f'):>8} {_fmt(r['directional'], '.2f'):>5}"
            )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return format(value, spec)
