"""The learned forecasters: output contract, walk-forward split, conformal coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gbm_analysis import mlp, prophet_model, xgb
from gbm_analysis.backtest import binomial_band
from gbm_analysis.learned import (
    N_STEPS,
    WalkForwardError,
    WalkForwardSplit,
    check_walk_forward,
    conformal_offsets,
    interpolate_horizons,
    outcomes,
    prepare_minutes,
    score_log_quantiles,
    to_summary,
    walk_forward_split,
)
from gbm_analysis.model import PERCENTILE_LEVELS

SIGMA_BPS = 8.0  # per minute, about BTC's


def gbm_minutes(n: int, *, seed: int = 0, sigma_bps: float = SIGMA_BPS) -> pd.DataFrame:
    """1-minute OHLCV bars of a zero-drift GBM: close from exact steps, high/low around them."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(n) * sigma_bps / 1e4
    close = 100.0 * np.exp(np.cumsum(r - 0.5 * (sigma_bps / 1e4) ** 2))
    prev = np.append(100.0, close[:-1])
    wiggle = np.abs(rng.standard_normal(n)) * sigma_bps / 2e4
    return pd.DataFrame(
        {
            "t": 1_740_787_200 + 60 * np.arange(n),
            "open": prev,
            "high": np.maximum(prev, close) * (1 + wiggle),
            "low": np.minimum(prev, close) * (1 - wiggle),
            "close": close,
            "volume": rng.gamma(2.0, 5.0, n),
        }
    )


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return prepare_minutes(gbm_minutes(4_000))


def _split(n: int, first: int) -> WalkForwardSplit:
    return walk_forward_split(n, first=first, calib=800, test=600, purge=N_STEPS)


@pytest.mark.parametrize(
    ("module", "params", "first"),
    [
        (mlp, mlp.MlpParams(max_iter=20), mlp.LOOKBACK),
        (xgb, xgb.XgbParams(n_estimators=10), xgb.FIRST),
        (prophet_model, prophet_model.ProphetParams(train_days=1, uncertainty_samples=100), 60),
    ],
    ids=["mlp", "xgb", "prophet"],
)
def test_each_model_gives_the_gbm_family_output(
    minutes: pd.DataFrame, module: object, params: object, first: int
) -> None:
    split = _split(len(minutes), first)
    fitted = module.fit(minutes, split, params)  # type: ignore[attr-defined]
    positions = split.test[::100]
    q = fitted.predict(minutes, positions)
    assert q.shape == (positions.size, N_STEPS, 99)
    assert np.isfinite(q).all()
    assert (np.diff(q, axis=-1) >= 0).all(), "quantiles cross"
    s0 = float(minutes["close"].iloc[positions[0]])
    summary = to_summary(q[0], s0)
    assert summary.percentiles.shape == (N_STEPS, 99)
    assert summary.p_above.shape == (N_STEPS,)
    assert ((summary.p_above >= 0) & (summary.p_above <= 1)).all()
    assert summary.sample.shape == (0, N_STEPS)
    assert summary.hist_counts.sum() == 9_800  # between q01 and q99 of 10,000 notional draws
    # the spread widens with the horizon
    width = summary.quantile(0.95) - summary.quantile(0.05)
    assert width[-1] > width[0]


def test_a_shuffled_split_is_refused() -> None:
    order = np.random.default_rng(1).permutation(1_000)
    with pytest.raises(WalkForwardError, match="train: positions are not in time order"):
        WalkForwardSplit(train=order[:600], calib=order[600:800], test=order[800:], purge=10)


def test_parts_that_overlap_within_the_target_horizon_are_refused() -> None:
    with pytest.raises(WalkForwardError, match="train reaches position 599 \\+ 60"):
        check_walk_forward(np.arange(600), np.arange(620, 800), np.arange(900, 1000), purge=60)
    with pytest.raises(WalkForwardError, match="calib reaches"):
        check_walk_forward(np.arange(500), np.arange(600, 800), np.arange(700, 1000), purge=0)


