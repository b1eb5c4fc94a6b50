"""The command line: option parsing and one-line errors with exit code 2, before any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from gbm_analysis.__main__ import _parse_time, main
from gbm_analysis.config import GbmSettings
from gbm_analysis.exceptions import ConfigError
from schemas.settings import CassandraSettings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-2m", NOW - timedelta(minutes=2)),
        ("-90", NOW - timedelta(seconds=90)),
        ("2024-08-09T00:00:00Z", datetime(2024, 8, 9, tzinfo=UTC)),
        ("2024-08-09T02:00:00+02:00", datetime(2024, 8, 9, tzinfo=UTC)),
        ("2024-08-09T00:00", datetime(2024, 8, 9, tzinfo=UTC)),
    ],
)
def test_as_of_accepts_iso_times_and_relative_durations(text: str, expected: datetime) -> None:
    assert _parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["run", "--once", "--as-of=yesterday"], {}, "error: --as-of='yesterday' is not an ISO"),
        (["run", "--once", "--as-of=-2x"], {}, "error: --as-of='2x' is not a positive duration"),
        (["run", "--every", "soon"], {}, "error: --every='soon' is not a positive duration"),
        (["backtest"], {"GBM_PATHS": "lots"}, "error: GBM_PATHS='lots' is not an integer"),
        (["serve"], {"CASSANDRA_PORT": "x"}, "error: CASSANDRA_PORT='x' is not a port number"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_relative_as_of_must_be_a_duration() -> None:
    with pytest.raises(ConfigError, match="--as-of='0s'"):
        _parse_time("-0s", NOW)


def test_a_scheduled_run_picks_up_models_trained_after_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --every` started before the first `train` (no MLflow registry yet) forecasts with the
    learned models from the first run after they are trained, not only after a restart."""
    import gbm_analysis.__main__ as cli
    import gbm_analysis.job
    import schemas.runtime.cassandra

    trained = SimpleNamespace(name="registry")
    lookups = iter([None, trained, trained])
    monkeypatch.setattr(cli, "_registry_if_trained", lambda: next(lookups))
    monkeypatch.setattr(
        schemas.runtime.cassandra,
        "connect",
        lambda settings: (SimpleNamespace(shutdown=lambda: None), object()),
    )
    registries: list[object] = []

    class Enough(Exception):
        pass

    def run_forecasts(spark: object, store: object, settings: object, **kwargs: Any) -> object:
        registries.append(kwargs["registry"])
        if len(registries) == 2:
            raise Enough
        return SimpleNamespace(statuses=[], n_ok=0, run_id="r", seed=1, duration_s=0.0)

    monkeypatch.setattr(gbm_analysis.job, "run_forecasts", run_forecasts)
    monkeypatch.setenv("GBM_ENGINE", "local")
    args = cli._parser().parse_args(["run", "--every", "1s"])
    with pytest.raises(Enough):
        cli._run(args, GbmSettings.from_env(), CassandraSettings.from_env())
    assert registries == [None, trained]
