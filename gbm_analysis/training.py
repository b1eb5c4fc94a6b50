"""Walk-forward training of the learned forecasters, one symbol at a time. Pure (no I/O, no clock).

For each symbol and model: the newest ``test`` window (``GBM_TEST_WINDOW``, 2 days) is held out for
scoring, the ``calib`` window before it (``GBM_CALIB_WINDOW``, 3 days) calibrates (the ``mlp``'s
conformal offsets), and the ``train`` window before that (``GBM_TRAIN_WINDOW``, 14 days) fits;
60 minutes (the longest target) separate the parts. The test window is scored at every
``GBM_SCORE_EVERY`` (15 minutes) on the clock, with the model being replaced (the current
``production`` version, when there is one) scored on the same issue times, so the registry can
compare like with like.

:func:`train_frame` is the ``applyInPandas`` body: it returns the fitted model pickled, so the
driver alone writes to MLflow (SQLite takes one writer at a time).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from gbm_analysis import mlp, prophet_model, xgb
from gbm_analysis.config import duration_setting
from gbm_analysis.exceptions import ConfigError, DataError
from gbm_analysis.learned import (
    LEARNED_MODELS,
    N_STEPS,
    Forecaster,
    HorizonScores,
    WalkForwardSplit,
    outcomes,
    prepare_minutes,
    score_log_quantiles,
    walk_forward_split,
)
from schemas.settings import env_value, int_setting, list_setting, read_settings, state_dir

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TRAIN_SCHEMA",
    "TrainOutcome",
    "TrainSettings",
    "score_positions",
    "train_frame",
    "train_symbol",
]

logger = logging.getLogger(__name__)

#: steps whose scores are logged one by one (the rest are in the per-step series)
REPORT_STEPS = (1, 5, 15, 30, 60)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """What ``python -m gbm_analysis train`` does; windows in minutes.

    :raises ConfigError: on an unknown model or a non-positive window
    """

    models: tuple[str, ...] = LEARNED_MODELS
    train_minutes: int = 14 * 1440
    calib_minutes: int = 3 * 1440
    test_minutes: int = 2 * 1440
    score_every_minutes: int = 15
    #: also score the GBM family on the same test issue times (the leaderboard's baselines)
    baselines: bool = True
    symbols: tuple[str, ...] = ()
    tracking_uri: str = ""
    artifact_root: str = ""
    mlp: mlp.MlpParams = field(default_factory=mlp.MlpParams)
    xgb: xgb.XgbParams = field(default_factory=xgb.XgbParams)
    prophet: prophet_model.ProphetParams = field(default_factory=prophet_model.ProphetParams)

    def __post_init__(self) -> None:
        for model in self.models:
            if model not in LEARNED_MODELS:
                raise ConfigError(
                    f"GBM_LEARNED_MODELS: {model!r} is not one of {', '.join(LEARNED_MODELS)}"
                )
        for name in ("train_minutes", "calib_minutes", "test_minutes", "score_every_minutes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be positive")

    @property
    def history_minutes(self) -> int:
        """Minutes of bars one training reads."""
        return self.train_minutes + self.calib_minutes + self.test_minutes + 3 * N_STEPS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainSettings:
        """``GBM_LEARNED_MODELS``, ``GBM_TRAIN_WINDOW``, ``GBM_CALIB_WINDOW``,
        ``GBM_TEST_WINDOW``, ``GBM_SCORE_EVERY``, ``GBM_SYMBOLS``, ``GBM_MLP_MAX_ITER`` and
        ``MLFLOW_TRACKING_URI`` (default: SQLite at ``$STATE_DIR/mlflow/mlflow.db``).

        >>> s = TrainSettings.from_env({"GBM_TRAIN_WINDOW": "1d", "STATE_DIR": "/tmp/x"})
        >>> s.train_minutes, s.tracking_uri
        (1440, 'sqlite:////tmp/x/mlflow/mlflow.db')
        """
        return read_settings(cls._from_env, env, ConfigError)

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> TrainSettings:
        def minutes(name: str, default: int) -> int:
            seconds = duration_setting(env, name, default * 60)
            if seconds % 60:
                raise ConfigError(f"{name}={env_value(env, name)!r} must be whole minutes")
            return seconds // 60

        root = state_dir(env) / "mlflow"
        return cls(
            models=list_setting(env, "GBM_LEARNED_MODELS", cls.models),
            train_minutes=minutes("GBM_TRAIN_WINDOW", cls.train_minutes),
            calib_minutes=minutes("GBM_CALIB_WINDOW", cls.calib_minutes),
            test_minutes=minutes("GBM_TEST_WINDOW", cls.test_minutes),
            score_every_minutes=minutes("GBM_SCORE_EVERY", cls.score_every_minutes),
            symbols=list_setting(env, "GBM_SYMBOLS", cls.symbols),
            tracking_uri=env_value(env, "MLFLOW_TRACKING_URI") or f"sqlite:///{root}/mlflow.db",
            artifact_root=str(root / "artifacts"),
            mlp=mlp.MlpParams(
                max_iter=int_setting(env, "GBM_MLP_MAX_ITER", mlp.MlpParams.max_iter, minimum=1)
            ),
        )

    def split(self, n_minutes: int, *, first: int) -> WalkForwardSplit:
        """The train, calibration and test windows of these settings over ``n_minutes`` rows of
        1-minute bars, whose first full feature window ends at ``first``."""
        return walk_forward_split(
            n_minutes,
            first=first,
            calib=self.calib_minutes,
            test=self.test_minutes,
            purge=N_STEPS,
            train=self.train_minutes,
        )

    def params_of(self, model: str) -> Any:
        return {"mlp": self.mlp, "xgb": self.xgb, "prophet": self.prophet}[model]


def _first(model: str) -> int:
    return {"mlp": mlp.LOOKBACK, "xgb": xgb.FIRST, "prophet": xgb.FIRST}[model]


def _fit(model: str, minutes: pd.DataFrame, split: Any, params: Any) -> Forecaster:
    module = {"mlp": mlp, "xgb": xgb, "prophet": prophet_model}[model]
    return module.fit(minutes, split, params)


def score_positions(
    minutes: pd.DataFrame, test: NDArray[np.int64], every_minutes: int
) -> NDArray[np.int64]:
    """Test positions whose bar closes on a multiple of ``every_minutes`` on the clock."""
    close_t = minutes["t"].to_numpy(dtype=np.int64)[test] + 60
    out: NDArray[np.int64] = test[close_t % (every_minutes * 60) == 0]
    return out


@dataclass
class TrainOutcome:
    """One (symbol, model) training: the fitted model, or why there is none."""

    symbol: str
    model: str
    status: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)  # epoch seconds of each part's bars
    scores: HorizonScores | None = None
    incumbent_scores: HorizonScores | None = None
    fitted: Forecaster | None = None
    train_seconds: float = math.nan
    predict_seconds: float = math.nan

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def train_symbol(
    symbol: str,
    bars: pd.DataFrame,
    settings: TrainSettings,
    incumbents: Mapping[str, Forecaster] | None = None,
) -> list[TrainOutcome]:
    """Train, calibrate and score every configured model on one symbol's 1-minute bars.

    Thin data never raises: the outcome's ``status`` says why (``too_few_bars``).
    """
    minutes = prepare_minutes(bars)
    out = []
    for model in settings.models:
        params = settings.params_of(model)
        # through JSON, as the Spark path returns them (tuples become lists)
        outcome = TrainOutcome(
            symbol, model, "ok", "", params=json.loads(json.dumps(asdict(params)))
        )
        try:
            split = settings.split(len(minutes), first=_first(model))
        except DataError as exc:
            outcome.status, outcome.message = exc.status, f"{symbol} {model}: {exc}"
            out.append(outcome)
            continue
        t = minutes["t"].to_numpy(dtype=np.int64)
        for part in ("train", "calib", "test"):
            pos = getattr(split, part)
            outcome.windows[f"{part}_start"] = int(t[pos[0]])
            outcome.windows[f"{part}_end"] = int(t[pos[-1]] + 60)
        started = time.perf_counter()
        fitted = _fit(model, minutes, split, params)
        outcome.train_seconds = time.perf_counter() - started
        positions = score_positions(minutes, split.test, settings.score_every_minutes)
        y = outcomes(minutes, positions)
        started = time.perf_counter()
        outcome.scores = score_log_quantiles(y, fitted.predict(minutes, positions))
        outcome.predict_seconds = (time.perf_counter() - started) / max(positions.size, 1)
        incumbent = (incumbents or {}).get(model)
        if incumbent is not None:
            outcome.incumbent_scores = score_log_quantiles(y, incumbent.predict(minutes, positions))
        outcome.fitted = fitted
        out.append(outcome)
    if settings.baselines:
        out.extend(_score_baselines(symbol, minutes, settings))
    return out


def _score_baselines(
    symbol: str, minutes: pd.DataFrame, settings: TrainSettings
) -> list[TrainOutcome]:
    """The GBM family on the learned models' test issue times (status ``scored``)."""
    from gbm_analysis.leaderboard import FAMILY_MODELS, family_quantiles

    try:
        split = settings.split(len(minutes), first=xgb.FIRST)
    except DataError:
        return []
    positions = score_positions(minutes, split.test, settings.score_every_minutes)
    y = outcomes(minutes, positions)
    t = minutes["t"].to_numpy(dtype=np.int64)
    windows = {"test_start": int(t[split.test[0]]), "test_end": int(t[split.test[-1]] + 60)}
    out = []
    for model in FAMILY_MODELS:
        started = time.perf_counter()
        q = family_quantiles(minutes, positions, model)
        elapsed = (time.perf_counter() - started) / max(positions.size, 1)
        out.append(
            TrainOutcome(
                symbol,
                model,
                "scored",
                "",
                windows=dict(windows),
                scores=score_log_quantiles(y, q),
                predict_seconds=elapsed,
            )
        )
    return out


