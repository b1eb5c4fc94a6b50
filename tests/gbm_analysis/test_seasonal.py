"""``seasonal_fhs``: calibrated at short horizons where the variance follows the clock, and the
output contract of the GBM family (percentiles 1..99, P(above last), sample paths)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gbm_analysis.backtest import binomial_band
from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import forecast_symbol
from gbm_analysis.model import PERCENTILE_LEVELS, grid_log_returns
from gbm_analysis.seasonal import seasonal_blocks

MINUTE = 60
HOUR = 3600
DAY = 86_400
T0 = 1_740_787_200.0  # 2025-03-01 00:00 UTC, a full hour
SIGMA_MIN = 8e-4  # per one-minute step on average


def _profile() -> np.ndarray:
    """Variance of each minute of the hour relative to the mean: the first minutes after a full
    hour carry 4x to 1.5x (as the 5-8 minutes after the hour do, more mildly, on Binance)."""
    bump = 1.0 + 3.0 * np.exp(-np.arange(60) / 2.0)
    return bump / bump.mean()


def _seasonal_minutes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-minute bars whose returns are normal with the variance of their minute of the hour
    (the return ending at hh:01 is the first minute after the hour)."""
    rng = np.random.default_rng(seed)
    starts = T0 + MINUTE * np.arange(n)
    minute_of_return = ((starts + MINUTE) // MINUTE % 60).astype(np.int64)
    sd = SIGMA_MIN * np.sqrt(_profile()[(minute_of_return - 1) % 60])
    closes = 100.0 * np.exp(np.cumsum(sd * rng.standard_normal(n)))
    return starts, closes


SETTINGS = GbmSettings(
    lookback_seconds=6 * HOUR,
    seasonal_history_seconds=7 * DAY,
    bar_seconds=MINUTE,
    step_seconds=MINUTE,
    n_steps=60,
    n_paths=2_000,
    n_sample_paths=5,
    models=("gbm", "seasonal_fhs"),
)


def test_short_horizons_are_covered_where_plain_gbm_is_too_narrow() -> None:
    """Hourly forecasts over 12 days after a 7-day history: at 1-3 minutes the seasonal model's
    90% and 50% bands cover inside their 99% binomial band; gbm's 90% band, with the window's
    average variance, covers far too little."""
    n_issues = 288
    starts, closes = _seasonal_minutes(7 * 1440 + n_issues * 60 + 60, seed=5)
    hits: dict[str, list[np.ndarray]] = {"gbm": [], "seasonal_fhs": []}
    hits50: dict[str, list[np.ndarray]] = {"gbm": [], "seasonal_fhs": []}
    for k in range(n_issues):
        end = 7 * 1440 + 60 * k  # bars [.., end) are known; the issue is at a full hour
        issue = T0 + MINUTE * end
        assert issue % HOUR == 0
        lo = end - 7 * 1440
        out = forecast_symbol(
            "SIM",
            starts[lo:end],
            closes[lo:end],
            SETTINGS,
            run_seed=k,
            family_from=issue - 6 * HOUR,
        )
        realised = np.log(closes[end : end + 3] / closes[end - 1])
        for fc in out:
            assert fc.ok and fc.summary is not None, fc.message
            q = np.log(fc.summary.percentiles[:3] / fc.last_price)
            hits[fc.model].append((realised >= q[:, 4]) & (realised <= q[:, 94]))
            hits50[fc.model].append((realised >= q[:, 24]) & (realised <= q[:, 74]))
    band90, band50 = binomial_band(n_issues, 0.9, 0.99), binomial_band(n_issues, 0.5, 0.99)
    seasonal90 = np.mean(hits["seasonal_fhs"], axis=0)
    seasonal50 = np.mean(hits50["seasonal_fhs"], axis=0)
    gbm90 = np.mean(hits["gbm"], axis=0)
    assert np.all((band90.low <= seasonal90) & (seasonal90 <= band90.high)), seasonal90
    assert np.all((band50.low <= seasonal50) & (seasonal50 <= band50.high)), seasonal50
    assert gbm90[0] < band90.low, gbm90  # step 1: the bump is 3.4x the average variance
    assert np.all(gbm90 < seasonal90)


def test_the_profile_finds_the_minutes_after_the_hour() -> None:
    starts, closes = _seasonal_minutes(7 * 1440, seed=1)
    series = grid_log_returns(starts, closes, bar_seconds=60, max_gap_seconds=300, min_bars=30)
    blocks = seasonal_blocks(
        series, bar_seconds=60, step_seconds=60, n_steps=60, half_life_seconds=1800
    )
    # bucket b holds the returns ending in minute b of the hour: bucket 1 = the first minute
    assert blocks.profile[1] > 2.5 and blocks.profile[30] < 1.0
    assert blocks.profile[1] == pytest.approx(_profile()[0], rel=0.25)
    # every full hour but the last (no future yet) starts a block; the minute around fills up
    assert blocks.n_exact == 7 * 24 - 1 and blocks.n_blocks == 300
    assert blocks.sigma > 0


def test_the_profile_is_unbiased_at_the_peak_the_forecasts_start_from() -> None:
    """Every minute's squared return is exactly its variance here (only the signs are random),
    so the profile has no noise to shrink away: it must be the truth, also at the peak after the
    full hour where every hourly forecast starts; and the first step of the forecast, blocks
    borrowed from the minute either side of the hour included, must have the peak's spread.
    A prior of 20 returns toward the flat profile put the peak 7.7% low and the step 1.2% low."""
    rng = np.random.default_rng(7)
    n = 7 * 1440
    starts = T0 + MINUTE * np.arange(n)
    minute_of_return = ((starts + MINUTE) // MINUTE % 60).astype(np.int64)
    sd = SIGMA_MIN * np.sqrt(_profile()[(minute_of_return - 1) % 60])
    closes = 100.0 * np.exp(np.cumsum(sd * rng.choice([-1.0, 1.0], size=n)))
    series = grid_log_returns(starts, closes, bar_seconds=60, max_gap_seconds=300, min_bars=30)
    blocks = seasonal_blocks(
        series, bar_seconds=60, step_seconds=60, n_steps=60, half_life_seconds=1800
    )
    assert blocks.n_exact < blocks.n_blocks  # the minute around the hour is borrowed from
    # bucket b holds the returns ending in minute b; the pseudo-count of one return moves a
    # bucket of 168 by 1/169 of its distance to the mean
    assert blocks.profile == pytest.approx(np.roll(_profile(), 1), rel=0.006)
    first_step = blocks.cumulative[:, 0]
    rms = math.sqrt(float(np.mean(first_step**2)))
    assert rms == pytest.approx(SIGMA_MIN * math.sqrt(_profile()[0]), rel=0.003)


def test_output_contract_of_the_family() -> None:
    starts, closes = _seasonal_minutes(3 * 1440, seed=2)
    settings = GbmSettings(
        lookback_seconds=6 * HOUR,
        bar_seconds=60,
        step_seconds=60,
        n_steps=60,
        n_paths=4_000,
        n_sample_paths=5,
        models=("seasonal_fhs",),
    )
    (fc,) = forecast_symbol("SIM", starts, closes, settings, run_seed=3, family_from=starts[-360])
    assert fc.ok and fc.summary is not None
    s = fc.summary
    assert s.percentiles.shape == (60, PERCENTILE_LEVELS.size)
    assert np.all(np.diff(s.percentiles, axis=1) >= 0)
    assert s.p_above.shape == (60,) and np.all((0 < s.p_above) & (s.p_above < 1))
    assert s.sample.shape == (5, 60) and np.all(s.sample > 0)
    assert s.hist_counts.sum() == 4_000
    # zero drift: the mean price is the last price at every step (Monte Carlo error only)
    assert np.allclose(s.mean / fc.last_price, 1.0, atol=5 * SIGMA_MIN * math.sqrt(60 / 4_000))
    assert fc.n_bars == 360  # the other models' window; the history fed only this model
    assert fc.mu == 0.0 and fc.sigma > 0 and math.isnan(fc.dof)
    # the first steps are wider than the late ones per minute (the bump after the hour is
    # ahead: the last bar ends at a full hour)
    assert starts[-1] + 60 == pytest.approx(round((starts[-1] + 60) / HOUR) * HOUR)
    width = np.log(s.percentiles[:, 94] / s.percentiles[:, 4])
    assert width[0] > 1.4 * (width[59] / math.sqrt(60))
    again = forecast_symbol("SIM", starts, closes, settings, run_seed=3, family_from=starts[-360])
    assert np.array_equal(again[0].summary.percentiles, s.percentiles)  # type: ignore[union-attr]


def test_too_short_a_history_is_a_status_not_a_crash() -> None:
    starts, closes = _seasonal_minutes(90, seed=4)  # 90 minutes: no whole hour after most
    (fc,) = forecast_symbol(
        "SIM", starts, closes, GbmSettings(bar_seconds=60, models=("seasonal_fhs",)), run_seed=1
    )
    assert fc.status == "too_few_bars" and "whole horizons" in fc.message


def test_a_flat_history_is_a_constant_price() -> None:
    starts = T0 + MINUTE * np.arange(3 * 1440)
    (fc,) = forecast_symbol(
        "SIM",
        starts,
        np.full(starts.size, 5.0),
        GbmSettings(bar_seconds=60, models=("seasonal_fhs",)),
        run_seed=1,
    )
    assert fc.status == "constant_price"


def test_calibration_walk_forward_issues_on_the_hour_and_counts_the_band() -> None:
    """``python -m gbm_analysis calibration``'s core: one forecast per full hour with a whole
    lookback before and a whole horizon after; every step scored, passes counted."""
    import pandas as pd

    from gbm_analysis.calibration import format_calibration, score_walk_forward, walk_forward_hits

    starts, closes = _seasonal_minutes(2 * 1440 + 30, seed=6)  # starts at a full hour
    bars = pd.DataFrame({"symbol": "SIM", "t": starts, "close": closes})
    settings = GbmSettings(
        lookback_seconds=6 * HOUR,
        seasonal_history_seconds=DAY,
        bar_seconds=60,
        step_seconds=60,
        n_steps=60,
        n_paths=500,
        n_sample_paths=0,
        models=("gbm", "hist_sim", "seasonal_fhs"),
    )
    hits = walk_forward_hits(bars, settings, every_seconds=HOUR)
    # issues at 06:00 .. 47:00 of the 48 h 30 min: a lookback before, an hour after
    assert hits.n_issues == 48 - 6
    assert hits.hit90["gbm"].shape == (42, 60)
    rows = score_walk_forward(hits)
    assert len(rows) == 3 * 60 and {r.n for r in rows} == {42}
    assert all(r.skill == 0.0 for r in rows if r.model == "hist_sim")
    text = format_calibration(rows)
    assert "42 forecasts per model" in text and "steps in both bands" in text
    assert text.count("seasonal_fhs ") >= 9  # the summary steps, and the pass count
