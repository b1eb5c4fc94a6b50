"""Where every trade the feed sent ended up: stored once, stored twice, dead-lettered, inside a
recorded gap, or lost. Pure functions over plain records, so the bookkeeping is tested alone."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

# A trade as the exchange printed it: symbol, time (ms), price, volume, conditions.
TradeKey = tuple[str, int, float, float, tuple[str, ...]]


def key_of(
    symbol: str, ts_ms: int, price: float, volume: float, conditions: Iterable[str] | None
) -> TradeKey:
    return (symbol, int(ts_ms), float(price), float(volume), tuple(conditions or ()))


def sent_keys(sent_log_lines: Iterable[str]) -> list[TradeKey]:
    """Trades of the feed's sent log (one trade frame per line; a torn last line is skipped:
    the feed was stopped while writing it, and a torn frame never reached the collector whole)."""
    return [key for key, _ in sent_times(sent_log_lines)]


def sent_times(sent_log_lines: Iterable[str]) -> list[tuple[TradeKey, int]]:
    """Each sent trade (identical trades as often as sent) and when its frame left the feed
    (``sent_ms``; else its trade time)."""
    times = []
    for line in sent_log_lines:
        try:
            frame = json.loads(line)
        except ValueError:
            continue
        for d in frame["data"]:
            key = key_of(d["s"], d["t"], d["p"], d["v"], d.get("c"))
            times.append((key, int(frame.get("sent_ms", d["t"]))))
    return times


def dead_letter_keys(letters: Iterable[dict[str, Any]]) -> list[TradeKey]:
    """Trades inside dead letters whose raw input still parses as a trade or a trade frame."""
    keys = []
    for letter in letters:
        try:
            raw = json.loads(letter.get("raw") or "")
        except (ValueError, RecursionError):
            continue
        items = raw.get("data") if isinstance(raw, dict) and "data" in raw else [raw]
        for item in items if isinstance(items, list) else []:
            try:
                keys.append(key_of(item["s"], item["t"], item["p"], item["v"], item.get("c")))
            except (KeyError, TypeError, ValueError, OverflowError):
                continue  # a hostile letter: not a trade the feed sent
    return keys


@dataclass(frozen=True)
class Gap:
    start_ms: int
    end_ms: int
    symbols: tuple[str, ...]  # empty: every symbol

    def covers(self, symbol: str, at_ms: int, slack_ms: int) -> bool:
        """A gap's times are arrival times at the collector: ``at_ms`` is when the trade was
        sent, ``slack_ms`` the time in flight."""
        return (not self.symbols or symbol in self.symbols) and (
            self.start_ms - slack_ms <= at_ms <= self.end_ms + slack_ms
        )


@dataclass(frozen=True)
class Outcome:
    fault: str
    sent: int
    stored: int
    duplicated: int
    dead_lettered: int
    in_gaps: int
    lost: int
    recover_s: float | None = None
    bars_match: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def account(
    fault: str,
    sent: list[TradeKey],
    stored: list[TradeKey],
    dead_lettered: list[TradeKey],
    gaps: list[Gap],
    gap_slack_ms: int = 2_000,
    sent_at: Mapping[TradeKey, int] | None = None,
) -> Outcome:
    """Each sent trade counted once: stored (duplicates counted apart), else dead-lettered,
    else sent (``sent_at``, default its trade time) inside a gap the collector recorded, else
    lost.

    >>> a = key_of("X", 1000, 1.0, 1.0, [])
    >>> b = key_of("X", 2000, 1.0, 1.0, [])
    >>> c = key_of("X", 9000, 1.0, 1.0, [])
    >>> account("demo", [a, b, c], [a, a], [], [Gap(1500, 2500, ())])
    ... # doctest: +NORMALIZE_WHITESPACE
    Outcome(fault='demo', sent=3, stored=1, duplicated=1, dead_lettered=0, in_gaps=1, lost=1,
            recover_s=None, bars_match=None, note='')
    """
    want, have, letters = Counter(sent), Counter(stored), Counter(dead_lettered)
    stored_n = duplicated = dead_n = in_gaps = lost = 0
    for key, n in want.items():
        got = have.get(key, 0)
        stored_n += min(n, got)
        duplicated += max(0, got - n)
        missing = max(0, n - got)
        lettered = min(missing, letters.get(key, 0))
        dead_n += lettered
        missing -= lettered
        at = key[1] if sent_at is None else sent_at.get(key, key[1])
        if missing and any(gap.covers(key[0], at, gap_slack_ms) for gap in gaps):
            in_gaps += missing
        else:
            lost += missing
    return Outcome(fault, sum(want.values()), stored_n, duplicated, dead_n, in_gaps, lost)


def markdown_table(outcomes: list[Outcome]) -> str:
    head = (
        "| fault | sent | stored | duplicated | dead-lettered | in gaps | lost | "
        "recovered in | bars = recompute | note |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    )
    rows = [
        f"| {o.fault} | {o.sent:,} | {o.stored:,} | {o.duplicated:,} | {o.dead_lettered:,} | "
        f"{o.in_gaps:,} | {o.lost:,} | "
        f"{'-' if o.recover_s is None else f'{o.recover_s:.1f} s'} | "
        f"{'-' if o.bars_match is None else ('yes' if o.bars_match else '**no**')} | {o.note} |"
        for o in outcomes
    ]
    return "\n".join([head, *rows])
