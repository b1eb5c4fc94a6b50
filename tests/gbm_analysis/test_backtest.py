"""Backtest scoring: calibrated forecasts cover at the nominal rate, bad ones are caught."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gbm_analysis.backtest import (
    POOLED_SYMBOL,
    binomial_band,
    crps_from_percentiles,
    kupiec_pvalue,
    realised_prices,
    summarise_scores,
)
from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import forecast_symbol
from gbm_analysis.model import PERCENTILE_LEVELS, SECONDS_PER_YEAR
from tests.gbm_analysis.conftest import BAR, gbm_closes, tick_closes

SIGMA = 0.5 / math.sqrt(SECONDS_PER_YEAR)


def test_band_coverage_on_synthetic_gbm_matches_the_nominal_level() -> None:
    """Forecast many independent GBM histories and realise each with its true continuation."""
    settings = GbmSettings(
        lookback_seconds=3600, n_paths=2_000, n_steps=3, models=("gbm",), n_sample_paths=0
    )
    n_hist, n_future = 720, 3 * 12
    rows = []
    for rep in range(300):
        closes = gbm_closes(n_hist + n_future, sigma_per_s=SIGMA, seed=1_000 + rep)
        times = np.arange(n_hist) * BAR
        (fc,) = forecast_symbol("SYN", times, closes[:n_hist], settings, run_seed=rep)
        assert fc.ok and fc.summary is not None
        for step in range(1, 4):
            rows.append(
                {
                    "symbol": "SYN",
                    "model": "gbm",
                    "run_id": f"r{rep}",
                    "issued_at": pd.Timestamp(0, unit="s", tz="UTC"),
                    "step": step,
                    "horizon_s": 60 * step,
                    "last_price": fc.last_price,
                    "percentiles": fc.summary.percentiles[step - 1],
                    "realised": closes[n_hist - 1 + 12 * step],
                    "status": "scored",
                }
            )
    summary = summarise_scores(pd.DataFrame(rows))
    pooled = summary[summary["symbol"] == POOLED_SYMBOL]
    assert list(pooled["step"]) == [1, 2, 3] and set(pooled["n"]) == {300}
    for row in pooled.itertuples():
        wide50, wide90 = binomial_band(300, 0.5, 0.99), binomial_band(300, 0.9, 0.99)
        assert wide50.low <= row.cover50 <= wide50.high
        assert wide90.low <= row.cover90 <= wide90.high
        assert math.isnan(row.crps_skill)  # no baseline in this run


def _gaussian_closes(n: int, bar: int, seed: int) -> np.ndarray:
    """A zero-drift GBM (E[S] constant) sampled every ``bar`` seconds."""
    return gbm_closes(n, sigma_per_s=1e-4, seed=seed) if bar == BAR else _t_closes(n, bar, seed, 0)


def _t_closes(n: int, bar: int, seed: int, dof: float = 5.0) -> np.ndarray:
    """Independent Student-t log returns of one ``bar`` each, unit variance scaled to
    1e-4 per second (dof 0: normal)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n) if dof == 0 else rng.standard_t(dof, n) * math.sqrt((dof - 2) / dof)
    return 100.0 * np.exp(np.cumsum(1e-4 * math.sqrt(bar) * z))


