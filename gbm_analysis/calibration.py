"""Calibration at every horizon: the GBM family run walk-forward on a CSV of bars, as the hourly
job runs, and scored per horizon step against the binomial band.

``python -m gbm_analysis calibration --bars-csv FILE`` issues a forecast for every symbol at every
full hour (``--every``) that has a whole lookback before it and a whole horizon after it, from
the bars before it only (the models' own windows: ``GBM_LOOKBACK``, and ``GBM_SEASONAL_HISTORY``
for ``seasonal_fhs``). Each step is scored as the backtest scores stored forecasts
(:mod:`gbm_analysis.backtest`): the realised price is the close of the last bar ending at or
before the step's target; coverage of the central 50% and 90% bands, edges included, against the
95% binomial acceptance band of the pooled count; CRPS from the 99 percentiles in basis points
of log return, and its skill against ``hist_sim`` (drift-free under the default
``GBM_DRIFT=zero``) on the same issues.

Pure except for reading the CSV; the forecasts are :func:`gbm_analysis.forecast.forecast_symbol`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from gbm_analysis.backtest import BASELINE_MODEL, binomial_band, crps_from_percentiles
from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import forecast_symbol

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HorizonRow", "format_calibration", "score_walk_forward", "walk_forward_hits"]

logger = logging.getLogger(__name__)

_BPS = 1e4
#: the steps printed when not every step is asked for
SUMMARY_STEPS = (1, 2, 3, 5, 10, 15, 30, 45, 60)


@dataclass(frozen=True)
class Hits:
    """Per model: hits of the 50% and 90% bands and the CRPS, shape ``(n_issues, n_steps)``."""

    hit50: dict[str, NDArray[np.bool_]]
    hit90: dict[str, NDArray[np.bool_]]
    crps: dict[str, NDArray[np.float64]]
    n_issues: int


def _issue_ends(
    t: NDArray[np.float64], settings: GbmSettings, every_seconds: int
) -> NDArray[np.int64]:
    """Indices ``e`` such that the bar ``e - 1`` ends on the schedule, with a whole lookback of
    bars before (the first bar starts at or before the window's start) and a bar ending at or
    after the last step's target."""
    ends = t + settings.bar_seconds
    on_time = np.isclose(np.mod(ends, every_seconds), 0.0)
    enough_past = ends - settings.lookback_seconds >= t[0]
    enough_future = ends + settings.horizon_seconds <= ends[-1]
    return np.flatnonzero(on_time & enough_past & enough_future) + 1


def walk_forward_hits(
    bars: pd.DataFrame, settings: GbmSettings, *, every_seconds: int = 3600, seed: int = 0
) -> Hits:
    """Forecast and score every symbol of ``bars`` (``symbol``, ``t`` bar start in epoch seconds,
    ``close``) on the schedule; the seed of the ``i``-th issue of a symbol is ``seed + i``."""
    models = list(settings.models)
    hit50: dict[str, list[NDArray[np.bool_]]] = {m: [] for m in models}
    hit90: dict[str, list[NDArray[np.bool_]]] = {m: [] for m in models}
    crps: dict[str, list[NDArray[np.float64]]] = {m: [] for m in models}
    n_issues = 0
    steps = np.arange(1, settings.n_steps + 1, dtype=np.float64) * settings.step_seconds
    for symbol, frame in bars.groupby("symbol", sort=True):
        frame = frame.sort_values("t")
        t = frame["t"].to_numpy(dtype=np.float64)
        close = frame["close"].to_numpy(dtype=np.float64)
        bar_end = t + settings.bar_seconds
        issues = _issue_ends(t, settings, every_seconds)
        logger.info("%s: %d forecasts issued every %ds", symbol, issues.size, every_seconds)
        for i, e in enumerate(issues):
            issue = float(bar_end[e - 1])
            lo = int(np.searchsorted(t, issue - settings.read_seconds, side="left"))
            out = forecast_symbol(
                str(symbol),
                t[lo:e],
                close[lo:e],
                settings,
                seed + i,
                family_from=issue - settings.lookback_seconds,
            )
            realised = close[np.searchsorted(bar_end, issue + steps, side="right") - 1]
            for fc in out:
                if not fc.ok or fc.summary is None:
                    raise ValueError(f"{symbol} at {issue:.0f}: {fc.model} {fc.status}")
                y = np.log(realised / fc.last_price) * _BPS
                pct = np.log(fc.summary.percentiles / fc.last_price) * _BPS
                hit50[fc.model].append((y >= pct[:, 24]) & (y <= pct[:, 74]))
                hit90[fc.model].append((y >= pct[:, 4]) & (y <= pct[:, 94]))
                crps[fc.model].append(crps_from_percentiles(y, pct))
            n_issues += 1
    return Hits(
        hit50={m: np.array(v) for m, v in hit50.items()},
        hit90={m: np.array(v) for m, v in hit90.items()},
        crps={m: np.array(v) for m, v in crps.items()},
        n_issues=n_issues,
    )


@dataclass(frozen=True)
class HorizonRow:
    """One model at one step, pooled over symbols and issues."""

    model: str
    step: int
    n: int
    cover50: float
    cover90: float
    ok50: bool
    ok90: bool
    crps_bps: float
    skill: float

    @property
    def ok(self) -> bool:
        return self.ok50 and self.ok90


def score_walk_forward(hits: Hits) -> list[HorizonRow]:
    """Coverage against the 95% binomial band and CRPS skill against ``hist_sim`` (NaN without
    it), per model and step."""
    rows = []
    n = hits.n_issues
    b50, b90 = binomial_band(n, 0.5), binomial_band(n, 0.9)
    base = hits.crps.get(BASELINE_MODEL)
    for model in hits.hit50:
        c50 = hits.hit50[model].mean(axis=0)
        c90 = hits.hit90[model].mean(axis=0)
        crps = hits.crps[model].mean(axis=0)
        skill = 1.0 - crps / base.mean(axis=0) if base is not None else np.full(crps.shape, np.nan)
        for k in range(c50.size):
            rows.append(
                HorizonRow(
                    model=model,
                    step=k + 1,
                    n=n,
                    cover50=float(c50[k]),
                    cover90=float(c90[k]),
                    ok50=bool(b50.low <= c50[k] <= b50.high),
                    ok90=bool(b90.low <= c90[k] <= b90.high),
                    crps_bps=float(crps[k]),
                    skill=float(skill[k]),
                )
            )
    return rows


def format_calibration(
    rows: Sequence[HorizonRow], *, steps: Sequence[int] | None = SUMMARY_STEPS
) -> str:
    """A table per model (``steps``, or every step for None) and a pass count over all steps."""
    if not rows:
        return "no forecast could be issued: the file is shorter than a lookback and a horizon"
    n = rows[0].n
    b50, b90 = binomial_band(n, 0.5), binomial_band(n, 0.9)
    lines = [
        f"{n} forecasts per model; 95% binomial band: 50% in [{b50.low:.3f}, {b50.high:.3f}], "
        f"90% in [{b90.low:.3f}, {b90.high:.3f}]",
        "",
        f"{'model':<13} {'step':>4} {'cov50':>6} {'':>4} {'cov90':>6} {'':>4} {'CRPS bps':>9} "
        f"{'skill':>7}",
    ]
    by_model: dict[str, list[HorizonRow]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    for model, group in by_model.items():
        for row in group:
            if steps is not None and row.step not in steps:
                continue
            skill = f"{row.skill:+.4f}" if math.isfinite(row.skill) else "-"
            lines.append(
                f"{model:<13} {row.step:>4} {row.cover50:>6.3f} {_mark(row.ok50):>4} "
                f"{row.cover90:>6.3f} {_mark(row.ok90):>4} {row.crps_bps:>9.3f} {skill:>7}"
            )
    lines.append("")
    lines.append(
        f"{'model':<13} {'steps in both bands':>20} {'50% ok':>7} {'90% ok':>7} {'skill > 0':>10}"
    )
    for model, group in by_model.items():
        skilled = sum(1 for r in group if math.isfinite(r.skill) and r.skill > 0)
        lines.append(
            f"{model:<13} {sum(r.ok for r in group):>14}/{len(group):<5} "
            f"{sum(r.ok50 for r in group):>7} {sum(r.ok90 for r in group):>7} "
            f"{skilled if model != BASELINE_MODEL else '-':>10}"
        )
    failing = {m: [r.step for r in g if not r.ok] for m, g in by_model.items()}
    for model, bad in failing.items():
        if bad:
            lines.append(f"{model}: outside a band at steps {', '.join(map(str, bad))}")
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"
