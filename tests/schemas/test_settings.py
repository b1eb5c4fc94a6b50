"""The environment readers every service shares: values, defaults and one-line errors."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from schemas.settings import (
    RENAMED,
    CassandraSettings,
    SecretStr,
    SettingsError,
    choice_setting,
    duration_ms_setting,
    env_value,
    flag_setting,
    int_setting,
    jvm_size_setting,
    list_setting,
    number_setting,
    parse_duration_ms,
    parse_size,
    port_setting,
    seconds_setting,
    secret_setting,
    size_setting,
)


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        ("10", 10_000),
        ("10s", 10_000),
        ("10 seconds", 10_000),
        ("1 minute", 60_000),
        ("5m", 300_000),
        ("500 ms", 500),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        (" 3 MIN ", 180_000),
    ],
)
def test_parse_duration_ms(raw: str, ms: int) -> None:
    assert parse_duration_ms("X", raw) == ms


def test_a_plain_or_decimal_number_is_seconds() -> None:
    assert parse_duration_ms("X", "0.5") == 500
    assert parse_duration_ms("X", "1.5s") == 1500
    assert parse_duration_ms("X", "0.25 minutes") == 15_000


@pytest.mark.parametrize("raw", ["ten", "10 fortnights", "-5s", "1.0005s", "1.5ms", ".5", ""])
def test_parse_duration_ms_names_variable_and_value(raw: str) -> None:
    with pytest.raises(SettingsError, match=f"^WAIT={raw!r}: expected a duration like"):
        parse_duration_ms("WAIT", raw)


def test_blank_counts_as_unset() -> None:
    env = {"A": "  ", "B": " x "}
    assert env_value(env, "A") is None
    assert env_value(env, "B") == "x"
    assert int_setting(env, "A", 4, minimum=0) == 4
    assert number_setting(env, "A", 2.5, minimum=0) == 2.5
    assert choice_setting(env, "A", "on", ("on", "off")) == "on"


def test_values_are_parsed_and_normalised() -> None:
    env = {"N": "12", "F": "0.25", "C": "OFF"}
    assert int_setting(env, "N", 0, minimum=1) == 12
    assert number_setting(env, "F", 1.0, minimum=0) == 0.25
    assert choice_setting(env, "C", "on", ("on", "off")) == "off"


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda: int_setting({"N": "1.5"}, "N", 0, minimum=0), "N='1.5' is not an integer"),
        (lambda: int_setting({"N": "0"}, "N", 5, minimum=1), "N='0' must be >= 1"),
        (lambda: number_setting({"F": "fast"}, "F", 1, minimum=0), "F='fast' is not a number"),
        (
            lambda: number_setting({"F": "nan"}, "F", 1, minimum=0),
            "F='nan' must be a finite number >= 0",
        ),
        (
            lambda: choice_setting({"C": "maybe"}, "C", "on", ("on", "off")),
            "C='maybe': allowed values are on, off",
        ),
    ],
)
def test_bad_values_name_variable_and_value(read, message: str) -> None:  # noqa: ANN001
    with pytest.raises(SettingsError) as info:
        read()
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda: flag_setting({"B": "on-ish"}, "B", True), "B='on-ish': expected true or false"),
        (lambda: flag_setting({"B": "1"}, "B", True), "B='1': expected true or false"),
        (
            lambda: duration_ms_setting({"D": "soon"}, "D", 0),
            "D='soon': expected a duration like '10 seconds', '500 ms', '5m' or '6h'",
        ),
        (
            lambda: duration_ms_setting({"D": "5ms"}, "D", 0, minimum_ms=10),
            "D='5ms' must be at least 10 ms",
        ),
        (
            lambda: seconds_setting({"D": "0"}, "D", 1.0, minimum_s=0.1),
            "D='0' must be at least 0.1 s",
        ),
        (
            lambda: size_setting({"Z": "8 megs"}, "Z", 0, minimum=0),
            "Z='8 megs': expected a size like '262144', '256k', '8m' or '1g'",
        ),
        (
            lambda: size_setting({"Z": "100"}, "Z", 0, minimum=1024),
            "Z='100' must be at least 1024 bytes",
        ),
        (
            lambda: jvm_size_setting({"HEAP": "0m"}, "HEAP", "1g"),
            "HEAP='0m': expected a size like '512m' or '1g'",
        ),
        (
            lambda: list_setting({"L": ",,"}, "L", ()),
            "L=',,': names nothing (expected items separated by commas)",
        ),
        (lambda: port_setting({"P": "70000"}, "P", 1), "P='70000' is outside 1..65535"),
    ],
)
def test_every_kind_names_variable_and_value(read, message: str) -> None:  # noqa: ANN001
    with pytest.raises(SettingsError) as info:
        read()
    assert str(info.value) == message


def test_one_spelling_per_kind() -> None:
    env = {
        "B": " TRUE ",
        "D": "1.5m",
        "Z": "64MiB",
        "HEAP": "512M",
        "L": "a, b ,a,",
        "P": " 8080 ",
    }
    assert flag_setting(env, "B", False) is True
    assert duration_ms_setting(env, "D", 0) == 90_000
    assert seconds_setting(env, "D", 0) == 90.0
    assert size_setting(env, "Z", 0, minimum=0) == parse_size("Z", "64m") == 64 * 1024**2
    assert jvm_size_setting(env, "HEAP", "1g") == "512m"
    assert list_setting(env, "L", ()) == ("a", "b")
    assert port_setting(env, "P", 1) == 8080
    # unset and blank keep the default handed in
    for name in ("B", "D", "Z", "HEAP", "L", "P"):
        assert env_value({name: " "}, name) is None
    assert (flag_setting({}, "B", True), duration_ms_setting({}, "D", 7)) == (True, 7)


# --- renamed variables --------------------------------------------------------------------------

# Renamed variables, each with a value under its old name and the value the new name reads then.
RENAMES = {
    "METRICS_HOST": ("0.0.0.0", "0.0.0.0"),
    "METRICS_PORT": ("0", "0"),
    "COLLECTOR_MAX_FUTURE_SKEW_S": ("1.5", "1.5"),
    "COLLECTOR_MAX_PAST_SKEW_S": ("10", "10"),
    "COLLECTOR_STALL_TIMEOUT_S": ("5", "5"),
    "COLLECTOR_CONNECT_TIMEOUT_S": ("3", "3"),
    "COLLECTOR_BACKOFF_INITIAL_S": ("0.2", "0.2"),
    "COLLECTOR_BACKOFF_MAX_S": ("2", "2"),
    "COLLECTOR_FLUSH_TIMEOUT_S": ("30", "30"),
    "COLLECTOR_PROGRESS_S": ("1", "1"),
    "COLLECTOR_LINGER_MS": ("200", "200ms"),  # a plain number was milliseconds
    "SUPERSET_REFRESH_S": ("60", "60"),
    "DEMO_SECONDS": ("60", "60"),
}


def test_every_rename_is_tested() -> None:
    assert set(RENAMES) == set(RENAMED.values())


@pytest.mark.parametrize(("new", "old"), sorted(RENAMED.items()))
def test_an_old_name_is_read_with_a_warning_naming_both(
    new: str, old: str, caplog: pytest.LogCaptureFixture
) -> None:
    value, read_as = RENAMES[old]
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert env_value({old: value}, new) == read_as
    assert [r.getMessage() for r in caplog.records] == [
        f"DeprecationWarning: {old} is deprecated, set {new} instead (the old name is read "
        "until the next release)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert env_value({new: read_as}, new) == read_as
    assert caplog.records == []


@pytest.mark.parametrize(("new", "old"), sorted(RENAMED.items()))
def test_old_and_new_names_with_different_values_are_an_error_naming_both(
    new: str, old: str
) -> None:
    value, _ = RENAMES[old]
    with pytest.raises(SettingsError) as info:
        env_value({old: value, new: "9s9"}, new)
    assert str(info.value) == (
        f"{new}='9s9' and {old}={value!r} are both set: {old} is the old name of {new}; unset it"
    )


def test_old_and_new_names_with_the_same_value_are_read() -> None:
    assert env_value({"METRICS_PORT": "0", "STREAM_METRICS_PORT": "0"}, "STREAM_METRICS_PORT")
    assert (
        duration_ms_setting(
            {"COLLECTOR_LINGER_MS": "200", "COLLECTOR_LINGER": "200ms"}, "COLLECTOR_LINGER", 20
        )
        == 200
    )


def test_a_bad_value_under_an_old_name_is_reported_under_that_name() -> None:
    with pytest.raises(SettingsError, match="^METRICS_PORT='http' is not an integer$"):
        int_setting({"METRICS_PORT": "http"}, "STREAM_METRICS_PORT", 9109, minimum=0)


def test_on_off_booleans_are_read_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert flag_setting({"B": "off"}, "B", True) is False
        assert flag_setting({"B": "ON"}, "B", False) is True
    assert [r.getMessage() for r in caplog.records] == [
        "DeprecationWarning: B=off is deprecated, write B=false (on/off are read until the next "
        "release)",
        "DeprecationWarning: B=ON is deprecated, write B=true (on/off are read until the next "
        "release)",
    ]


# --- secrets ------------------------------------------------------------------------------------

SECRET = "s3cr3t-Value-42"


def _shown(obj: object, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every way a settings object ends up as text: repr, str, f-strings, format, logging."""
    with caplog.at_level(logging.DEBUG, logger="test.secrets"):
        log = logging.getLogger("test.secrets")
        log.info("settings %s", obj)
        log.info("settings %r", obj)
        log.info(f"settings {obj} {obj!r}")
        log.info("fields %s", dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj)
    return [repr(obj), str(obj), f"{obj}", f"{obj!r}", format(obj, ""), caplog.text]


def test_a_secret_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    secret = secret_setting({"TOKEN": SECRET}, "TOKEN")
    assert isinstance(secret, SecretStr) and secret.get_secret_value() == SECRET
    for text in _shown(secret, caplog):
        assert SECRET not in text
    assert secret_setting({"TOKEN": " "}, "TOKEN") is None


def test_the_cassandra_passwords_never_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "credentials.env").write_text(f"CASSANDRA_READER_PASSWORD={SECRET}-r\n")
    env = {
        "STATE_DIR": str(tmp_path),
        "CASSANDRA_USERNAME": "w",
        "CASSANDRA_PASSWORD": SECRET,
        "CASSANDRA_READER_USERNAME": "r",
    }
    writer = CassandraSettings.from_env(env)
    reader = CassandraSettings.from_env(env, role="reader")
    assert writer.password is not None and writer.password.get_secret_value() == SECRET
    assert reader.password is not None and reader.password.get_secret_value() == f"{SECRET}-r"
    for settings in (writer, reader):
        for text in _shown(settings, caplog):
            assert SECRET not in text
