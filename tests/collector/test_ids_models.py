from __future__ import annotations

import base64
import json

import pytest

from collector.ids import trade_id
from collector.models import RAW_LIMIT_BYTES, DeadLetter

BASE = ("AAPL", 1680286538064, 164.06, 4.0, ("1", "8"), 0)


def test_the_id_is_a_stable_sha1_hex() -> None:
    a = trade_id(*BASE)
    assert a == trade_id(*BASE)
    assert len(a) == 40 and int(a, 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        ("MSFT", *BASE[1:]),
        (BASE[0], BASE[1] + 1, *BASE[2:]),
        (*BASE[:2], 164.07, *BASE[3:]),
        (*BASE[:3], 5.0, *BASE[4:]),
        (*BASE[:4], ("1",), BASE[5]),
        (*BASE[:4], ("1", "8", ""), BASE[5]),
        (*BASE[:5], 1),
    ],
)
def test_every_component_changes_the_id(changed: tuple) -> None:  # type: ignore[type-arg]
    assert trade_id(*changed) != trade_id(*BASE)


def test_integral_numbers_and_floats_give_the_same_id() -> None:
    assert trade_id("A", 1, 164, 4, (), 0) == trade_id("A", 1, 164.0, 4.0, [], 0)


def test_conditions_cannot_be_confused_by_joining() -> None:
    assert trade_id("A", 1, 1.0, 1.0, ("1,2",), 0) != trade_id("A", 1, 1.0, 1.0, ("1", "2"), 0)


def letter(raw: bytes) -> DeadLetter:
    return DeadLetter(
        reason="invalid_json",
        detail="frame: not JSON",
        raw=raw,
        source="finnhub",
        received_ts_ms=1_700_000_000_123,
        symbol=None,
    )


def test_dead_letter_json_has_the_documented_fields() -> None:
    doc = json.loads(letter(b"{oops").to_json())
    assert doc == {
        "reason": "invalid_json",
        "detail": "frame: not JSON",
        "stage": "collector",
        "source": "finnhub",
        "symbol": None,
        "received_at": "2023-11-14T22:13:20.123+00:00",
        "received_ts_ms": 1_700_000_000_123,
        "raw": "{oops",
        "raw_bytes": 5,
        "raw_truncated": False,
    }


def test_non_utf8_raw_is_kept_exactly_in_base64() -> None:
    raw = b"\xff\xfe junk \xc3\x28"
    doc = json.loads(letter(raw).to_json())
    assert base64.b64decode(doc["raw_base64"]) == raw


def test_huge_raw_payloads_are_truncated_and_flagged() -> None:
    raw = b"x" * (RAW_LIMIT_BYTES + 10)
    value = letter(raw).to_json()
    doc = json.loads(value)
    assert doc["raw_truncated"] is True and doc["raw_bytes"] == len(raw)
    assert len(doc["raw"]) == RAW_LIMIT_BYTES
    assert len(value) < RAW_LIMIT_BYTES + 1000
