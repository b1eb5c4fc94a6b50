from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.encoding import TradeEncoder
from collector.feed import CsvReplay
from collector.finnhub import FrameParser
from collector.ids import trade_id
from collector.models import DLQ_RECORD_LIMIT_BYTES, FrameResult

NOW = 1_700_000_000_000
SYMBOLS = ("AAPL", "BINANCE:BTCUSDT")
ENCODER = TradeEncoder()


def parser(**kw: Any) -> FrameParser:
    """A parser whose future window (60 s, wider than the 2-s default) the cases below probe."""
    return FrameParser(SYMBOLS, source="feed", **{"max_future_skew_ms": 60_000, **kw})


def frame(*trades: Any) -> bytes:
    return json.dumps({"type": "trade", "data": list(trades)}).encode()


def good(**override: Any) -> dict[str, Any]:
    trade: dict[str, Any] = {"s": "AAPL", "p": 164.06, "t": NOW - 5, "v": 100, "c": ["1", "12"]}
    trade.update(override)
    return trade


def assert_accounted(raw: bytes, result: FrameResult) -> None:
    """Every input ends up somewhere: all elements of a trade batch are trades or letters, and
    every other frame is either a dead letter or a known control frame."""
    if result.kind == "trade":
        data = json.loads(raw)["data"]
        assert len(result.trades) + len(result.dead_letters) == len(data)
    elif result.kind in ("ping", "error"):
        assert not result.trades and not result.dead_letters
    else:
        assert result.kind in ("invalid", "unknown")
        assert not result.trades and len(result.dead_letters) == 1


@pytest.mark.parametrize(
    ("raw", "kind", "n_trades", "reasons", "detail_part"),
    [
        (frame(good()), "trade", 1, [], None),
        (b'{"type":"ping"}', "ping", 0, [], None),
        (b'{"type":"error","msg":"Subscribing to too many symbols"}', "error", 0, [], None),
        (b"not json", "invalid", 0, ["invalid_json"], "frame: not JSON"),
        (b"\xff\xfe\xfa", "invalid", 0, ["invalid_json"], "frame:"),
        (b"[1,2]", "invalid", 0, ["not_an_object"], "frame: array [1, 2]"),
        (b'{"data":[]}', "invalid", 0, ["missing_field"], "type: missing"),
        (b'{"type":"news","data":[]}', "unknown", 0, ["unknown_type"], 'type: "news"'),
        (b'{"type":"trade"}', "invalid", 0, ["missing_field"], "data: missing"),
        (b'{"type":"trade","data":null}', "invalid", 0, ["wrong_type"], "data: null"),
        (b'{"type":"trade","data":{"s":"A"}}', "invalid", 0, ["wrong_type"], "data: object"),
        (frame(good(p=-1)), "trade", 0, ["invalid_price"], "data[0].p: -1"),
        (frame(good(p=0)), "trade", 0, ["invalid_price"], "data[0].p: 0"),
        (frame(good(v=-0.5)), "trade", 0, ["invalid_volume"], "data[0].v: -0.5"),
        (frame(good(p="1.5")), "trade", 0, ["wrong_type"], 'data[0].p: string "1.5"'),
        (frame(good(p=True)), "trade", 0, ["wrong_type"], "data[0].p: boolean true"),
        (frame(good(t=1.7e12)), "trade", 0, ["wrong_type"], "data[0].t: number"),
        (frame(good(s=7)), "trade", 0, ["wrong_type"], "data[0].s: 7"),
        (frame(good(c="1")), "trade", 0, ["wrong_type"], 'data[0].c: "1"'),
        (frame(good(c=[1])), "trade", 0, ["wrong_type"], "data[0].c: [1]"),
        (frame({"p": 1, "t": NOW, "v": 1}), "trade", 0, ["missing_field"], "data[0].s: missing"),
        (frame(good(), 5), "trade", 1, ["wrong_type"], "data[1]: integer 5"),
        (frame(good(s="TSLA")), "trade", 0, ["unsubscribed_symbol"], 'data[0].s: "TSLA"'),
        (frame(good(t=NOW + 61_000)), "trade", 0, ["timestamp_out_of_range"], "data[0].t"),
        (frame(good(t=NOW - 86_400_001)), "trade", 0, ["timestamp_out_of_range"], "data[0].t"),
        (frame(good(t=NOW + 59_000)), "trade", 1, [], None),
    ],
)
def test_frames_are_classified(
    raw: bytes, kind: str, n_trades: int, reasons: list[str], detail_part: str | None
) -> None:
    result = parser().parse(raw, received_ms=NOW)
    assert result.kind == kind
    assert len(result.trades) == n_trades
    assert [d.reason for d in result.dead_letters] == reasons
    if detail_part is not None:
        assert detail_part in result.dead_letters[0].detail
        assert "\n" not in result.dead_letters[0].detail
    assert_accounted(raw, result)


