"""The fault matrix's bookkeeping, without a stack."""

from __future__ import annotations

import doctest
import json

from tests.reliability import accounting
from tests.reliability.accounting import (
    Gap,
    account,
    dead_letter_keys,
    key_of,
    sent_keys,
    sent_times,
)


def test_doctests() -> None:
    assert doctest.testmod(accounting).failed == 0


def test_every_sent_trade_is_counted_exactly_once() -> None:
    sent = [key_of("A", t, 1.0, 1.0, ["x"]) for t in range(0, 10_000, 1000)]
    stored = sent[:5] + [sent[0]]  # one stored twice
    letters = [sent[5]]
    gaps = [Gap(6000, 7500, ("A",)), Gap(0, 99_999, ("B",))]  # B's gap does not cover A
    out = account("f", sent, stored, letters, gaps, gap_slack_ms=0)
    assert (out.sent, out.stored, out.duplicated, out.dead_lettered, out.in_gaps, out.lost) == (
        10,
        5,
        1,
        1,
        2,
        2,
    )
    assert out.stored + out.dead_lettered + out.in_gaps + out.lost == out.sent


def test_gaps_are_matched_by_when_the_trade_was_sent() -> None:
    late = key_of("A", 1_000, 1.0, 1.0, [])  # stamped at 1 s, sent at 60 s (paused clock)
    gap = Gap(59_000, 61_000, ())
    assert account("f", [late], [], [], [gap], gap_slack_ms=0).lost == 1
    assert account("f", [late], [], [], [gap], gap_slack_ms=0, sent_at={late: 60_000}).in_gaps == 1


def test_sent_log_and_dead_letters_parse_like_the_feed_and_collector_write_them() -> None:
    frame = {
        "type": "trade",
        "data": [{"s": "A", "t": 5, "p": 2, "v": 0.5, "c": None}],
        "sent_ms": 7,
    }
    lines = [json.dumps(frame), '{"type": "tra']  # a torn last line is skipped
    assert sent_keys(lines) == [("A", 5, 2.0, 0.5, ())]
    assert sent_times(lines) == [(("A", 5, 2.0, 0.5, ()), 7)]
    assert sent_keys([lines[0], lines[0]]) == [("A", 5, 2.0, 0.5, ())] * 2  # as often as sent
    letters = [
        {"raw": json.dumps(frame)},
        {"raw": json.dumps(frame["data"][0])},
        {"raw": "not json"},
        {"raw": '{"data": [{"s": "A"}]}'},
        {"raw": '{"data": [{"s": "A", "t": 1, "p": 1%s, "v": 1}]}' % ("0" * 400)},
        {"raw": "[" * 100_000 + "]" * 100_000},
    ]
    assert dead_letter_keys(letters) == [("A", 5, 2.0, 0.5, ())] * 2
