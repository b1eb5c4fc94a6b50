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


def test_only_a_psi_past_the_threshold_triggers_a_retrain() -> None:
    """The KS test flags long, serially dependent windows easily; it is shown, not acted on."""
    from dataclasses import replace

    from gbm_analysis.drift import DriftResult, retrain_symbols

    ks_only = DriftResult("KS", "mlp", "return", 0.05, 0.2, 1e-12, 0.25, 5_000, 360)
    psi = replace(ks_only, symbol="PSI", feature="abs_return", psi=0.4, ks_p=0.5)
    calm = replace(ks_only, symbol="CALM", ks_p=0.5)
    assert ks_only.drifted and not ks_only.psi_exceeded
    assert psi.drifted and psi.psi_exceeded and not calm.drifted
    assert retrain_symbols([ks_only, psi, calm]) == ["PSI"]
    # exactly at the threshold counts ("past" = at or above)
    assert retrain_symbols([replace(calm, psi=0.25)]) == ["CALM"]

    text = generate_latest(drift_registry([ks_only, psi, calm], retrained=["PSI"])).decode()
    assert 'forecast_drift_retrain{symbol="PSI"} 1.0' in text
    assert 'forecast_drift_retrain{symbol="KS"} 0.0' in text
    assert 'forecast_drift_retrain{symbol="CALM"} 0.0' in text
    assert 'forecast_drift_detected{model="mlp",symbol="KS"} 1.0' in text


def test_format_drift_names_what_triggers_a_retrain() -> None:
    from dataclasses import replace

    from gbm_analysis.drift import DriftResult
    from gbm_analysis.drift_job import format_drift

    r = DriftResult("S", "mlp", "return", 0.05, 0.2, 1e-12, 0.25, 5_000, 360)
    lines = format_drift([r, replace(r, feature="range", psi=0.3), replace(r, ks_p=0.5)])
    verdicts = [line.split("  ")[-1].strip() for line in lines.splitlines()[1:]]
    assert verdicts == ["drift (KS)", "DRIFT (PSI: retrain)", "ok"]