def test_non_finite_prices_from_json_literals_are_rejected() -> None:
    raw = b'{"type":"trade","data":[{"s":"AAPL","p":NaN,"t":%d,"v":1},' % NOW + (
        b'{"s":"AAPL","p":Infinity,"t":%d,"v":1},{"s":"AAPL","p":1,"t":%d,"v":-Infinity}]}'
        % (NOW, NOW)
    )
    result = parser().parse(raw, received_ms=NOW)
    reasons = [d.reason for d in result.dead_letters]
    assert reasons == ["invalid_price", "invalid_price", "invalid_volume"]


def test_a_trade_is_normalised_with_both_clocks() -> None:
    result = parser().parse(frame(good(p=164, v=100, c=None)), received_ms=NOW)
    (t,) = result.trades
    assert (t.symbol, t.price, t.volume, t.conditions) == ("AAPL", 164.0, 100.0, ())
    assert isinstance(t.price, float) and isinstance(t.volume, float)
    assert (t.trade_ts_ms, t.ingest_ts_ms, t.source) == (NOW - 5, NOW, "feed")


def test_zero_volume_price_updates_are_kept_as_trades() -> None:
    result = parser().parse(frame(good(v=0), good(v=0.0, p=164.07)), received_ms=NOW)
    assert [t.volume for t in result.trades] == [0.0, 0.0]
    assert result.dead_letters == []


def test_missing_and_null_conditions_mean_none() -> None:
    item = good()
    del item["c"]
    result = parser().parse(frame(item, good(c=None), good(c=[])), received_ms=NOW)
    assert [t.conditions for t in result.trades] == [(), (), ()]


def test_identical_trades_in_one_frame_get_distinct_ids_and_replays_the_same_ids() -> None:
    raw = frame(good(), good(), good(), good(v=5))
    first = parser().parse(raw, received_ms=NOW)
    again = parser().parse(raw, received_ms=NOW + 1000)
    ids = [t.trade_id for t in first.trades]
    assert len(set(ids)) == 4
    assert ids == [t.trade_id for t in again.trades]
    # the ordinal counts only identical trades: the odd one out has ordinal 0
    expected = trade_id("AAPL", NOW - 5, 164.06, 5.0, ("1", "12"), 0)
    assert ids[3] == expected


def test_identical_trades_split_over_frames_stay_distinct() -> None:
    p = parser()
    first = p.parse(frame(good(), good()), received_ms=NOW)
    second = p.parse(frame(good()), received_ms=NOW)
    ids = [t.trade_id for t in first.trades + second.trades]
    assert len(set(ids)) == 3
    # and the numbering is the one a single frame of all three would get
    assert ids == [
        t.trade_id for t in parser().parse(frame(good(), good(), good()), received_ms=NOW).trades
    ]


def test_identical_trades_beyond_the_window_count_from_zero_again() -> None:
    p = parser(id_window_ms=1000, id_window_frames=1)
    old = p.parse(frame(good(t=NOW - 10_000)), received_ms=NOW)
    p.parse(frame(good(t=NOW - 1)), received_ms=NOW)  # trade time moves on: old keys expire
    again = p.parse(frame(good(t=NOW - 10_000)), received_ms=NOW)
    assert again.trades[0].trade_id == old.trades[0].trade_id


def test_replaying_the_same_frames_in_a_new_parser_gives_the_same_ids() -> None:
    frames = [frame(good(), good(v=1)), frame(good(), good(p=1.5)), frame(good(v=1))]
    runs = [
        [t.trade_id for f in frames for t in p.parse(f, received_ms=NOW).trades]
        for p in (parser(), parser())
    ]
    assert runs[0] == runs[1] and len(set(runs[0])) == 5