def test_walk_forward_split_is_in_time_order_with_purge_gaps() -> None:
    split = walk_forward_split(10_000, first=30, calib=1_000, test=500, purge=60)
    assert split.train[0] == 30
    assert split.calib[0] - split.train[-1] == 61
    assert split.test[0] - split.calib[-1] == 61
    assert split.test[-1] + 60 == 10_000 - 1  # the last test target is the last bar


def test_mlp_never_validates_on_a_random_split(minutes: pd.DataFrame) -> None:
    fitted = mlp.fit(minutes, _split(len(minutes), mlp.LOOKBACK), mlp.MlpParams(max_iter=5))
    assert fitted.network[-1].early_stopping is False  # type: ignore[index]
    assert fitted.network[-1].hidden_layer_sizes == (15, 40, 20)  # type: ignore[index]


def test_conformal_offsets_cover_new_draws_at_their_levels() -> None:
    # 400 independent calibrations (columns) of 200 fat-tailed residuals each, scored on fresh
    # draws: the mean coverage is the conformal guarantee, (k_hi - k_lo) / (n + 1) >= nominal
    rng = np.random.default_rng(3)
    reps, n = 400, 200
    offsets = conformal_offsets(rng.standard_t(4, size=(n, reps)))
    fresh = rng.standard_t(4, size=(2_000, reps))
    for lo, hi, nominal, exact in ((4, 94, 0.9, 181 / 201), (24, 74, 0.5, 101 / 201)):
        inside = (offsets[lo] <= fresh) & (fresh <= offsets[hi])
        mean = float(inside.mean())
        # sd of the mean over 400 calibrations: sqrt(p (1 - p) / n / reps) < 0.002
        assert abs(mean - exact) < 0.008, (nominal, mean)
        assert mean >= nominal - 0.008


def test_conformal_mlp_covers_on_simulated_gbm() -> None:
    minutes = prepare_minutes(gbm_minutes(9_000, seed=5))
    split = walk_forward_split(
        len(minutes), first=mlp.LOOKBACK, calib=3_000, test=3_000, purge=N_STEPS
    )
    fitted = mlp.fit(minutes, split, mlp.MlpParams(max_iter=30))
    positions = split.test[::30]  # 100 issue times, 30 minutes apart
    scores = score_log_quantiles(outcomes(minutes, positions), fitted.predict(minutes, positions))
    for step in (1, 10, 30):
        for nominal, coverage in ((0.9, scores.coverage_90), (0.5, scores.coverage_50)):
            band = binomial_band(scores.n, nominal, confidence=0.99)
            assert band.low <= coverage[step - 1] <= band.high, (step, nominal, coverage[step - 1])


def test_interpolated_horizons_keep_the_trained_ones_and_grow_as_sqrt_time() -> None:
    base = np.sort(np.random.default_rng(0).standard_normal(99))
    horizons = np.array([1, 4, 16])
    q = np.stack([base * np.sqrt(h) for h in horizons])  # a random walk's quantiles
    out = interpolate_horizons(horizons, q, n_steps=20)
    np.testing.assert_allclose(out[[0, 3, 15]], q)
    np.testing.assert_allclose(out[8], base * 3.0)  # sqrt(9): linear in sqrt(step) is exact here
    np.testing.assert_allclose(out[19], q[-1])  # held after the last trained horizon


def test_to_summary_p_above_matches_the_quantiles() -> None:
    q = np.tile(np.linspace(-10, 88, 99), (N_STEPS, 1))  # 0 sits at the 11% level
    summary = to_summary(q, 50.0)
    np.testing.assert_allclose(summary.p_above, 1 - 0.11, atol=1e-9)
    np.testing.assert_allclose(summary.percentiles[:, 49], 50.0 * np.exp(39 / 1e4))
    assert PERCENTILE_LEVELS.size == summary.percentiles.shape[1]
