"""The backtest run: read every stored forecast and the bars that realised it, score, report.

Reads with the cassandra driver, one forecast partition (symbol, day) at a time, and logs
progress per partition; the scoring itself is :mod:`gbm_analysis.backtest` (pure).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from gbm_analysis.backtest import BASELINE_MODEL, POOLED_SYMBOL, realised_prices, summarise_scores
from gbm_analysis.io import GbmStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["format_report", "realised_forecasts", "run_backtest"]

logger = logging.getLogger(__name__)


#: ``attrs`` keys of :func:`realised_forecasts`' result: bar rows left out as unusable, and the
#: runs (and their forecast steps) left out because they never finished writing
UNUSABLE_BARS = "unusable_bars"
INCOMPLETE_RUNS = "incomplete_runs"
INCOMPLETE_STEPS = "incomplete_steps"


def realised_forecasts(
    store: GbmStore,
    *,
    bar_seconds: int,
    max_gap_seconds: int,
    now: datetime,
    pending_max_seconds: int,
) -> pd.DataFrame:
    """Every stored forecast step with its ``realised`` price (NaN unless scored) and ``status``
    (see :func:`gbm_analysis.backtest.realised_prices`), as of ``now``.

    Only complete runs are scored (those with their ``gbm_runs`` row, which a run writes last;
    see :meth:`GbmStore.complete_runs`): a run killed mid-write may lack symbols, models or
    steps. ``result.attrs`` counts what was left out: ``incomplete_runs`` and
    ``incomplete_steps``, and ``unusable_bars``, the bar rows that cannot give a price (see
    :meth:`GbmStore.read_bars`).
    """
    import pandas as pd

    by_symbol: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for symbol, day in store.forecast_partitions():
        by_symbol[symbol].append((symbol, day))
    frames = []
    n_unusable = 0
    complete: dict[object, set[tuple[datetime, str]]] = {}
    incomplete_runs: set[tuple[object, str]] = set()
    n_incomplete_steps = 0
    for i, (symbol, parts) in enumerate(sorted(by_symbol.items()), start=1):
        chunks = list(store.iter_forecasts(parts))  # type: ignore[arg-type]
        if not chunks:
            continue
        fc = pd.concat(chunks, ignore_index=True)
        done = _complete_mask(store, fc, complete)
        if not done.all():
            left_out = fc[~done]
            incomplete_runs.update(zip(left_out["issued_at"], left_out["run_id"], strict=True))
            n_incomplete_steps += len(left_out)
            logger.warning(
                "%s: skipped %d forecast steps of runs %s: no gbm_runs row (killed mid-write, or "
                "still writing)",
                symbol,
                len(left_out),
                ",".join(sorted(set(left_out["run_id"]))),
            )
            fc = fc[done].reset_index(drop=True)
            if fc.empty:
                continue
        start = fc["as_of"].min().to_pydatetime() - timedelta(seconds=max_gap_seconds)
        # bars up to the bound past the last target tell whether each target resolved in time
        end = fc["target_ts"].max().to_pydatetime() + timedelta(
            seconds=max(max_gap_seconds, pending_max_seconds) + bar_seconds
        )
        read = store.read_bars(symbol, start, end)
        bars = read.frame
        n_unusable += read.n_unusable
        targets = fc["target_ts"].astype("int64").to_numpy() / 1e9
        price, status = realised_prices(
            targets,
            bars["window_end"].to_numpy(dtype=np.float64),
            bars["close"].to_numpy(dtype=np.float64),
            max_gap_seconds=max_gap_seconds,
            now=now.timestamp(),
            pending_max_seconds=pending_max_seconds,
        )
        fc["realised"] = price
        fc["status"] = status
        logger.info(
            "[%d/%d] %s: %d forecast steps, %d scored, %d pending, %d in gaps, %d expired "
            "(%d bars read)",
            i,
            len(by_symbol),
            symbol,
            len(fc),
            int((status == "scored").sum()),
            int((status == "pending").sum()),
            int((status == "gap").sum()),
            int((status == "expired").sum()),
            len(bars),
        )
        frames.append(fc)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs[UNUSABLE_BARS] = n_unusable
    out.attrs[INCOMPLETE_RUNS] = len(incomplete_runs)
    out.attrs[INCOMPLETE_STEPS] = n_incomplete_steps
    return out


def _complete_mask(
    store: GbmStore, fc: pd.DataFrame, cache: dict[object, set[tuple[datetime, str]]]
) -> NDArray[np.bool_]:
    """Which forecast rows belong to a complete run; ``cache`` keeps each day's runs."""
    for day in fc["day"].unique():
        if day not in cache:
            cache[day] = store.complete_runs(day)
    keys = zip(fc["day"], fc["issued_at"], fc["run_id"], strict=True)
    return np.array(
        [(issued.to_pydatetime(), run_id) in cache[day] for day, issued, run_id in keys],
        dtype=bool,
    )