def test_a_bad_trade_does_not_shift_the_ids_of_the_good_ones() -> None:
    clean = parser().parse(frame(good(), good()), received_ms=NOW)
    dirty = parser().parse(frame(good(), good(p=-1), good()), received_ms=NOW)
    assert [t.trade_id for t in clean.trades] == [t.trade_id for t in dirty.trades]


def test_dead_letters_keep_the_raw_input_and_the_symbol() -> None:
    result = parser().parse(frame(good(), good(v=-1)), received_ms=NOW)
    (letter,) = result.dead_letters
    assert json.loads(letter.raw) == good(v=-1)
    assert letter.symbol == "AAPL"
    doc = json.loads(letter.to_json())
    assert doc["reason"] == "invalid_volume"
    assert doc["source"] == "feed"
    assert doc["received_ts_ms"] == NOW
    assert json.loads(doc["raw"]) == good(v=-1)


# -- property-based: arbitrary junk never crashes the parser and is fully accounted for --------
# The hostile classes of the audit (issue 12): numbers no float holds, lone surrogates (JSON's
# "\ud800" escapes decode to them), fields of megabytes.
huge_ints = st.integers(min_value=300, max_value=4000).flatmap(
    lambda digits: st.sampled_from([10**digits, -(10**digits), 2**1024 - 1])
)
surrogate_text = st.lists(
    st.characters(categories=["Cs"]) | st.characters(max_codepoint=0x7F), min_size=1, max_size=8
).map("".join)
# A field one character past what a dead-letter record may hold: as hostile as one of 2 MiB (the
# letter must still be cut to fit), at half the bytes every example encodes and decodes.
oversized_text = st.sampled_from([70_000, DLQ_RECORD_LIMIT_BYTES + 1]).map(lambda n: "C" * n)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | surrogate_text
    | oversized_text,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)
trade_like = st.fixed_dictionaries(
    {},
    optional={
        "s": st.sampled_from([*SYMBOLS, "TSLA", ""]) | json_values,
        "p": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | json_values,
        "t": st.integers(NOW - 90_000_000, NOW + 90_000) | json_values,
        "v": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 10**6) | json_values,
        "c": st.none()
        | st.lists(st.text(max_size=3) | surrogate_text | oversized_text, max_size=3)
        | st.lists(st.just("1"), min_size=30, max_size=40)
        | json_values,
    },
)


def _nested(depth: int, where: str) -> bytes:
    deep = b"[" * depth + b"]" * depth
    if where == "data":
        return b'{"type":"trade","data":' + deep + b"}"
    return b'{"type":"trade","data":[{"s":"AAPL","p":1,"t":%d,"v":1,"c":%s}]}' % (NOW, deep)


deeply_nested = st.builds(
    _nested, st.sampled_from([50, 500, 5_000, 200_000]), st.sampled_from(["data", "c"])
)
error_frames = json_values.map(lambda msg: json.dumps({"type": "error", "msg": msg}).encode())
frames = st.one_of(
    deeply_nested,
    error_frames,
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(trade_like | json_values, max_size=8).map(
        lambda data: json.dumps({"type": "trade", "data": data}).encode()
    ),
    st.fixed_dictionaries({"type": json_values}, optional={"data": json_values}).map(
        lambda d: json.dumps(d).encode()
    ),
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=frames)
def test_arbitrary_frames_never_crash_and_every_input_is_accounted_for(raw: bytes) -> None:
    result = parser().parse(raw, received_ms=NOW)
    assert_accounted(raw, result)
    for t, value in zip(result.trades, ENCODER.encode_many(result.trades), strict=True):
        assert t.symbol in SYMBOLS
        assert math.isfinite(t.price) and t.price > 0
        assert math.isfinite(t.volume) and t.volume >= 0
        assert NOW - 86_400_000 <= t.trade_ts_ms <= NOW + 60_000
        assert all(isinstance(c, str) for c in t.conditions)
        assert len(value) < 4096  # far inside one Kafka record
    for letter in result.dead_letters:
        assert letter.detail and letter.detail.isprintable()
        key = letter.symbol.encode("utf-8") if letter.symbol else b""
        value = letter.to_json()  # always serialisable...
        assert len(key) + len(value) <= DLQ_RECORD_LIMIT_BYTES  # ...into one record
        json.loads(value)
    if result.message is not None:  # what the pipeline logs: one bounded, printable line
        assert result.message.isprintable() and len(result.message) <= 200


