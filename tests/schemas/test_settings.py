"""The environment readers every service shares: values, defaults and one-line errors."""

from __future__ import annotations

import pytest

from schemas.settings import (
    SettingsError,
    choice_setting,
    env_value,
    int_setting,
    number_setting,
    parse_duration_ms,
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


@pytest.mark.parametrize("raw", ["ten", "10 fortnights", "-5s", "1.5s", ""])
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