def run_backtest(
    store: GbmStore,
    *,
    bar_seconds: int,
    max_gap_seconds: int,
    evaluated_at: datetime,
    backtest_id: str,
    pending_max_seconds: int = 3600,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every stored forecast as of ``evaluated_at`` and write ``gbm_backtest``; returns
    (steps, summary). A step no bar ended within ``pending_max_seconds`` after is ``expired``."""
    forecasts = realised_forecasts(
        store,
        bar_seconds=bar_seconds,
        max_gap_seconds=max_gap_seconds,
        now=evaluated_at,
        pending_max_seconds=pending_max_seconds,
    )
    if forecasts.empty:
        return forecasts, forecasts
    summary = summarise_scores(forecasts)
    if not summary.empty:
        written = store.write_backtest(
            summary, backtest_id=backtest_id, evaluated_at=evaluated_at.astimezone(UTC)
        )
        logger.info("backtest %s: wrote %d rows", backtest_id, written)
    return forecasts, summary


def _fmt(value: float, spec: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _skipped_lines(forecasts: pd.DataFrame) -> list[str]:
    """One line per kind of input the backtest left out (see :func:`realised_forecasts`)."""
    lines: list[str] = []
    n_incomplete = int(forecasts.attrs.get(INCOMPLETE_RUNS, 0))
    if n_incomplete:
        lines.append(
            f"incomplete runs skipped: {n_incomplete} "
            f"({forecasts.attrs.get(INCOMPLETE_STEPS, 0)} forecast steps without a gbm_runs row: "
            "killed mid-write, or still writing)"
        )
    n_unusable = int(forecasts.attrs.get(UNUSABLE_BARS, 0))
    if n_unusable:
        lines.append(
            f"unusable 5-second bar rows skipped: {n_unusable} (a null window_end, or a null, "
            "non-finite or non-positive close; the log names the symbols)"
        )
    return lines


def format_report(forecasts: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Plain-text report of the pooled rows: coverage with its binomial band, losses, skill."""
    lines = _skipped_lines(forecasts)
    if forecasts.empty:
        return "\n".join(
            [
                "backtest: no complete forecast run stored yet; run `python -m gbm_analysis run "
                "--once` first",
                *lines,
            ]
        )
    counts = forecasts["status"].value_counts()
    lines.insert(
        0,
        f"backtest: {len(forecasts)} forecast steps from "
        f"{forecasts['run_id'].nunique()} runs, {forecasts['symbol'].nunique()} symbols: "
        f"{counts.get('scored', 0)} scored, {counts.get('pending', 0)} not yet realised, "
        f"{counts.get('gap', 0)} in data gaps, {counts.get('expired', 0)} expired (no bar "
        "followed the target in time)",
    )
    if summary.empty:
        lines.append("nothing to score yet: no forecast step has been realised by the bars")
        return "\n".join(lines)
    pooled = summary[summary["symbol"] == POOLED_SYMBOL]
    n_steps = int(pooled["step"].max())
    show = sorted({1, max(1, n_steps // 4), max(1, n_steps // 2), n_steps})
    header = (
        f"{'model':<9}{'step':>5}{'horizon':>9}{'n':>6}  {'cover50 [band]':<22}"
        f"{'cover90 [band]':<22}{'pinball':>8}{'crps':>8}{'skill':>7}"
    )
    lines += [
        "",
        "pooled over symbols; losses in bps of log return; skill = 1 - CRPS/CRPS("
        f"{BASELINE_MODEL})",
        header,
        "-" * len(header),
    ]
    for row in pooled[pooled["step"].isin(show)].to_dict("records"):
        c50, c90 = (
            f"{row[c]:.2f} [{_fmt(row[c + '_lo'], '.2f')},{_fmt(row[c + '_hi'], '.2f')}]"
            for c in ("cover50", "cover90")
        )
        flag50 = "" if row["cover50_lo"] <= row["cover50"] <= row["cover50_hi"] else "!"
        flag90 = "" if row["cover90_lo"] <= row["cover90"] <= row["cover90_hi"] else "!"
        lines.append(
            f"{row['model']:<9}{row['step']:>5}{row['horizon_s']:>8}s{row['n']:>6}  "
            f"{c50 + flag50:<22}{c90 + flag90:<22}{row['pinball_bps']:>8.2f}"
            f"{row['crps_bps']:>8.2f}{_fmt(row['crps_skill'], '.3f'):>7}"
        )
    lines.append("! = coverage outside its 95% binomial band")
    return "\n".join(lines)