@settings(max_examples=100, deadline=None)
@given(data=st.lists(trade_like, min_size=1, max_size=10))
def test_counts_add_up_over_a_batch(data: list[dict[str, Any]]) -> None:
    raw = json.dumps({"type": "trade", "data": data}).encode()
    result = parser().parse(raw, received_ms=NOW)
    assert len(result.trades) + len(result.dead_letters) == len(data)
    assert len({t.trade_id for t in result.trades}) == len(result.trades)


# -- property-based: ids over interleaved, delayed and skewed per-symbol streams ---------------
STREAM_SYMBOLS = ("AAPL", "BINANCE:BTCUSDT", "BINANCE:ETHUSDT")


@dataclass(frozen=True)
class _Frame:
    symbol: str
    index: int  # position in its symbol's own stream
    due_ms: int  # when the symbol's exchange sent it (its newest regular trade time)
    raw: bytes
    size: int


@st.composite
def symbol_streams(draw: st.DrawFn) -> list[list[_Frame]]:
    """Per-symbol frame streams: bursts of identical trades (same ms, price and size), cut into
    frames at arbitrary points, with the odd trade stamped up to 50 s in the future."""
    streams = []
    for symbol in STREAM_SYMBOLS[: draw(st.integers(1, len(STREAM_SYMBOLS)))]:
        t = NOW - 30_000
        trades: list[tuple[dict[str, Any], int]] = []  # (trade, the stream's clock when sent)
        for _ in range(draw(st.integers(1, 10))):
            t += draw(st.sampled_from([0, 0, 1, 700, 2_500, 4_000]))
            price = draw(st.sampled_from([10.0, 10.5]))
            item = {"s": symbol, "p": price, "t": t, "v": 1, "c": None}
            trades += [(item, t)] * draw(st.integers(1, 6))
            if draw(st.integers(0, 9)) == 0:
                ahead = draw(st.integers(3_000, 50_000))
                trades.append(({**item, "t": t + ahead}, t))
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(trades) - 1)), max_size=12)))
        bounds = [0, *[c for c in cuts if c < len(trades)], len(trades)]
        frames = []
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            chunk = trades[a:b]
            data = [item for item, _ in chunk]
            raw = json.dumps({"type": "trade", "data": data}).encode()
            frames.append(_Frame(symbol, i, max(c for _, c in chunk), raw, len(data)))
        streams.append(frames)
    return streams


def _arrivals(streams: list[list[_Frame]], lags: list[int], order: list[int]) -> list[_Frame]:
    """All frames in arrival order: each symbol's frames in their own order, delayed by the
    symbol's lag; ties broken by ``order``."""
    keyed = [
        (f.due_ms + lag, order[n % len(order)], n, f)
        for n, (frames, lag) in enumerate(zip(streams, lags, strict=False))
        for f in frames
    ]
    return [f for *_, f in sorted(keyed, key=lambda k: k[:3])]


def _ids_by_trade(frames: list[_Frame], lag_of: dict[str, int]) -> dict[tuple[str, int, int], str]:
    p = FrameParser(STREAM_SYMBOLS, source="feed", max_future_skew_ms=60_000)  # some 50 s ahead
    ids: dict[tuple[str, int, int], str] = {}
    for f in frames:
        result = p.parse(f.raw, received_ms=f.due_ms + lag_of[f.symbol])
        assert result.dead_letters == []
        assert len(result.trades) == f.size
        for i, t in enumerate(result.trades):
            ids[(f.symbol, f.index, i)] = t.trade_id
    return ids


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=symbol_streams(),
    lags=st.lists(st.integers(0, 8_000), min_size=3, max_size=3),
    other_lags=st.lists(st.integers(0, 8_000), min_size=3, max_size=3),
    order=st.permutations(range(3)),
)
def test_distinct_trades_get_distinct_ids_under_any_interleaving_delay_and_skew(
    streams: list[list[_Frame]], lags: list[int], other_lags: list[int], order: list[int]
) -> None:
    symbols = [frames[0].symbol for frames in streams]
    lag_of = dict(zip(symbols, lags, strict=False))
    arrived = _arrivals(streams, lags, order)
    ids = _ids_by_trade(arrived, lag_of)
    assert len(ids) == sum(f.size for frames in streams for f in frames)
    assert len(set(ids.values())) == len(ids), "distinct trades share an id"
    # the same frames replayed into a new parser: the same ids
    assert _ids_by_trade(arrived, lag_of) == ids
    # the same per-symbol streams delayed and interleaved differently: still the same ids
    other_lag_of = dict(zip(symbols, other_lags, strict=False))
    other = _arrivals(streams, other_lags, list(reversed(order)))
    assert _ids_by_trade(other, other_lag_of) == ids