TRAIN_SCHEMA = (
    "symbol string, model string, status string, message string, params string, "
    "windows string, scores string, incumbent_scores string, train_seconds double, "
    "predict_seconds double, payload binary"
)


def scores_json(scores: HorizonScores | None) -> str:
    if scores is None:
        return ""
    data = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(scores).items()}
    return json.dumps(data, allow_nan=True)


def scores_from_json(text: str) -> HorizonScores | None:
    if not text:
        return None
    data = json.loads(text)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in data.items() if k != "n"}
    return HorizonScores(n=int(data["n"]), **arrays)


def train_frame(
    bars: pd.DataFrame, settings: TrainSettings, incumbents: Mapping[tuple[str, str], bytes]
) -> pd.DataFrame:
    """``applyInPandas`` body: one symbol's 1-minute bars in, one row per model out
    (:data:`TRAIN_SCHEMA`), the fitted model pickled in ``payload``.

    :param incumbents: pickled production models by (symbol, model)
    """
    import pickle

    import cloudpickle
    import pandas as pd

    columns = [c.split()[0] for c in TRAIN_SCHEMA.split(", ")]
    if bars.empty:
        return pd.DataFrame({c: [] for c in columns})
    symbol = str(bars["symbol"].iloc[0])
    mine = {m: pickle.loads(b) for (s, m), b in incumbents.items() if s == symbol}  # noqa: S301
    rows = []
    for o in train_symbol(symbol, bars, settings, mine):
        rows.append(
            {
                "symbol": o.symbol,
                "model": o.model,
                "status": o.status,
                "message": o.message,
                "params": json.dumps(o.params),
                "windows": json.dumps(o.windows),
                "scores": scores_json(o.scores),
                "incumbent_scores": scores_json(o.incumbent_scores),
                "train_seconds": o.train_seconds,
                "predict_seconds": o.predict_seconds,
                "payload": cloudpickle.dumps(o.fitted) if o.fitted is not None else b"",
            }
        )
    return pd.DataFrame(rows, columns=columns)


def outcome_from_row(row: Mapping[str, Any]) -> TrainOutcome:
    """The driver's side of :func:`train_frame`."""
    import pickle

    payload = row["payload"]
    return TrainOutcome(
        symbol=row["symbol"],
        model=row["model"],
        status=row["status"],
        message=row["message"],
        params=json.loads(row["params"]),
        windows=json.loads(row["windows"]),
        scores=scores_from_json(row["scores"]),
        incumbent_scores=scores_from_json(row["incumbent_scores"]),
        fitted=pickle.loads(bytes(payload)) if payload else None,  # noqa: S301
        train_seconds=_float(row["train_seconds"]),
        predict_seconds=_float(row["predict_seconds"]),
    )


def _float(value: Any) -> float:
    """Arrow hands a NaN double back from Spark as None."""
    return math.nan if value is None else float(value)
