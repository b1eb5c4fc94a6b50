"""MLflow tracking and model registry of the learned forecasters (SQLite under ``STATE_DIR``).

Each (model, symbol) is one registered model, ``forecast_<model>_<symbol>`` (the symbol's
non-alphanumerics as ``_``). Every training is one MLflow run in the experiment ``forecasting``:
its parameters, the training/calibration/test windows, the out-of-sample metrics (per step as a
metric series) and the fitted forecaster as a pyfunc model, registered as a new version. The alias
``production`` moves to the new version only when it scores a lower mean CRPS than the version
holding it on the same (latest) test window, or when no version holds it yet.

Browse it with ``mlflow ui --backend-store-uri sqlite:///$STATE_DIR/mlflow/mlflow.db`` (the full
``mlflow`` package is installed for that).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gbm_analysis.learned import Forecaster, HorizonScores
from gbm_analysis.training import REPORT_STEPS, TrainOutcome

__all__ = [
    "EXPERIMENT",
    "PRODUCTION",
    "Registry",
    "RegistryResult",
    "registered_name",
]

logger = logging.getLogger(__name__)

EXPERIMENT = "forecasting"
PRODUCTION = "production"
# MLflow reports usage by default; this job runs offline and reports nothing
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def registered_name(model: str, symbol: str) -> str:
    """The registered model of one (model, symbol).

    >>> registered_name("mlp", "BINANCE:BTCUSDT")
    'forecast_mlp_BINANCE_BTCUSDT'
    """
    return f"forecast_{model}_{re.sub(r'[^A-Za-z0-9]', '_', symbol)}"


def mean_crps(scores: HorizonScores | None) -> float:
    """The selection score: CRPS (bps) averaged over the steps, NaN when unscored."""
    if scores is None or not np.isfinite(scores.crps_bps).any():
        return math.nan
    return float(np.nanmean(scores.crps_bps))


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's first import warns about type hints of its own pyfunc classes (``Any`` in
    mlflow/types/responses.py), which it does not validate."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*type hint", UserWarning)
        yield


def _pyfunc_class() -> type:
    with _quiet():
        from mlflow.pyfunc import PythonModel

    class ForecasterModel(PythonModel):
        """A learned forecaster as a pyfunc: 1-minute bars in, the quantiles (bps) of the last
        bar's forecast out, one row per step and a column per level."""

        def __init__(self, forecaster: Forecaster) -> None:
            self.forecaster = forecaster

        # A frame hint, which MLflow takes as it is: no schema inferred, nothing validated (a list
        # hint would become a schema of list-wrapped rows). Without a hint it warns, from inside
        # its own warning filters ("once"), which _quiet cannot override.
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            from gbm_analysis.learned import prepare_minutes

            minutes = prepare_minutes(model_input)
            q = self.forecaster.predict(minutes, np.array([len(minutes) - 1]))[0]
            return pd.DataFrame(q, columns=[f"q{k:02d}" for k in range(1, 100)])

    return ForecasterModel


@dataclass(frozen=True)
class RegistryResult:
    symbol: str
    model: str
    run_id: str
    version: int
    promoted: bool
    crps: float
    incumbent_crps: float
    incumbent_version: int | None


