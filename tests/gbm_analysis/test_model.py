"""The maths: estimators recover known parameters, simulation matches theory, seeds reproduce."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gbm_analysis.exceptions import (
    ConfigError,
    DegenerateDataError,
    InsufficientDataError,
    InvalidDataError,
)
from gbm_analysis.model import (
    _PAIRS,
    PERCENTILE_LEVELS,
    SECONDS_PER_YEAR,
    StepDraws,
    bootstrap_log_paths,
    bootstrap_step_draws,
    estimate,
    estimate_ewma,
    ewma_variances,
    gbm_step_draws,
    grid_log_returns,
    log_paths_of,
    simulate_log_paths,
    simulate_paths,
    step_log_returns,
    summarise_draws,
    summarise_log_paths,
    summarise_paths,
)
from tests.gbm_analysis.conftest import BAR, gbm_closes

SIGMA = 0.8 / math.sqrt(SECONDS_PER_YEAR)
N_6H = 6 * 3600 // int(BAR)


def _series(closes: np.ndarray, times: np.ndarray | None = None, max_gap: float = 300.0):
    t = np.arange(closes.size) * BAR if times is None else times
    return grid_log_returns(t, closes, bar_seconds=BAR, max_gap_seconds=max_gap, min_bars=30)


@pytest.mark.parametrize("drift", ["zero", "estimated"])
def test_sigma_estimate_falls_within_its_standard_error(drift: str) -> None:
    inside = 0
    n_rep = 200
    for seed in range(n_rep):
        est = estimate(_series(gbm_closes(N_6H, sigma_per_s=SIGMA, seed=seed)), drift=drift)
        inside += abs(est.sigma - SIGMA) <= 1.96 * est.sigma_stderr
    band = stats.binom.ppf([0.005, 0.995], n_rep, 0.95)
    assert band[0] <= inside <= band[1]


def test_estimated_drift_recovers_mu_within_its_standard_error() -> None:
    mu = 50 * SIGMA**2  # strong enough to see within six hours of many replications
    errors = []
    for seed in range(100):
        est = estimate(
            _series(gbm_closes(N_6H, sigma_per_s=SIGMA, mu_per_s=mu, seed=seed)),
            drift="estimated",
        )
        errors.append(est.mu - mu)
    stderr = SIGMA / math.sqrt(N_6H * BAR)  # of the drift per second
    assert abs(np.mean(errors)) < 4 * stderr / math.sqrt(100)
    assert np.std(errors) == pytest.approx(stderr, rel=0.25)


def test_missing_bars_do_not_bias_sigma() -> None:
    closes = gbm_closes(N_6H, sigma_per_s=SIGMA, seed=3)
    keep = np.random.default_rng(4).random(N_6H) > 0.4  # 40% of slots had no trade
    series = _series(closes[keep], np.arange(N_6H)[keep] * BAR)
    est = estimate(series)
    assert series.n_bars == keep.sum() and series.dts.max() > BAR
    assert abs(est.sigma - SIGMA) < 4 * est.sigma_stderr


def test_a_long_gap_splits_the_series_and_its_jump_is_ignored() -> None:
    closes = gbm_closes(N_6H, sigma_per_s=SIGMA, seed=5)
    closes[N_6H // 2 :] *= 1.2  # a 20% overnight jump
    times = np.arange(N_6H) * BAR
    times[N_6H // 2 :] += 16 * 3600  # the market was closed for 16 hours
    series = _series(closes, times)
    split = estimate(series)
    assert abs(split.sigma - SIGMA) < 4 * split.sigma_stderr
    assert (series.n_segments, split.n_returns) == (2, N_6H - 2)
    assert np.abs(series.returns).max() < 0.05
    joined = _series(closes, times, max_gap=10**6)  # what happens without the split
    assert np.abs(joined.returns).max() > 0.15 and joined.n_segments == 1


@pytest.mark.parametrize(
    ("closes", "error", "message"),
    [
        (np.full(10, 5.0), InsufficientDataError, "10 bars in the window, need at least 30"),
        (np.full(40, 5.0), DegenerateDataError, "constant at 5 over 40 bars"),
        (
            np.r_[np.full(20, np.nan), np.linspace(1, 2, 20)],
            InvalidDataError,
            "20 bars had a NaN, infinite or non-positive close; 20 usable bars remain",
        ),
        (np.r_[np.zeros(15), np.linspace(1, 2, 20)], InvalidDataError, "15 bars had a NaN"),
    ],
)
def test_bad_or_thin_data_raises_a_clear_data_error(
    closes: np.ndarray, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        _series(closes)


def test_nan_bars_are_dropped_and_counted() -> None:
    closes = gbm_closes(200, sigma_per_s=SIGMA, seed=2)
    closes[[3, 50, 51]] = [np.nan, np.inf, -1.0]
    series = _series(closes)
    assert (series.n_bars, series.n_rejected) == (197, 3)
    assert np.isfinite(series.returns).all()


def test_unsorted_and_duplicated_bars_give_the_same_series() -> None:
    closes = gbm_closes(100, sigma_per_s=SIGMA, seed=8)
    times = np.arange(100) * BAR
    order = np.random.default_rng(1).permutation(100)
    shuffled = _series(np.r_[closes[order], closes[:5]], np.r_[times[order], times[:5]])
    plain = _series(closes, times)
    assert np.array_equal(shuffled.returns, plain.returns)
    assert shuffled.last_end == times[-1] + BAR


@pytest.mark.parametrize("dof", [None, 5.0])
def test_terminal_log_price_matches_theory(dof: float | None) -> None:
    s0, mu, sigma, dt, n_steps, n_paths = 100.0, 2e-5, 3e-4, 60.0, 30, 40_000
    paths = simulate_paths(s0, mu, sigma, dt, n_steps, n_paths, np.random.default_rng(0), dof=dof)
    horizon = dt * n_steps
    x = np.log(paths[:, -1] / s0)
    mean_se = sigma * math.sqrt(horizon / n_paths)
    assert abs(x.mean() - (mu - sigma**2 / 2) * horizon) < 4 * mean_se
    var = sigma**2 * horizon
    # the variance of the sample variance grows with the kurtosis of the sum of steps
    kurt = 0.0 if dof is None else 6 / (dof - 4) / n_steps
    assert abs(x.var() - var) < 4 * var * math.sqrt((2 + kurt) / n_paths)
    if dof is None:
        growth = s0 * math.exp(mu * horizon)
        assert abs(paths[:, -1].mean() - growth) < 4 * paths[:, -1].std() / math.sqrt(n_paths)


def test_student_t_innovations_have_fat_tails_and_unit_variance() -> None:
    one = simulate_paths(1.0, 0.0, 1e-3, 1.0, 1, 200_000, np.random.default_rng(2), dof=5.0)
    z = np.log(one[:, 0]) / 1e-3 + 0.5e-3
    assert abs(z.var() - 1.0) < 0.03
    assert stats.kurtosis(z) > 2.0  # normal: 0; t(5): 6


def _split_draws(draw: StepDraws, n_steps: int, n_paths: int, splits: list[int]) -> np.ndarray:
    """The per-step returns of ``draw``, asked for ``splits`` rows at a time (the rest last)."""
    out = np.empty((n_steps, n_paths))
    at = 0
    for size in [*splits, n_steps]:
        size = min(size, n_steps - at)
        if size:
            draw(out[at : at + size])
            at += size
    return out


@pytest.mark.parametrize("dof", [None, 4.5, "bootstrap"])
def test_same_seed_same_paths_whatever_the_calls(dof: float | str | None) -> None:
    """A stream of step draws gives the same numbers however the calls split it: 36,012
    draws span several of the samplers' blocks, and the splits fall inside them."""

    def draws(seed: int) -> StepDraws:
        rng = np.random.default_rng(seed)
        if dof == "bootstrap":
            return bootstrap_step_draws(np.linspace(-1e-3, 1e-3, 50), rng)
        return gbm_step_draws(0.0, 1e-4, 60.0, rng, dof=dof)  # type: ignore[arg-type]

    whole = _split_draws(draws(7), 12, 3_001, [])
    assert np.array_equal(whole, _split_draws(draws(7), 12, 3_001, [1, 5]))
    assert np.array_equal(whole, _split_draws(draws(7), 12, 3_001, [7, 1, 1]))
    assert not np.array_equal(whole, _split_draws(draws(8), 12, 3_001, []))
    if dof != "bootstrap":
        rng = np.random.default_rng(7)
        paths = simulate_log_paths(0.0, 1e-4, 60.0, 12, 3_001, rng, dof=dof)  # type: ignore[arg-type]
        assert np.array_equal(paths, np.cumsum(whole, axis=0))


