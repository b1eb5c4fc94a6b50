"""Settings of the GBM job and its API, read from ``GBM_*`` environment variables.

Only the entrypoint calls :meth:`GbmSettings.from_env`; everything else receives the frozen object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from gbm_analysis.exceptions import ConfigError
from schemas.settings import (
    SettingsError,
    env_value,
    int_setting,
    number_setting,
    parse_duration_ms,
    port_setting,
)

__all__ = [
    "ApiSettings",
    "DriftMode",
    "GbmSettings",
    "ModelName",
    "parse_duration",
]

ModelName = Literal["gbm", "ewma_t", "hist_sim", "seasonal_fhs"]
DriftMode = Literal["zero", "estimated"]
Engine = Literal["local", "spark"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
#: the models a run makes unless ``GBM_MODELS`` says otherwise: ``seasonal_fhs`` reads
#: ``GBM_SEASONAL_HISTORY`` of bars (7 days), so it is asked for by name
DEFAULT_MODELS: tuple[str, ...] = ("gbm", "ewma_t", "hist_sim")
DRIFT_MODES: tuple[str, ...] = get_args(DriftMode)
ENGINES: tuple[str, ...] = get_args(Engine)


def parse_duration(text: str, *, name: str = "duration") -> int:
    """Whole seconds in ``text``: an integer with an optional unit (``s``, ``m``, ``h``, ``d``
    or their words, as every service reads durations).

    :param text: e.g. ``"6h"``, ``"90m"``, ``"6 hours"``, ``"3600"`` (seconds)
    :param name: the setting named in the error message
    :raises ConfigError: when the text is not a positive number of seconds

    >>> parse_duration("6h"), parse_duration("90m"), parse_duration("15")
    (21600, 5400, 15)
    """
    try:
        millis = parse_duration_ms(name, text)
    except SettingsError:
        millis = 0
    if millis <= 0 or millis % 1000:
        raise ConfigError(f"{name}={text!r} is not a positive duration like 30s, 5m, 6h or 1d")
    return millis // 1000


@dataclass(frozen=True, kw_only=True)
class GbmSettings:
    """What one forecast run does. All durations are in seconds.

    :param lookback_seconds: bars used for estimation, ending at the run's as-of time (6 h)
    :param bar_seconds: width of the input bars, the regular grid of returns (5 s)
    :param step_seconds: length of one simulated horizon step (60 s)
    :param n_steps: horizon steps per forecast (60, so one hour)
    :param n_paths: Monte Carlo paths per symbol and model (10,000)
    :param n_sample_paths: paths kept in ``gbm_paths`` for plotting (50)
    :param histogram_bins: bins of the stored terminal-price histogram (50)
    :param models: models to run, any of ``gbm``, ``ewma_t``, ``hist_sim``, ``seasonal_fhs``
    :param drift: ``zero`` (default: intraday drift is not estimable) or ``estimated``
    :param min_bars: fewer bars than this in the window and the symbol is skipped (30)
    :param max_gap_seconds: a gap between bars longer than this (market closed, outage) splits
        the series; no return is taken across it (300)
    :param pending_max_seconds: the backtest waits this long after a step's target for a bar
        to end; a step no bar ended within it is final as ``expired`` (3600)
    :param ewma_half_life_seconds: half-life of the EWMA variance (1800)
    :param seasonal_history_seconds: bars ``seasonal_fhs`` learns its intraday profile and its
        blocks from, ending at as-of (7 days); the other models use ``lookback_seconds`` of them
    :param t_dof: Student-t degrees of freedom of ``ewma_t``; None estimates it from kurtosis
    :param chunk_paths: paths simulated per chunk, bounding temporary memory (2,000)
    :param seed: run seed; None draws one from OS entropy (stored with the run either way)
    :param symbols: only these symbols; empty means every symbol with bars
    :param engine: ``local`` (read, forecast and write in this process with the cassandra
        driver; the default) or ``spark`` (the connector and ``applyInPandas``)
    :param workers: threads forecasting symbols at once in the ``local`` engine (default: the
        machine's cores)
    :raises ConfigError: on any out-of-range value, naming the field

    >>> GbmSettings(n_paths=100).n_paths
    100
    >>> GbmSettings(models=("nope",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gbm_analysis.exceptions.ConfigError: models: 'nope' is not one of gbm, ewma_t, hist_sim, ...
    """

    lookback_seconds: int = 6 * 3600
    bar_seconds: int = 5
    step_seconds: int = 60
    n_steps: int = 60
    n_paths: int = 10_000
    n_sample_paths: int = 50
    histogram_bins: int = 50
    models: tuple[ModelName, ...] = DEFAULT_MODELS  # type: ignore[assignment]
    drift: DriftMode = "zero"
    min_bars: int = 30
    max_gap_seconds: int = 300
    pending_max_seconds: int = 3600
    ewma_half_life_seconds: int = 1800
    seasonal_history_seconds: int = 7 * 86_400
    t_dof: float | None = None
    chunk_paths: int = 2_000
    seed: int | None = None
    symbols: tuple[str, ...] = field(default=())
    engine: Engine = "local"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        positive = {
            "lookback_seconds": self.lookback_seconds,
            "bar_seconds": self.bar_seconds,
            "step_seconds": self.step_seconds,
            "n_steps": self.n_steps,
            "n_paths": self.n_paths,
            "histogram_bins": self.histogram_bins,
            "max_gap_seconds": self.max_gap_seconds,
            "pending_max_seconds": self.pending_max_seconds,
            "ewma_half_life_seconds": self.ewma_half_life_seconds,
            "seasonal_history_seconds": self.seasonal_history_seconds,
            "chunk_paths": self.chunk_paths,
            "workers": self.workers,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.min_bars < 3:
            raise ConfigError(f"min_bars={self.min_bars!r} must be at least 3")
        if not 0 <= self.n_sample_paths <= self.n_paths:
            raise ConfigError(f"n_sample_paths={self.n_sample_paths!r} must be in 0..n_paths")
        if self.step_seconds % self.bar_seconds:
            raise ConfigError(
                f"step_seconds={self.step_seconds!r} must be a multiple of "
                f"bar_seconds={self.bar_seconds!r}"
            )
        if not self.models:
            raise ConfigError("models: choose at least one of " + ", ".join(MODEL_NAMES))
        for model in self.models:
            if model not in MODEL_NAMES:
                raise ConfigError(f"models: {model!r} is not one of {', '.join(MODEL_NAMES)}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine={self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.drift not in DRIFT_MODES:
            raise ConfigError(f"drift={self.drift!r} is not one of {', '.join(DRIFT_MODES)}")
        if self.t_dof is not None and not self.t_dof > 2:
            raise ConfigError(f"t_dof={self.t_dof!r} must be > 2 (finite variance) or auto")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed={self.seed!r} must be in 0..2**63-1")

    @property
    def horizon_seconds(self) -> int:
        return self.step_seconds * self.n_steps

    @property
    def read_seconds(self) -> int:
        """Bars a run reads, ending at as-of: the lookback, or the seasonal history when
        ``seasonal_fhs`` runs."""
        if "seasonal_fhs" in self.models:
            return max(self.lookback_seconds, self.seasonal_history_seconds)
        return self.lookback_seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GbmSettings:
        """Read ``GBM_*`` variables; unset ones keep the defaults above.

        >>> GbmSettings.from_env({"GBM_LOOKBACK": "30m", "GBM_MODELS": "gbm"}).lookback_seconds
        1800
        """
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        durations = {
            "GBM_LOOKBACK": "lookback_seconds",
            "GBM_BAR_SECONDS": "bar_seconds",
            "GBM_STEP": "step_seconds",
            "GBM_MAX_GAP": "max_gap_seconds",
            "GBM_PENDING_MAX": "pending_max_seconds",
            "GBM_EWMA_HALF_LIFE": "ewma_half_life_seconds",
            "GBM_SEASONAL_HISTORY": "seasonal_history_seconds",
        }
        for var, attr in durations.items():
            if env.get(var):
                kwargs[attr] = parse_duration(env[var], name=var)
        integers = {
            "GBM_STEPS": "n_steps",
            "GBM_PATHS": "n_paths",
            "GBM_SAMPLE_PATHS": "n_sample_paths",
            "GBM_HIST_BINS": "histogram_bins",
            "GBM_MIN_BARS": "min_bars",
            "GBM_CHUNK_PATHS": "chunk_paths",
            "GBM_SEED": "seed",
            "GBM_WORKERS": "workers",
        }
        for var, attr in integers.items():
            if env.get(var):
                kwargs[attr] = _int(env, var)
        if env.get("GBM_MODELS"):
            kwargs["models"] = _csv(env["GBM_MODELS"])
        if env.get("GBM_SYMBOLS"):
            kwargs["symbols"] = _csv(env["GBM_SYMBOLS"])
        if env.get("GBM_ENGINE"):
            kwargs["engine"] = env["GBM_ENGINE"].strip()
        if env.get("GBM_DRIFT"):
            kwargs["drift"] = env["GBM_DRIFT"].strip()
        raw_dof = (env.get("GBM_T_DOF") or "auto").strip()
        if raw_dof != "auto":
            try:
                kwargs["t_dof"] = float(raw_dof)
            except ValueError:
                raise ConfigError(f"GBM_T_DOF={raw_dof!r} is not a number or 'auto'") from None
        return cls(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """Where ``python -m gbm_analysis serve`` listens (loopback by default)."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: seconds an answer (found or not) is served from memory; 0 turns the cache off
    cache_ttl_s: float = 5.0
    #: store reads (cache misses, each up to 8 queries) per second before 429; 0: no limit
    reads_per_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"GBM_API_PORT={self.port!r} is outside 1..65535")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        try:
            port = port_setting(env, "GBM_API_PORT", 8000)
            ttl_raw = env_value(env, "GBM_API_CACHE_TTL")
            ttl_ms = parse_duration_ms("GBM_API_CACHE_TTL", ttl_raw) if ttl_raw else 5000
            reads = number_setting(env, "GBM_API_READS_PER_S", 20.0, minimum=0)
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            host=env.get("GBM_API_HOST") or "127.0.0.1",
            port=port,
            cache_ttl_s=ttl_ms / 1000,
            reads_per_s=reads,
        )


def _int(env: Mapping[str, str], name: str) -> int:
    """A set integer variable; the range is checked with the field it fills."""
    try:
        return int_setting(env, name, 0, minimum=-(2**63))
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())
