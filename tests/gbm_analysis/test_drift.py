"""Drift detection on a shifted series: PSI and KS against the training window."""

from __future__ import annotations

from prometheus_client import generate_latest

from gbm_analysis.drift import check_drift, drift_registry
from gbm_analysis.learned import prepare_minutes
from tests.gbm_analysis.test_learned import gbm_minutes


def test_a_doubled_volatility_drifts_and_the_same_process_does_not() -> None:
    reference = prepare_minutes(gbm_minutes(5_000, seed=1))
    same = prepare_minutes(gbm_minutes(1_440, seed=2))
    shifted = prepare_minutes(gbm_minutes(1_440, seed=3, sigma_bps=16.0))

    calm = {r.feature: r for r in check_drift("S", "mlp", reference, same)}
    assert set(calm) == {"return", "abs_return", "range", "log_volume"}
    assert not any(r.drifted for r in calm.values()), calm
    assert all(r.psi < 0.1 for r in calm.values())

    moved = {r.feature: r for r in check_drift("S", "mlp", reference, shifted)}
    for feature in ("return", "abs_return", "range"):
        assert moved[feature].drifted and moved[feature].psi > 0.25, moved[feature]
        assert moved[feature].ks_p < 1e-6
    assert not moved["log_volume"].drifted  # volume did not change

    text = generate_latest(drift_registry([*calm.values(), *moved.values()])).decode()
    assert 'forecast_drift_detected{model="mlp",symbol="S"} 1.0' in text
    assert 'forecast_drift_psi{feature="abs_return",model="mlp",symbol="S"}' in text