# -- recorded real frames ------------------------------------------------------------------------
def _recorded(shared_data: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(shared_data.glob("finnhub_*.json*")):
        lines += [line for line in path.read_bytes().splitlines() if line.strip()]
    return lines


def test_recorded_finnhub_frames_parse_without_dead_letters(shared_data: Path) -> None:
    lines = _recorded(shared_data)
    docs = [json.loads(line) for line in lines]
    symbols = {d["s"] for doc in docs for d in doc["data"]}
    expected = sum(len(doc["data"]) for doc in docs)
    # Recorded frames are old: judge them against their own time, not today's.
    p = FrameParser(symbols, source="replay", max_past_skew_ms=10**13)
    kinds: dict[str, int] = {}
    trades = 0
    for raw in lines:
        result = p.parse(raw, received_ms=max(d["t"] for d in json.loads(raw)["data"]))
        kinds[result.kind] = kinds.get(result.kind, 0) + 1
        assert result.dead_letters == []
        trades += len(result.trades)
    assert kinds == {"trade": len(lines)}
    assert trades == expected
    assert trades >= 80  # SOURCE.md: 80 trades in these files


def test_recorded_frames_with_time_going_backwards_keep_their_order(shared_data: Path) -> None:
    raw = (shared_data / "finnhub_frames_out_of_order.jsonl").read_bytes().splitlines()[0]
    items = json.loads(raw)["data"]
    result = FrameParser({items[0]["s"]}, source="replay", max_past_skew_ms=10**13).parse(
        raw, received_ms=max(d["t"] for d in items)
    )
    assert [t.trade_ts_ms for t in result.trades] == [d["t"] for d in items]
    assert len({t.trade_id for t in result.trades}) == len(items)


def _binance_frames(shared_data: Path) -> tuple[tuple[str, ...], list[tuple[int, str, bytes]]]:
    """The 6-symbol Binance capture as the feed frames it: (arrival ms, symbol, frame)."""
    source = CsvReplay(shared_data / "binance_6sym_20240808.csv")
    frames = [
        (NOW + round(tick.due_s * 1000), f["data"][0]["s"], json.dumps(f).encode())
        for tick in source.ticks(NOW)
        for f in tick.frames
        if isinstance(f, dict)
    ]
    return source.symbols, frames


def _shared_ids(symbols: tuple[str, ...], frames: list[tuple[int, str, bytes]]) -> tuple[int, int]:
    """(trades, trades sharing an id with an earlier one) after parsing ``frames``."""
    p = FrameParser(symbols, source="replay", max_future_skew_ms=60_000)  # some 10 s ahead
    ids = [t.trade_id for at, _, raw in frames for t in p.parse(raw, received_ms=at).trades]
    return len(ids), len(ids) - len(set(ids))


@pytest.mark.parametrize("delay_ms", [3_000, 4_000, 6_000])
def test_a_delayed_symbol_of_real_trades_keeps_every_id_distinct(
    shared_data: Path, delay_ms: int
) -> None:
    symbols, frames = _binance_frames(shared_data)
    delayed = sorted(
        ((at + delay_ms if s == "BINANCE:BTCUSDT" else at, s, raw) for at, s, raw in frames),
        key=lambda f: f[0],
    )
    assert _shared_ids(symbols, delayed) == (55_270, 0)


def test_future_stamped_trades_of_one_symbol_keep_real_trades_ids_distinct(
    shared_data: Path,
) -> None:
    symbols, frames = _binance_frames(shared_data)
    eth = [n for n, (_, s, _) in enumerate(frames) if s == "BINANCE:ETHUSDT"]
    # forty ETHUSDT frames spread over the file each get their first trade stamped +10 s
    for n in eth[:: len(eth) // 40]:
        at, s, raw = frames[n]
        doc = json.loads(raw)
        doc["data"][0]["t"] += 10_000
        frames[n] = (at, s, json.dumps(doc).encode())
    assert _shared_ids(symbols, frames) == (55_270, 0)
