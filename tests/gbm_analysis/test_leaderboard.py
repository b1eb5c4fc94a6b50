"""The one backtest: the GBM family on the learned models' issue times, rows and ranking."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from gbm_analysis.backtest import binomial_band
from gbm_analysis.leaderboard import ScoreKey, family_quantiles, format_leaderboard, score_rows
from gbm_analysis.learned import N_STEPS, HorizonScores, outcomes, prepare_minutes
from gbm_analysis.learned import score_log_quantiles as score
from tests.gbm_analysis.test_learned import gbm_minutes

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_gbm_family_on_minute_bars_is_calibrated_on_gbm() -> None:
    minutes = prepare_minutes(gbm_minutes(6_000, seed=8))
    positions = np.arange(400, 6_000 - N_STEPS, 45)  # 124 issue times, 45 minutes apart
    q = family_quantiles(minutes, positions, "gbm", n_paths=1_000)
    assert q.shape == (positions.size, N_STEPS, 99) and np.isfinite(q).all()
    scores = score(outcomes(minutes, positions), q)
    band = binomial_band(positions.size, 0.9, confidence=0.99)
    for step in (1, 30):
        assert band.low <= scores.coverage_90[step - 1] <= band.high, scores.coverage_90[step - 1]
    # a zero-drift model's median is the last price: it cannot beat the random walk's RMSE
    np.testing.assert_allclose(scores.rmse_bps / scores.rmse_rw_bps, 1.0, atol=0.02)


def _scores(crps: float, n: int = 100) -> HorizonScores:
    a = np.full(N_STEPS, 1.0)
    return HorizonScores(
        n=n,
        coverage_50=a * 0.5,
        coverage_90=a * 0.8,
        crps_bps=a * crps,
        pinball_bps=a * crps / 2,
        rmse_bps=a * 9.0,
        rmse_rw_bps=a * 10.0,
        directional=a * 0.52,
    )


def test_score_rows_one_per_step_with_kupiec_and_rmse_ratio() -> None:
    rows = score_rows(
        ScoreKey("S", "mlp", 3), _scores(5.0), evaluated_at=T0, window_start=T0, window_end=T0
    )
    assert [r["horizon"] for r in rows] == list(range(1, N_STEPS + 1))
    r = rows[0]
    assert (r["model_version"], r["rmse_ratio"], r["coverage_90"]) == (3, 0.9, 0.8)
    assert r["kupiec_p_90"] < 0.01 < r["kupiec_p_50"]  # 80 hits of 100 at 90%: rejected


def test_leaderboard_ranks_by_crps_with_skill_against_hist_sim() -> None:
    rows = []
    for model, crps in (("hist_sim", 10.0), ("mlp", 9.0), ("prophet", 50.0)):
        rows += score_rows(
            ScoreKey("S", model, None),
            _scores(crps),
            evaluated_at=T0,
            window_start=T0,
            window_end=T0,
        )
    text = format_leaderboard(rows, steps=(1,))
    ranked = [line.split()[3] for line in text.splitlines()[1:]]
    assert ranked == ["mlp", "hist_sim", "prophet"]
    assert "+0.100" in text.splitlines()[1]  # 1 - 9 / 10
    assert format_leaderboard([]).startswith("no scores yet")