FAMILIES = {
    # each model on data of its own family: GBM on GBM; EWMA-t on constant-volatility Student-t
    # steps (60-s bars, so a bar is one simulated step); historical simulation on i.i.d. returns,
    # normal (GBM) and fat-tailed
    "gbm on gbm": ("gbm", _gaussian_closes, int(BAR), 3600),
    "ewma_t on t steps": ("ewma_t", _t_closes, 60, 6 * 3600),
    "hist_sim on gbm": ("hist_sim", _gaussian_closes, int(BAR), 3600),
    "hist_sim on iid t steps": ("hist_sim", _t_closes, 60, 6 * 3600),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_model_covers_at_the_nominal_rate_on_data_of_its_own_family(family: str) -> None:
    """300 independent histories, each forecast 60 one-minute steps ahead under the default zero
    drift and realised by its own continuation: the 50% and 90% bands cover within their 99%
    binomial band at steps 1, 30 and 60. The historical-simulation baseline used to bootstrap the
    window's in-sample drift, and covered 0.74 at step 60 of a GBM (band 0.85-0.94)."""
    model, closes_of, bar, lookback = FAMILIES[family]
    settings = GbmSettings(
        lookback_seconds=lookback,
        bar_seconds=bar,
        n_paths=2_000,
        n_steps=60,
        models=(model,),
        n_sample_paths=0,
    )
    n_hist, per_step, reps, steps = lookback // bar, 60 // bar, 300, (1, 30, 60)
    rows = []
    for rep in range(reps):
        closes = closes_of(n_hist + 60 * per_step, bar, 2_000 + rep)
        times = np.arange(n_hist) * float(bar)
        (fc,) = forecast_symbol("SYN", times, closes[:n_hist], settings, run_seed=rep)
        assert fc.ok and fc.summary is not None, fc.message
        for step in steps:
            rows.append(
                {
                    "symbol": "SYN",
                    "model": model,
                    "run_id": f"r{rep}",
                    "issued_at": pd.Timestamp(0, unit="s", tz="UTC"),
                    "step": step,
                    "horizon_s": 60 * step,
                    "last_price": fc.last_price,
                    "percentiles": fc.summary.percentiles[step - 1],
                    "realised": closes[n_hist - 1 + per_step * step],
                    "status": "scored",
                }
            )
    pooled = summarise_scores(pd.DataFrame(rows)).query("symbol == @POOLED_SYMBOL")
    band50, band90 = binomial_band(reps, 0.5, 0.99), binomial_band(reps, 0.9, 0.99)
    for row in pooled.itertuples():
        assert band50.low <= row.cover50 <= band50.high, (row.step, row.cover50, band50)
        assert band90.low <= row.cover90 <= band90.high, (row.step, row.cover90, band90)


def _normal_rows(scale: float, model: str, y: np.ndarray) -> pd.DataFrame:
    pct = 100 * np.exp(stats.norm.ppf(PERCENTILE_LEVELS) * scale / 1e4)
    return pd.DataFrame(
        {
            "symbol": ["S"] * y.size,
            "model": model,
            "run_id": [f"r{i}" for i in range(y.size)],
            "issued_at": pd.Timestamp("2024-01-01", tz="UTC"),
            "step": 1,
            "horizon_s": 60,
            "last_price": 100.0,
            "percentiles": [pct] * y.size,
            "realised": 100 * np.exp(y / 1e4),
            "status": "scored",
        }
    )


def test_too_narrow_bands_fail_coverage_and_lose_to_the_baseline() -> None:
    y = np.random.default_rng(0).standard_normal(400) * 10.0  # outcomes in bps, sd 10
    frame = pd.concat(
        [
            _normal_rows(10.0, "gbm", y),  # calibrated
            _normal_rows(3.0, "ewma_t", y),  # far too narrow
            _normal_rows(20.0, "hist_sim", y),  # too wide: the baseline
        ]
    )
    rows = summarise_scores(frame).set_index(["symbol", "model"])
    good, narrow = rows.loc[("S", "gbm")], rows.loc[("S", "ewma_t")]
    assert good["cover50_lo"] <= good["cover50"] <= good["cover50_hi"]
    assert good["cover90_lo"] <= good["cover90"] <= good["cover90_hi"]
    assert narrow["cover90"] < narrow["cover90_lo"] and narrow["kupiec90_p"] < 1e-6
    assert good["crps_skill"] > 0 > narrow["crps_skill"]
    assert good["pinball_bps"] < narrow["pinball_bps"]
    assert good["n_paired"] == 400
    # expected CRPS of a calibrated N(0, s) forecast is s / sqrt(pi)
    assert good["crps_bps"] == pytest.approx(10 / math.sqrt(math.pi), rel=0.1)


def test_crps_from_percentiles_matches_the_normal_closed_form() -> None:
    y = np.array([-2.0, 0.0, 0.7, 3.0])
    pct = np.tile(stats.norm.ppf(PERCENTILE_LEVELS), (4, 1))
    exact = y * (2 * stats.norm.cdf(y) - 1) + 2 * stats.norm.pdf(y) - 1 / math.sqrt(math.pi)
    assert np.allclose(crps_from_percentiles(y, pct), exact, rtol=0.03, atol=0.01)


def _normal_crps(y: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of a standard normal forecast at outcome ``y``."""
    return y * (2 * stats.norm.cdf(y) - 1) + 2 * stats.norm.pdf(y) - 1 / math.sqrt(math.pi)


def test_crps_from_the_99_percentiles_is_unbiased_for_a_normal_forecast() -> None:
    y = np.linspace(-4.0, 4.0, 801)
    pct = np.tile(stats.norm.ppf(PERCENTILE_LEVELS), (y.size, 1))
    ratio = crps_from_percentiles(y, pct) / _normal_crps(y)
    assert np.abs(ratio - 1.0).max() < 0.004  # the plain 2 * mean over 99 levels: +0.7..1.0%
    # expected score of a calibrated forecast (outcome ~ N(0, 1)) is 1 / sqrt(pi)
    dense = np.linspace(-8.0, 8.0, 16_001)
    scores = crps_from_percentiles(dense, stats.norm.ppf(PERCENTILE_LEVELS)[None, :])
    expected = np.trapz(scores * stats.norm.pdf(dense), dense)
    assert expected * math.sqrt(math.pi) == pytest.approx(1.0, abs=1e-3)  # plain mean: 1.0099


@pytest.mark.parametrize(
    ("hits", "n", "p", "reject"),
    [(90, 100, 0.9, False), (80, 100, 0.9, True), (48, 100, 0.5, False), (30, 100, 0.5, True)],
)
def test_kupiec_rejects_only_miscalibrated_hit_counts(
    hits: int, n: int, p: float, reject: bool
) -> None:
    assert (kupiec_pvalue(hits, n, p) < 0.05) is reject


def test_kupiec_handles_all_hits_and_no_data() -> None:
    assert kupiec_pvalue(100, 100, 0.9) < 0.01
    assert math.isnan(kupiec_pvalue(0, 0, 0.9))
    assert math.isnan(binomial_band(0, 0.9).low)


def test_realised_price_is_the_last_close_before_the_target() -> None:
    bar_end = np.array([100.0, 105.0, 110.0, 500.0])
    close = np.array([1.0, 2.0, 3.0, 4.0])
    price, status = realised_prices(
        np.array([99.0, 105.0, 107.0, 400.0, 500.0, 501.0]),
        bar_end,
        close,
        max_gap_seconds=60,
        now=600.0,
        pending_max_seconds=3600,
    )
    assert status.tolist() == ["gap", "scored", "scored", "gap", "scored", "pending"]
    assert price[1:3].tolist() == [2.0, 2.0] and price[4] == 4.0
    assert np.isnan(price[[0, 3, 5]]).all()
    empty = realised_prices(
        np.array([1.0]),
        np.array([]),
        np.array([]),
        max_gap_seconds=60,
        now=2.0,
        pending_max_seconds=3600,
    )
    assert empty[1].tolist() == ["pending"]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # within an hour of every open target: still waiting for a bar
        (3_000.0, ["scored", "pending", "pending", "pending"]),
        # more than an hour after the first two only
        (4_000.0, ["scored", "expired", "expired", "pending"]),
        # more than an hour after each target: final, whatever comes later
        (10_000.0, ["scored", "expired", "expired", "expired"]),
    ],
)
def test_a_target_no_bar_follows_expires_after_the_bound(now: float, expected: list[str]) -> None:
    """A stock after the close, a symbol dropped from the feed: no bar ends after the target."""
    bar_end = np.array([100.0, 105.0])
    targets = np.array([105.0, 110.0, 200.0, 5_000.0])
    _, status = realised_prices(
        targets,
        bar_end,
        np.array([1.0, 2.0]),
        max_gap_seconds=60,
        now=now,
        pending_max_seconds=3600,
    )
    assert status.tolist() == expected


def test_a_bar_arriving_after_the_bound_does_not_revive_an_expired_target() -> None:
    """The next session's first bar comes 17 hours later: the evening's targets stay expired
    (before, they turned into gaps), so a step's final state does not depend on when the
    backtest runs."""
    bar_end = np.array([100.0, 105.0, 100.0 + 17 * 3600])
    _, status = realised_prices(
        np.array([110.0, 1_000.0]),
        bar_end,
        np.array([1.0, 2.0, 3.0]),
        max_gap_seconds=60,
        now=200_000.0,
        pending_max_seconds=3600,
    )
    assert status.tolist() == ["expired", "expired"]


def test_expired_steps_are_counted_apart_not_scored() -> None:
    frame = _normal_rows(10.0, "gbm", np.zeros(5))
    frame.loc[1, ["realised", "status"]] = [np.nan, "pending"]
    frame.loc[2, ["realised", "status"]] = [np.nan, "gap"]
    frame.loc[[3, 4], "realised"] = np.nan
    frame.loc[[3, 4], "status"] = "expired"
    row = summarise_scores(frame).iloc[0]
    assert (row["n"], row["n_pending"], row["n_gap"], row["n_expired"]) == (1, 1, 1, 2)


def test_pending_and_gap_steps_are_counted_not_scored() -> None:
    frame = _normal_rows(10.0, "gbm", np.zeros(4))
    frame.loc[1, ["realised", "status"]] = [np.nan, "pending"]
    frame.loc[2, ["realised", "status"]] = [np.nan, "gap"]
    row = summarise_scores(frame).iloc[0]
    assert (row["n"], row["n_pending"], row["n_gap"]) == (2, 1, 1)
    assert summarise_scores(frame.iloc[[1, 2]]).empty


@pytest.mark.parametrize("last_price", [3.99, 101.23, 100.07])
def test_a_realised_price_equal_to_the_last_price_is_inside_a_flat_band(last_price: float) -> None:
    """60% of the one-minute moves are zero, so q25..q75 after one step is the last price itself;
    a realised price that did not move sits on both edges of the 50% band: a hit."""
    closes = tick_closes(last_price, zero_share=0.6, n_minutes=360, seed=3)
    settings = GbmSettings(n_paths=5_000, n_steps=1, n_sample_paths=0, models=("hist_sim",))
    (fc,) = forecast_symbol("T", np.arange(closes.size) * BAR, closes, settings, run_seed=4)
    assert fc.summary is not None
    row = {
        "symbol": "T",
        "model": "hist_sim",
        "run_id": "r0",
        "issued_at": pd.Timestamp("2024-01-01", tz="UTC"),
        "step": 1,
        "horizon_s": 60,
        "last_price": fc.last_price,
        "percentiles": fc.summary.percentiles[0],
        "realised": last_price,
        "status": "scored",
    }
    scored = summarise_scores(pd.DataFrame([row])).iloc[0]
    assert (scored["cover50"], scored["cover90"]) == (1.0, 1.0)


def test_band_edges_one_rounding_away_from_the_realised_price_still_cover_it() -> None:
    """Forecasts stored before the last price was kept exact have flat edges at exp(log(s0))."""
    s0 = 101.23
    edge = math.exp(math.log(s0))
    assert edge != s0
    frame = _normal_rows(10.0, "gbm", np.zeros(1))
    pct = frame["percentiles"].iloc[0] / 100.0 * s0
    pct[20:80] = edge  # 60% of the paths were flat
    frame["percentiles"] = [pct]
    frame["last_price"] = s0
    frame["realised"] = s0
    assert summarise_scores(frame).iloc[0]["cover50"] == 1.0
