"""Per-symbol forecasts: every model runs, thin data yields reasons, seeds reproduce."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import FORECAST_COLUMNS, forecast_frame, forecast_symbol
from gbm_analysis.model import SECONDS_PER_YEAR
from tests.gbm_analysis.conftest import BAR, gbm_closes, tick_closes

SIGMA = 0.7 / math.sqrt(SECONDS_PER_YEAR)
SETTINGS = GbmSettings(n_paths=1_000, n_steps=10, n_sample_paths=4, histogram_bins=9)


def _bars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return 1.7e9 + np.arange(n) * BAR, gbm_closes(n, sigma_per_s=SIGMA, seed=seed)


def test_every_model_forecasts_a_healthy_symbol() -> None:
    t, c = _bars(2_000)
    results = forecast_symbol("A", t, c, SETTINGS, run_seed=1)
    assert [r.model for r in results] == ["gbm", "ewma_t", "hist_sim"]
    for r in results:
        assert r.ok and r.summary is not None
        assert r.as_of == t[-1] + BAR and r.last_price == c[-1] and r.n_bars == 2_000
        assert r.summary.percentiles.shape == (10, 99) and r.summary.sample.shape == (4, 10)
    gbm, ewma, _ = results
    assert abs(gbm.sigma - SIGMA) < 4 * gbm.sigma_stderr and gbm.mu == 0.0
    assert 4 < ewma.dof <= 30


def test_a_demo_sized_window_is_enough() -> None:
    t, c = _bars(SETTINGS.min_bars)  # 30 bars: two and a half minutes
    assert all(r.ok for r in forecast_symbol("A", t, c, SETTINGS, run_seed=1))


@pytest.mark.parametrize(
    ("closes", "status"),
    [
        (np.full(5, 3.0), "too_few_bars"),
        (np.full(100, 3.0), "constant_price"),
        (np.r_[np.full(90, np.nan), np.linspace(1, 2, 10)], "invalid_data"),
    ],
)
def test_thin_or_bad_data_gives_a_status_per_model(closes: np.ndarray, status: str) -> None:
    results = forecast_symbol("B", np.arange(closes.size) * BAR, closes, SETTINGS, run_seed=1)
    assert [(r.model, r.status) for r in results] == [(m, status) for m in SETTINGS.models]
    assert all(r.summary is None and r.message for r in results)


def test_hist_sim_alone_can_lack_history() -> None:
    t, c = _bars(SETTINGS.min_bars)
    settings = GbmSettings(n_paths=100, n_steps=3, step_seconds=150, n_sample_paths=1)
    by_model = {r.model: r for r in forecast_symbol("C", t, c, settings, run_seed=1)}
    assert by_model["gbm"].ok
    assert by_model["hist_sim"].status == "too_few_bars"
    assert "historical step returns" in by_model["hist_sim"].message


def test_same_seed_same_forecast_independent_of_other_symbols() -> None:
    t, c = _bars(500)
    a = forecast_symbol("A", t, c, SETTINGS, run_seed=42)
    b = forecast_symbol("A", t, c, SETTINGS, run_seed=42)
    other = forecast_symbol("Z", t, c, SETTINGS, run_seed=42)
    for x, y, z in zip(a, b, other, strict=True):
        assert np.array_equal(x.summary.percentiles, y.summary.percentiles)  # type: ignore[union-attr]
        assert not np.array_equal(x.summary.sample, z.summary.sample)  # type: ignore[union-attr]
    different = forecast_symbol("A", t, c, SETTINGS, run_seed=43)
    assert not np.array_equal(a[0].summary.sample, different[0].summary.sample)  # type: ignore[union-attr]


def test_forecast_frame_accepts_spark_timestamps() -> None:
    t, c = _bars(300)
    bars = pd.DataFrame(
        {"symbol": "A", "window_start": pd.to_datetime(t, unit="s", utc=True), "close": c}
    )
    frame = forecast_frame(bars.sample(frac=1.0, random_state=1), SETTINGS, run_seed=3)
    assert list(frame.columns) == list(FORECAST_COLUMNS)
    assert list(frame["model"]) == ["gbm", "ewma_t", "hist_sim"]
    direct = forecast_symbol("A", t, c, SETTINGS, run_seed=3)
    assert frame["as_of"].iloc[0] == pytest.approx(direct[0].as_of)
    assert frame["percentiles"].iloc[0] == direct[0].summary.percentiles.ravel().tolist()  # type: ignore[union-attr]
    assert len(frame["sample"].iloc[0]) == 4 * 10
    assert forecast_frame(bars.iloc[:0], SETTINGS, run_seed=3).empty


@pytest.mark.parametrize("last_price", [3.99, 101.23, 64250.5, 100.07])
def test_flat_paths_stay_at_the_last_price_and_do_not_count_as_above(last_price: float) -> None:
    """40% of the one-minute moves are zero: 40% of the paths are flat after one step, and a flat
    path is not above the last price whatever float rounding ``log``/``exp`` would do to it."""
    closes = tick_closes(last_price, zero_share=0.4, n_minutes=360, seed=2)
    settings = GbmSettings(n_paths=10_000, n_steps=2, n_sample_paths=0, models=("hist_sim",))
    (fc,) = forecast_symbol("T", np.arange(closes.size) * BAR, closes, settings, run_seed=1)
    assert fc.ok and fc.summary is not None and fc.last_price == last_price
    hist = np.log(closes[12:] / closes[:-12])  # the overlapping one-minute returns it resamples
    up = float((hist > 0).mean())
    assert 0.25 < up < 0.35 and float((hist == 0).mean()) > 0.35
    assert abs(fc.summary.p_above[0] - up) < 4 * math.sqrt(up * (1 - up) / settings.n_paths)
    assert fc.summary.quantile(0.5)[0] == last_price  # flat paths are the median, exactly


@pytest.mark.parametrize(
    ("symbol", "seconds_per_year", "label"),
    [
        ("AAPL", 252 * 6.5 * 3600, "252 d x 6.5 h"),
        ("BINANCE:BTCUSDT", 365 * 24 * 3600, "365 d x 24 h"),
        ("OANDA:EUR_USD", 260 * 24 * 3600, "260 d x 24 h"),
    ],
)
def test_sigma_is_annualised_by_the_convention_of_the_symbols_market(
    symbol: str, seconds_per_year: float, label: str
) -> None:
    """A stock's returns exist only in its sessions: its per-second sigma is annualised over 252
    sessions of 6.5 h, not over calendar seconds (2.3 times larger); crypto over 365 x 24 h."""
    t, c = _bars(500)
    for fc in forecast_symbol(symbol, t, c, SETTINGS, run_seed=1):
        assert fc.sigma_annualised == pytest.approx(fc.sigma * math.sqrt(seconds_per_year))
        assert fc.annualisation == label
    frame = forecast_frame(
        pd.DataFrame({"symbol": symbol, "window_start": t, "close": c}), SETTINGS, run_seed=1
    )
    assert set(frame["annualisation"]) == {label}


@pytest.mark.parametrize("drift", ["zero", "estimated"])
def test_hist_sim_treats_the_windows_drift_as_gbm_drift_says(drift: str) -> None:
    """Six hours of a strong uptrend (+0.3% an hour, about 10 standard errors of the drift):
    under zero drift the baseline's paths are a martingale, like the GBM's, and its stored mu is
    0; estimated keeps the in-sample trend in both models."""
    t = 1.7e9 + np.arange(4_320) * BAR
    c = gbm_closes(4_320, sigma_per_s=SIGMA, mu_per_s=0.003 / 3600, seed=9)
    settings = GbmSettings(
        n_paths=20_000, n_steps=60, n_sample_paths=0, drift=drift, models=("gbm", "hist_sim")
    )
    gbm, hist = forecast_symbol("A", t, c, settings, run_seed=5)
    assert gbm.summary is not None and hist.summary is not None
    growth = hist.summary.mean[-1] / hist.last_price - 1.0  # over the one-hour horizon
    if drift == "zero":
        assert hist.mu == gbm.mu == 0.0
        assert abs(growth) < 5e-4  # 0.3% before: the window's drift, carried forward
    else:
        assert hist.mu == pytest.approx(gbm.mu, rel=0.2) and hist.mu > 0
        assert growth == pytest.approx(gbm.summary.mean[-1] / gbm.last_price - 1.0, rel=0.3)