@pytest.mark.parametrize(
    ("kind", "n_steps", "n_paths"),
    [("gbm", 60, 10_000), ("t", 13, 7_001), ("bootstrap", 60, 3), ("gbm", 1, 70_000)],
)
def test_summarising_as_drawn_equals_summarising_the_paths(
    kind: str, n_steps: int, n_paths: int
) -> None:
    """:func:`summarise_draws` (a few steps drawn, summed and summarised at a time) gives the
    numbers of :func:`summarise_log_paths` of the whole paths, to the bit: blocks of 6, 9 and
    1 steps of 10,000, 7,001 and 70,000 paths, and one block of every step for 3 paths."""
    hist = np.log(np.array([0.999, 1.0, 1.0, 1.001, 1.002] * 3))

    def draws() -> StepDraws:
        rng = np.random.default_rng(21)
        if kind == "bootstrap":
            return bootstrap_step_draws(hist, rng)
        return gbm_step_draws(1e-6, 2e-4, 60.0, rng, dof=5.0 if kind == "t" else None)

    s0 = 64.37
    expected = summarise_log_paths(log_paths_of(draws(), n_steps, n_paths), s0, n_sample=4)
    got = summarise_draws(draws(), n_steps, n_paths, s0, n_sample=4)
    for field in ("mean", "percentiles", "p_above", "sample", "hist_edges", "hist_counts"):
        assert np.array_equal(getattr(got, field), getattr(expected, field)), field
    with pytest.raises(ConfigError, match="must be positive"):
        summarise_draws(draws(), 0, n_paths, s0)