class Registry:
    """Logging, registering and loading forecasters in one MLflow store."""

    def __init__(self, tracking_uri: str, artifact_root: str | Path) -> None:
        import mlflow
        from mlflow import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        existing = self.client.get_experiment_by_name(EXPERIMENT)
        if existing is None:
            root = Path(artifact_root).resolve()
            root.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(
                EXPERIMENT, artifact_location=root.as_uri()
            )
        else:
            self.experiment_id = existing.experiment_id
        self.tracking_uri = tracking_uri

    def production(self, model: str, symbol: str) -> tuple[int, str, Forecaster] | None:
        """(version, run id, forecaster) holding ``production``, or None."""
        from mlflow.exceptions import MlflowException

        name = registered_name(model, symbol)
        try:
            mv = self.client.get_model_version_by_alias(name, PRODUCTION)
        except MlflowException:
            return None
        with _quiet():
            import mlflow.pyfunc

            loaded = mlflow.pyfunc.load_model(f"models:/{name}@{PRODUCTION}")
        return int(mv.version), str(mv.run_id), loaded.unwrap_python_model().forecaster

    def run_windows(self, run_id: str) -> dict[str, int]:
        """The training/calibration/test windows (epoch seconds) a run logged."""
        params = self.client.get_run(run_id).data.params
        return {
            k.removeprefix("window."): int(v) for k, v in params.items() if k.startswith("window.")
        }

    def log(self, outcome: TrainOutcome) -> RegistryResult:
        """Log one successful training as a run and a new version; move ``production`` to it
        when it beats the version holding it on the same test window."""
        import mlflow

        if not outcome.ok or outcome.fitted is None:
            raise ValueError(f"{outcome.symbol} {outcome.model}: nothing to log ({outcome.status})")
        name = registered_name(outcome.model, outcome.symbol)
        incumbent = self._alias_version(name)
        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=f"{outcome.model}-{outcome.symbol}"
        ) as run:
            self._log_run_data(run.info.run_id, outcome)
            with _quiet():
                import mlflow.pyfunc

                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=_pyfunc_class()(outcome.fitted),
                    registered_model_name=name,
                    # named, not inferred: inference re-imports the model in a subprocess (seconds)
                    pip_requirements=_requirements(),
                )
        version = int(info.registered_model_version)
        crps = mean_crps(outcome.scores)
        old_crps = mean_crps(outcome.incumbent_scores)
        promoted = incumbent is None or (math.isfinite(crps) and not crps >= old_crps)
        if incumbent is not None and not math.isfinite(old_crps):
            promoted = math.isfinite(crps)  # the incumbent could not be scored here
        if promoted:
            self.client.set_registered_model_alias(name, PRODUCTION, str(version))
        self.client.set_model_version_tag(name, str(version), "oos_crps_bps", f"{crps:.6g}")
        logger.info(
            "%s v%d: CRPS %.3f bps vs production %s (%.3f): %s",
            name,
            version,
            crps,
            f"v{incumbent}" if incumbent else "none",
            old_crps,
            "promoted" if promoted else "kept the production version",
        )
        return RegistryResult(
            symbol=outcome.symbol,
            model=outcome.model,
            run_id=run.info.run_id,
            version=version,
            promoted=promoted,
            crps=crps,
            incumbent_crps=old_crps,
            incumbent_version=incumbent,
        )

    def _log_run_data(self, run_id: str, outcome: TrainOutcome) -> None:
        """The run's tags, parameters, metrics and per-step series in one write. Logged a call
        each, the 60 steps' series alone were 60 SQLite transactions per training."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metrics = {
            **_metrics(outcome.scores, "oos"),
            **_metrics(outcome.incumbent_scores, "incumbent"),
            "train_seconds": float(outcome.train_seconds),
            "predict_seconds_per_forecast": float(outcome.predict_seconds),
        }
        params = {f"param.{k}": str(v) for k, v in outcome.params.items()}
        params |= {f"window.{k}": str(v) for k, v in outcome.windows.items()}
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()]
            + [Metric(k, v, now, step) for k, v, step in _series(outcome.scores)],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag("symbol", outcome.symbol), RunTag("model", outcome.model)],
        )

    def _alias_version(self, name: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(name, PRODUCTION).version)
        except MlflowException:
            return None


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ("numpy", "pandas", "scipy", "scikit-learn", "xgboost-cpu", "prophet", "cloudpickle")
    return [f"{n}=={version(n)}" for n in names]


def _metrics(scores: HorizonScores | None, prefix: str) -> dict[str, float]:
    if scores is None:
        return {}
    out = {f"{prefix}_crps_bps": mean_crps(scores), f"{prefix}_n_forecasts": float(scores.n)}
    for step in REPORT_STEPS:
        k = step - 1
        out[f"{prefix}_coverage90_step{step}"] = float(scores.coverage_90[k])
        out[f"{prefix}_coverage50_step{step}"] = float(scores.coverage_50[k])
        out[f"{prefix}_rmse_ratio_step{step}"] = float(scores.rmse_bps[k] / scores.rmse_rw_bps[k])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _series(scores: HorizonScores | None) -> list[tuple[str, float, int]]:
    """Per-step scores as metric series: (key, value, step), MLflow's ``step`` being the horizon
    in minutes; non-finite values are left out."""
    if scores is None:
        return []
    out: list[tuple[str, float, int]] = []
    for k in range(scores.crps_bps.size):
        values = {
            "crps_by_step": scores.crps_bps[k],
            "coverage90_by_step": scores.coverage_90[k],
            "coverage50_by_step": scores.coverage_50[k],
        }
        out += [(key, float(v), k + 1) for key, v in values.items() if math.isfinite(v)]
    return out
