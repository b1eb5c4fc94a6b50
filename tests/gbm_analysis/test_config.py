"""Settings: defaults, environment parsing, and one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

import gbm_analysis.backtest
import gbm_analysis.config
import gbm_analysis.exceptions
import gbm_analysis.forecast
import gbm_analysis.model
from gbm_analysis.config import ApiSettings, GbmSettings, parse_duration
from gbm_analysis.exceptions import ConfigError, GbmError
from gbm_analysis.training import TrainSettings


def test_defaults_follow_the_issue() -> None:
    s = GbmSettings()
    assert (s.lookback_seconds, s.n_paths, s.n_steps, s.step_seconds) == (21_600, 10_000, 60, 60)
    assert s.horizon_seconds == 3_600 and s.drift == "zero" and s.n_sample_paths == 50
    assert GbmSettings.from_env({}) == s


def test_environment_overrides() -> None:
    s = GbmSettings.from_env(
        {
            "GBM_LOOKBACK": "30m",
            "GBM_STEP": "10s",
            "GBM_STEPS": "6",
            "GBM_PATHS": "500",
            "GBM_MODELS": "gbm, ewma_t",
            "GBM_SYMBOLS": "AAPL,BINANCE:BTCUSDT",
            "GBM_DRIFT": "estimated",
            "GBM_T_DOF": "5",
            "GBM_SEED": "9",
            "GBM_MIN_BARS": "10",
        }
    )
    assert (s.lookback_seconds, s.step_seconds, s.n_steps, s.n_paths) == (1800, 10, 6, 500)
    assert s.models == ("gbm", "ewma_t") and s.symbols == ("AAPL", "BINANCE:BTCUSDT")
    assert (s.drift, s.t_dof, s.seed, s.min_bars) == ("estimated", 5.0, 9, 10)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GBM_PATHS": "many"}, "GBM_PATHS='many' is not an integer"),
        ({"GBM_PATHS": "0"}, "n_paths=0 must be a positive integer"),
        ({"GBM_LOOKBACK": "6 parsecs"}, "GBM_LOOKBACK='6 parsecs' is not a positive duration"),
        ({"GBM_LOOKBACK": "1500ms"}, "GBM_LOOKBACK='1500ms' is not a positive duration"),
        ({"GBM_LOOKBACK": "0h"}, "GBM_LOOKBACK='0h' is not a positive duration"),
        ({"GBM_STEP": "7s"}, "step_seconds=7 must be a multiple of bar_seconds=5"),
        ({"GBM_MODELS": "gbm,garch"}, "models: 'garch' is not one of gbm, ewma_t, hist_sim"),
        ({"GBM_DRIFT": "up"}, "drift='up' is not one of zero, estimated"),
        ({"GBM_T_DOF": "2"}, "t_dof=2.0 must be > 2"),
        ({"GBM_T_DOF": "fat"}, "GBM_T_DOF='fat' is not a number or 'auto'"),
        ({"GBM_MIN_BARS": "2"}, "min_bars=2 must be at least 3"),
        ({"GBM_SAMPLE_PATHS": "20000"}, "n_sample_paths=20000 must be in 0..n_paths"),
        ({"GBM_SEED": "-1"}, "seed=-1 must be in"),
    ],
)
def test_bad_settings_name_the_field(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        GbmSettings.from_env(env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("45", 45), ("45s", 45), ("5m", 300), ("1d", 86400), ("6 hours", 21600)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_api_settings() -> None:
    assert ApiSettings.from_env({}) == ApiSettings(host="127.0.0.1", port=8000)
    with pytest.raises(ConfigError, match="GBM_API_PORT='70000' is outside 1..65535"):
        ApiSettings.from_env({"GBM_API_PORT": "70000"})


def test_every_error_is_a_gbm_error() -> None:
    for name in gbm_analysis.exceptions.__all__:
        assert issubclass(getattr(gbm_analysis.exceptions, name), GbmError)


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (gbm_analysis.model, {"simulate_paths", "estimate", "estimate_ewma", "summarise_paths"}),
        (gbm_analysis.backtest, {"summarise_scores", "kupiec_pvalue", "binomial_band"}),
        (gbm_analysis.forecast, {"forecast_symbol", "forecast_frame"}),
        (gbm_analysis.config, {"GbmSettings", "ApiSettings", "parse_duration"}),
    ],
)
def test_public_surface(module: object, names: set[str]) -> None:
    exported = set(module.__all__)  # type: ignore[attr-defined]
    assert names <= exported
    assert all(hasattr(module, n) for n in exported)


def test_unset_variables_keep_the_declared_defaults(tmp_path: Path) -> None:
    """from_env passes each field's declared default, so the two never differ."""
    assert GbmSettings.from_env({}) == GbmSettings()
    assert ApiSettings.from_env({}) == ApiSettings()
    train = TrainSettings.from_env({"STATE_DIR": str(tmp_path)})
    declared = TrainSettings(tracking_uri=train.tracking_uri, artifact_root=train.artifact_root)
    assert train == declared
    assert train.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"


def test_blank_variables_count_as_unset() -> None:
    blank = {name: " " for name in ("GBM_LOOKBACK", "GBM_PATHS", "GBM_SEED", "GBM_MODELS")}
    assert GbmSettings.from_env(blank) == GbmSettings()
    assert ApiSettings.from_env({"GBM_API_PORT": "", "GBM_API_CACHE_TTL": " "}) == ApiSettings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GBM_TRAIN_WINDOW": "90s"}, "GBM_TRAIN_WINDOW='90s' must be whole minutes"),
        ({"GBM_TEST_WINDOW": "0m"}, "GBM_TEST_WINDOW='0m' is not a positive duration"),
        ({"GBM_LEARNED_MODELS": "mlp,arima"}, "GBM_LEARNED_MODELS: 'arima' is not one of"),
        ({"GBM_MLP_MAX_ITER": "many"}, "GBM_MLP_MAX_ITER='many' is not an integer"),
        ({"GBM_MLP_MAX_ITER": "0"}, "GBM_MLP_MAX_ITER='0' must be >= 1"),
    ],
)
def test_bad_train_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainSettings.from_env(env)


def test_train_settings_from_the_environment() -> None:
    s = TrainSettings.from_env(
        {
            "GBM_TRAIN_WINDOW": "2d",
            "GBM_SCORE_EVERY": "30m",
            "GBM_LEARNED_MODELS": "xgb, mlp",
            "GBM_SYMBOLS": "AAPL",
            "GBM_MLP_MAX_ITER": "5",
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        }
    )
    assert (s.train_minutes, s.score_every_minutes, s.calib_minutes) == (2880, 30, 3 * 1440)
    assert (s.models, s.symbols, s.mlp.max_iter) == (("xgb", "mlp"), ("AAPL",), 5)
    assert s.tracking_uri == "http://127.0.0.1:5000"