@pytest.mark.parametrize("dof", [4.05, 5.0, 30.0])
def test_student_t_draws_follow_the_t_distribution(dof: float) -> None:
    """Over the whole range of ``dof`` the estimator gives: one step of 200,000 paths, the
    innovations divided back out, against the t distribution's CDF (Kolmogorov-Smirnov) and
    its tails."""
    sigma, dt = 1e-3, 1.0
    steps = simulate_log_paths(
        0.0, sigma, dt, 1, 200_000, np.random.default_rng(11), dof=dof
    ).ravel()
    z = (steps + 0.5 * sigma**2 * dt) / (sigma * math.sqrt(dt))
    t = z / math.sqrt((dof - 2.0) / dof)  # back to the standard t
    assert stats.kstest(t, stats.t(dof).cdf).pvalue > 0.01
    for q in (1e-3, 1e-2, 0.99, 0.999):  # the tails too, within 4 standard errors
        share = float((t <= stats.t(dof).ppf(q)).mean())
        assert abs(share - q) < 4 * math.sqrt(q * (1 - q) / t.size)


def test_normal_draws_follow_the_normal_distribution_and_pairs_are_independent() -> None:
    """One step of 229,376 paths, the innovations divided back out, against the normal CDF
    (Kolmogorov-Smirnov) and its tails; the cosine and sine halves of each Box-Muller block
    (a radius each pair shares) are uncorrelated, and so are their squares."""
    sigma, dt, n = 1e-3, 1.0, 14 * _PAIRS
    steps = simulate_log_paths(0.0, sigma, dt, 1, n, np.random.default_rng(13)).ravel()
    z = (steps + 0.5 * sigma**2 * dt) / (sigma * math.sqrt(dt))
    assert stats.kstest(z, stats.norm.cdf).pvalue > 0.01
    for q in (1e-3, 1e-2, 0.99, 0.999):
        share = float((z <= stats.norm.ppf(q)).mean())
        assert abs(share - q) < 4 * math.sqrt(q * (1 - q) / n)
    pairs = z.reshape(-1, 2, _PAIRS)
    first, second = pairs[:, 0].ravel(), pairs[:, 1].ravel()
    for a, b in ((first, second), (first**2, second**2)):
        assert abs(np.corrcoef(a, b)[0, 1]) < 4 / math.sqrt(first.size)


def test_prices_are_s0_times_exp_of_the_log_paths() -> None:
    log_paths = simulate_log_paths(0.0, 5e-4, 60.0, 4, 9, np.random.default_rng(3), dof=6.0)
    prices = simulate_paths(20.0, 0.0, 5e-4, 60.0, 4, 9, np.random.default_rng(3), dof=6.0)
    assert log_paths.shape == (4, 9) and prices.shape == (9, 4)
    assert np.array_equal(prices, 20.0 * np.exp(log_paths.T))


