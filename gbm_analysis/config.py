"""Settings of the GBM job and its API, read from ``GBM_*`` environment variables.

Only the entrypoint calls :meth:`GbmSettings.from_env`; everything else receives the frozen object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast, get_args

from gbm_analysis.exceptions import ConfigError
from schemas.settings import (
    SettingsError,
    env_value,
    int_setting,
    list_setting,
    lookup,
    number_setting,
    parse_duration_ms,
    port_setting,
    read_settings,
    seconds_setting,
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
_Default = TypeVar("_Default", int, int | None)


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


def _cores() -> int:
    """The default of ``GBM_WORKERS``: the machine's cores."""
    return os.cpu_count() or 1


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
    :param chunk_paths: paths ``seasonal_fhs`` simulates per chunk, bounding its temporary
        memory (2,000); the GBM family draws and summarises a few steps at a time instead
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
    workers: int = field(default_factory=_cores)

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
        return read_settings(cls._from_env, env, ConfigError)

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> GbmSettings:
        def seconds(name: str, default: int) -> int:
            return duration_setting(env, name, default)

        def integer(name: str, default: int) -> int:
            return any_int_setting(env, name, default)

        return cls(
            lookback_seconds=seconds("GBM_LOOKBACK", cls.lookback_seconds),
            bar_seconds=seconds("GBM_BAR_SECONDS", cls.bar_seconds),
            step_seconds=seconds("GBM_STEP", cls.step_seconds),
            n_steps=integer("GBM_STEPS", cls.n_steps),
            n_paths=integer("GBM_PATHS", cls.n_paths),
            n_sample_paths=integer("GBM_SAMPLE_PATHS", cls.n_sample_paths),
            histogram_bins=integer("GBM_HIST_BINS", cls.histogram_bins),
            models=cast(tuple[ModelName, ...], list_setting(env, "GBM_MODELS", cls.models)),
            drift=cast(DriftMode, env_value(env, "GBM_DRIFT") or cls.drift),
            min_bars=integer("GBM_MIN_BARS", cls.min_bars),
            max_gap_seconds=seconds("GBM_MAX_GAP", cls.max_gap_seconds),
            pending_max_seconds=seconds("GBM_PENDING_MAX", cls.pending_max_seconds),
            ewma_half_life_seconds=seconds("GBM_EWMA_HALF_LIFE", cls.ewma_half_life_seconds),
            seasonal_history_seconds=seconds("GBM_SEASONAL_HISTORY", cls.seasonal_history_seconds),
            t_dof=_t_dof(env, cls.t_dof),
            chunk_paths=integer("GBM_CHUNK_PATHS", cls.chunk_paths),
            seed=any_int_setting(env, "GBM_SEED", cls.seed),
            symbols=list_setting(env, "GBM_SYMBOLS", cls.symbols),
            engine=cast(Engine, env_value(env, "GBM_ENGINE") or cls.engine),
            workers=integer("GBM_WORKERS", _cores()),
        )


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
        return read_settings(cls._from_env, env, ConfigError)

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> ApiSettings:
        return cls(
            host=env_value(env, "GBM_API_HOST") or cls.host,
            port=port_setting(env, "GBM_API_PORT", cls.port),
            cache_ttl_s=seconds_setting(env, "GBM_API_CACHE_TTL", cls.cache_ttl_s),
            reads_per_s=number_setting(env, "GBM_API_READS_PER_S", cls.reads_per_s, minimum=0),
        )


def duration_setting(env: Mapping[str, str], name: str, default: int) -> int:
    """Whole seconds in the variable ``name`` (see :func:`parse_duration`); ``default`` when
    unset or blank.

    >>> duration_setting({"GBM_STEP": "2m"}, "GBM_STEP", 60), duration_setting({}, "GBM_STEP", 60)
    (120, 60)
    """
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    return parse_duration(raw, name=var)


def any_int_setting(env: Mapping[str, str], name: str, default: _Default) -> int | _Default:
    """An integer variable of any sign, ``default`` when unset: the field it fills checks the
    range, naming itself."""
    if lookup(env, name) is None:
        return default
    return int_setting(env, name, 0, minimum=-(2**63))


def _t_dof(env: Mapping[str, str], default: float | None) -> float | None:
    """``GBM_T_DOF``: a number, or ``auto`` (estimated from the kurtosis: None)."""
    raw = env_value(env, "GBM_T_DOF")
    if raw is None:
        return default
    if raw == "auto":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"GBM_T_DOF={raw!r} is not a number or 'auto'") from None
