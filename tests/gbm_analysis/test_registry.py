"""MLflow round trip on a real SQLite store: log, register, alias, load; production moves only to
a version that scores better on the same test window."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gbm_analysis import mlp
from gbm_analysis.learned import N_STEPS, HorizonScores, prepare_minutes, walk_forward_split
from gbm_analysis.training import TrainOutcome, TrainSettings, train_symbol
from tests.gbm_analysis.test_learned import gbm_minutes

SYMBOL = "BINANCE:BTCUSDT"
# MLflow 3.17's SQL store uses a loader SQLAlchemy 2.1 deprecates (not our code)
NOLOAD = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")
pytestmark = NOLOAD


def _scores(crps: float) -> HorizonScores:
    flat = np.full(N_STEPS, 0.5)
    return HorizonScores(
        n=10,
        coverage_50=flat,
        coverage_90=flat + 0.4,
        crps_bps=np.full(N_STEPS, crps),
        pinball_bps=np.full(N_STEPS, crps / 2),
        rmse_bps=np.ones(N_STEPS),
        rmse_rw_bps=np.ones(N_STEPS),
        directional=flat,
    )


@pytest.fixture(scope="module")
def trained() -> TrainOutcome:
    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        mlp=mlp.MlpParams(max_iter=10),
        baselines=False,
    )
    (outcome,) = train_symbol(SYMBOL, gbm_minutes(3_500), settings)
    assert outcome.ok, outcome.message
    return outcome


def test_registry_round_trip_and_promotion(
    tmp_path: Path, mlflow_uri: str, trained: TrainOutcome
) -> None:
    from mlflow import MlflowClient

    from gbm_analysis.registry import PRODUCTION, Registry, registered_name

    uri = mlflow_uri
    registry = Registry(uri, tmp_path / "artifacts")
    assert registry.production("mlp", SYMBOL) is None

    first = registry.log(dataclasses.replace(trained, scores=_scores(10.0)))
    assert first.promoted and first.version == 1

    # worse than v1 on the same window: registered, not promoted
    worse = registry.log(
        dataclasses.replace(trained, scores=_scores(12.0), incumbent_scores=_scores(10.0))
    )
    assert (worse.version, worse.promoted) == (2, False)
    assert registry.production("mlp", SYMBOL)[0] == 1  # type: ignore[index]

    better = registry.log(
        dataclasses.replace(trained, scores=_scores(9.0), incumbent_scores=_scores(10.0))
    )
    assert (better.version, better.promoted) == (3, True)

    version, run_id, loaded = registry.production("mlp", SYMBOL)  # type: ignore[misc]
    assert (version, run_id) == (3, better.run_id)
    # the loaded forecaster is the trained one: same quantiles for the same bars
    minutes = prepare_minutes(gbm_minutes(3_500))
    positions = np.array([len(minutes) - 1])
    np.testing.assert_allclose(
        loaded.predict(minutes, positions),
        trained.fitted.predict(minutes, positions),  # type: ignore[union-attr]
    )

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registered_name("mlp", SYMBOL)
    assert int(client.get_model_version_by_alias(name, PRODUCTION).version) == 3
    run = client.get_run(better.run_id)
    assert run.data.params["window.train_start"] == str(trained.windows["train_start"])
    assert run.data.params["param.hidden"] == "[15, 40, 20]"
    assert run.data.metrics["oos_crps_bps"] == pytest.approx(9.0)
    assert run.data.metrics["incumbent_crps_bps"] == pytest.approx(10.0)
    history = client.get_metric_history(better.run_id, "crps_by_step")
    assert sorted(m.step for m in history) == list(range(1, N_STEPS + 1))

    # the pyfunc flavour answers with the last bar's quantiles, one row per step
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@{PRODUCTION}")
    frame = pyfunc.predict(gbm_minutes(200))
    assert frame.shape == (N_STEPS, 99)


def test_logging_and_loading_a_forecaster_raises_no_user_warning(
    tmp_path: Path, mlflow_uri: str, trained: TrainOutcome
) -> None:
    """MLflow looks for an input type hint on the pyfunc's ``predict`` where the class is defined
    and again where a load unpickles it, and warns when there is none: once a process, from
    inside its own warning filters, so no filter of ours (or of pytest) can silence it."""
    from gbm_analysis.registry import Registry

    registry = Registry(mlflow_uri, tmp_path / "artifacts")
    warnings.onceregistry.clear()  # an earlier test of this process may have had it already
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        registry.log(dataclasses.replace(trained, scores=_scores(10.0)))
        assert registry.production("mlp", SYMBOL) is not None
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []


def test_walk_forward_windows_are_logged_in_time_order(trained: TrainOutcome) -> None:
    w = trained.windows
    assert w["train_start"] < w["train_end"] <= w["calib_start"] < w["calib_end"]
    assert w["calib_end"] <= w["test_start"] < w["test_end"]
    split = walk_forward_split(3_500, first=mlp.LOOKBACK, calib=800, test=600, purge=N_STEPS)
    assert (w["test_start"] - w["calib_end"]) == (split.test[0] - split.calib[-1] - 1) * 60


def _drifting_then_flat(n: int, *, flat_last: int, drift_bps: float, seed: int) -> pd.DataFrame:
    """GBM minutes whose log price climbs ``drift_bps`` a minute until the last ``flat_last``
    minutes (which hold the test window) and is driftless after: a model fitted on the early part
    forecasts a climb that does not come."""
    bars = gbm_minutes(n, seed=seed)
    climb = np.exp(np.minimum(np.arange(n), n - flat_last) * drift_bps / 1e4)
    for column in ("open", "high", "low", "close"):
        bars[column] = bars[column] * climb
    return bars


def test_a_retrain_replaces_production_only_when_it_scores_better_on_the_latest_window(
    tmp_path: Path, mlflow_uri: str
) -> None:
    """Real trainings, real scores, the real MLflow SQLite store: each retrain scores the
    production version on the retrain's own (latest) test window; a model fitted on a climbing
    market forecasts a climb the flat test window does not have, so it scores worse."""
    from gbm_analysis.registry import Registry

    settings = TrainSettings(
        models=("mlp",),
        train_minutes=1_500,
        calib_minutes=800,
        test_minutes=600,
        mlp=mlp.MlpParams(max_iter=20),
        baselines=False,
    )
    n = 3_500
    flat = prepare_minutes(gbm_minutes(n, seed=5))
    climbing = prepare_minutes(_drifting_then_flat(n, flat_last=700, drift_bps=5.0, seed=6))
    registry = Registry(mlflow_uri, tmp_path / "artifacts")

    def retrain(bars: pd.DataFrame) -> tuple[TrainOutcome, int, bool]:
        found = registry.production("mlp", SYMBOL)
        incumbents = {"mlp": found[2]} if found else {}
        (outcome,) = train_symbol(SYMBOL, bars, settings, incumbents)
        logged = registry.log(outcome)
        assert logged.promoted == (found is None or logged.crps < logged.incumbent_crps)
        return outcome, logged.version, logged.promoted

    first, v1, promoted = retrain(climbing)
    assert (v1, promoted) == (1, True)  # nothing to beat

    # fitted on flat data, scored with v1 on the flat data's newest test window: better
    better, v2, promoted = retrain(flat)
    assert (v2, promoted) == (2, True)
    assert better.incumbent_scores is not None and better.scores is not None
    assert registry_crps(better.scores) < 0.9 * registry_crps(better.incumbent_scores)

    # fitted on the climb again, scored with v2 on that data's newest (flat) window: worse
    worse, v3, promoted = retrain(climbing)
    assert (v3, promoted) == (3, False)
    assert registry_crps(worse.scores) > registry_crps(worse.incumbent_scores)

    # what the hourly forecast loads (serving.learned_forecast_rows): still v2, v2's forecaster
    version, run_id, loaded = registry.production("mlp", SYMBOL)  # type: ignore[misc]
    assert version == 2
    positions = np.array([len(flat) - 61])
    np.testing.assert_allclose(
        loaded.predict(flat, positions),
        better.fitted.predict(flat, positions),  # type: ignore[union-attr]
    )
    assert registry.client.get_run(run_id).data.metrics["oos_crps_bps"] == pytest.approx(
        registry_crps(better.scores)
    )


def registry_crps(scores: HorizonScores | None) -> float:
    from gbm_analysis.registry import mean_crps

    return mean_crps(scores)