def test_paths_start_from_s0_and_constant_when_sigma_and_mu_are_zero() -> None:
    flat = simulate_paths(101.23, 0.0, 0.0, 60.0, 5, 3, np.random.default_rng(0))
    assert (flat == 101.23).all()  # exactly: exp(log(101.23)) is not 101.23
    assert not summarise_paths(flat, 101.23, n_sample=1, bins=2).p_above.any()


@pytest.mark.parametrize(
    "kwargs",
    [{"s0": 0.0}, {"s0": float("nan")}, {"sigma": -1.0}, {"dt": 0.0}, {"n_steps": 0}, {"dof": 2.0}],
)
def test_simulate_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    args = {"s0": 1.0, "mu": 0.0, "sigma": 1e-3, "dt": 1.0, "n_steps": 2, "n_paths": 2}
    args.update(kwargs)
    with pytest.raises(ConfigError):
        simulate_paths(rng=np.random.default_rng(0), **args)  # type: ignore[arg-type]


def test_ewma_follows_a_volatility_regime_change() -> None:
    calm = gbm_closes(N_6H - 720, sigma_per_s=SIGMA, seed=1)
    wild = gbm_closes(720, sigma_per_s=3 * SIGMA, s0=float(calm[-1]), seed=2)
    series = _series(np.r_[calm, wild])
    whole = estimate(series)
    ewma = estimate_ewma(series, half_life_seconds=900, step_seconds=60)
    assert abs(ewma.sigma - 3 * SIGMA) < abs(whole.sigma - 3 * SIGMA)
    assert ewma.sigma > 2.5 * SIGMA


def test_ewma_dof_is_small_for_fat_tails_and_large_for_normal_returns() -> None:
    rng = np.random.default_rng(3)
    t_steps = SIGMA * math.sqrt(BAR) * rng.standard_t(4.5, N_6H) * math.sqrt(2.5 / 4.5)
    fat = _series(100 * np.exp(np.cumsum(t_steps)))
    normal = _series(gbm_closes(N_6H, sigma_per_s=SIGMA, seed=3))
    # kurtosis is scaled from 5-second bars to one step of 5 seconds here
    assert estimate_ewma(fat, half_life_seconds=10**6, step_seconds=5).dof < 8
    assert estimate_ewma(normal, half_life_seconds=10**6, step_seconds=5).dof > 15
    fixed = estimate_ewma(normal, half_life_seconds=900, step_seconds=60, dof=6.0)
    assert fixed.dof == 6.0


def test_historical_simulation_draws_only_observed_step_returns() -> None:
    series = _series(gbm_closes(400, sigma_per_s=SIGMA, seed=4))
    hist = step_log_returns(series, step_bars=12)
    assert hist.size == 400 - 12
    log_paths = bootstrap_log_paths(hist, 3, 500, np.random.default_rng(0))
    assert log_paths.shape == (3, 500)
    assert np.isin(log_paths[0], hist).all()
    with pytest.raises(InsufficientDataError, match="need at least 10"):
        bootstrap_log_paths(hist[:9], 3, 5, np.random.default_rng(0))


def test_summary_matches_numpy_percentiles_and_counts_every_path() -> None:
    paths = simulate_paths(20.0, 0.0, 5e-4, 60.0, 4, 3_001, np.random.default_rng(1))
    summary = summarise_paths(paths, 20.0, n_sample=5, bins=17)
    expected = np.percentile(paths, PERCENTILE_LEVELS * 100, axis=0).T
    assert np.allclose(summary.percentiles, expected)
    assert np.array_equal(summary.quantile(0.05), summary.percentiles[:, 4])
    assert summary.hist_counts.sum() == 3_001 and summary.hist_edges.size == 18
    assert np.array_equal(summary.p_above, (paths > 20.0).mean(axis=0))
    assert np.array_equal(summary.sample, paths[:5])
    with pytest.raises(ConfigError, match="level=0.333"):
        summary.quantile(0.333)


def _assert_within_a_float32_rounding(
    got: np.ndarray, expected: np.ndarray, log_paths: np.ndarray, s0: float
) -> None:
    """Percentiles from log returns sorted as float32: each interpolates between two order
    statistics ``s0 * exp(x)`` with ``x`` rounded to float32 (2^-24 of ``x``), so it is off by
    at most the largest such error among its step's paths, plus a few float64 roundings."""
    worst = np.max(s0 * np.exp(log_paths) * np.abs(log_paths), axis=1, keepdims=True)
    bound = worst * 2.0**-24 + expected * 8 * 2.0**-53
    assert (np.abs(got - expected) <= bound).all(), float(np.max(np.abs(got - expected) / bound))


def test_summary_of_log_paths_equals_the_summary_of_their_prices() -> None:
    """Percentiles from the sorted log returns, turned into prices afterwards, are the ones of
    the sorted prices within the float32 rounding of their sort keys, and to the bit where
    paths are flat (exact zeros); P(above), the sample and the histogram to the bit, moves that
    cancel included."""
    rng = np.random.default_rng(5)
    moves = rng.choice(np.log([0.999, 1.0, 1.001, 1.002]), size=(6, 2_001))
    moves[:, :300] = 0.0
    log_paths = np.cumsum(moves, axis=0)
    s0 = 101.23
    prices = np.ascontiguousarray((s0 * np.exp(log_paths)).T)
    expected = summarise_paths(prices, s0, n_sample=7, bins=13)
    got = summarise_log_paths(log_paths.copy(), s0, n_sample=7, bins=13)
    _assert_within_a_float32_rounding(got.percentiles, expected.percentiles, log_paths, s0)
    flat = expected.percentiles == s0
    assert flat.any() and (got.percentiles[flat] == s0).all()
    assert np.array_equal(got.p_above, expected.p_above)
    assert np.array_equal(got.sample, expected.sample)
    assert np.array_equal(got.hist_edges, expected.hist_edges)
    assert np.array_equal(got.hist_counts, expected.hist_counts)
    assert np.allclose(got.mean, expected.mean, rtol=1e-13, atol=0.0)
    assert got.quantile(0.01)[0] < s0 == got.quantile(0.5)[0]


@pytest.mark.parametrize(("n_paths", "scale"), [(10_000, 0.01), (2_001, 1.0), (7, 0.3)])
def test_log_path_percentiles_match_numpy_quantile_of_the_prices(
    n_paths: int, scale: float
) -> None:
    """On continuous fat-tailed data, every step's percentiles 1..99 are ``np.quantile`` of the
    prices (linear interpolation) within the float32 rounding of the sorted log returns, for
    moves from 1% to 100%; the log paths themselves are left as they were."""
    rng = np.random.default_rng(12)
    log_paths = np.cumsum(scale * rng.standard_t(4.0, size=(5, n_paths)), axis=0)
    s0 = 37_012.5
    before = log_paths.copy()
    got = summarise_log_paths(log_paths, s0, n_sample=3, bins=5)
    expected = np.quantile(s0 * np.exp(log_paths), PERCENTILE_LEVELS, axis=1).T
    _assert_within_a_float32_rounding(got.percentiles, expected, log_paths, s0)
    assert np.array_equal(log_paths, before)
    assert (np.diff(got.percentiles, axis=1) >= 0).all()


def _ewma_loop(x: np.ndarray, lam: np.ndarray, var0: float) -> tuple[np.ndarray, float]:
    prior, var = np.empty_like(x), var0
    for i in range(x.size):
        prior[i] = var
        var = lam[i] * var + (1.0 - lam[i]) * x[i]
    return prior, var


@pytest.mark.parametrize(
    ("n", "half_life", "max_dt"),
    [
        (4_319, 900.0, 5.0),  # six hours of 5-second bars: one block
        (3_000, 900.0, 300.0),  # gaps up to 5 minutes: blocks end on the decay
        (2_500, 0.25, 300.0),  # returns that each decay past the span, lam = 0 (underflow) too
        (1, 900.0, 5.0),
    ],
)
def test_ewma_variances_equal_the_serial_recursion(n: int, half_life: float, max_dt: float) -> None:
    rng = np.random.default_rng(n)
    dt = rng.choice(np.arange(5.0, max_dt + 5.0, 5.0), size=n)
    x = (rng.standard_t(4.0, size=n) * 1e-4) ** 2 / dt
    x[rng.random(n) < 0.2] = 0.0  # unchanged prices
    lam = np.power(0.5, dt / half_life)
    expected_prior, expected_last = _ewma_loop(x, lam, 3e-9)
    prior, last = ewma_variances(x, lam, 3e-9)
    assert np.allclose(prior, expected_prior, rtol=1e-12, atol=0.0)
    assert last == pytest.approx(expected_last, rel=1e-12, abs=0.0)
    if half_life < 1.0:
        assert (lam == 0.0).any() and (prior[1:][lam[:-1] == 0.0] == x[:-1][lam[:-1] == 0.0]).all()
