"""The offline feed: sources (pure) and the server's protocol (a real socket, no Kafka)."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from collector.exceptions import FeedError
from collector.feed import (
    JUNK,
    CsvReplay,
    FaultPlan,
    FeedServer,
    JsonlReplay,
    SimulatedMarket,
    junk_frame,
)
from collector.feed.sources import us_market_open
from collector.finnhub import FrameParser
from schemas.settings import SecretStr

START = 1_700_000_000_000  # Tue 2023-11-14 22:13 UTC: US market closed
SYMBOLS = ("BINANCE:BTCUSDT", "BINANCE:DOGEUSDT", "AAPL", "MSFT")


def trades_of(ticks: list[Any]) -> list[dict[str, Any]]:
    return [d for t in ticks for f in t.frames for d in f["data"]]


def simulate(seconds: float, **kw: Any) -> list[Any]:
    # 100 ms ticks: the same statistics as the default 10 ms, ten times fewer numpy calls
    market = SimulatedMarket(kw.pop("symbols", SYMBOLS), tick_s=kw.pop("tick_s", 0.1), **kw)
    return list(itertools.islice(market.ticks(START), int(seconds / market.tick_s)))


# -- simulator -------------------------------------------------------------------------------------
def test_the_simulator_is_deterministic_for_a_seed() -> None:
    assert trades_of(simulate(5, rate=500, seed=4)) == trades_of(simulate(5, rate=500, seed=4))
    assert trades_of(simulate(5, rate=500, seed=4)) != trades_of(simulate(5, rate=500, seed=5))


def test_the_simulator_averages_the_configured_rate_and_is_bursty() -> None:
    ticks = simulate(300, rate=400, seed=1)
    trades = trades_of(ticks)
    assert 0.75 * 400 * 300 <= len(trades) <= 1.25 * 400 * 300
    per_second = Counter(int(t.due_s) for t in ticks for _ in range(t.trades))
    assert max(per_second.values()) > 3 * (len(trades) / 300)  # bursts well above the mean
    assert sum(t.trades for t in ticks) == len(trades)


def test_simulated_trades_are_valid_finnhub_trades_with_real_world_features() -> None:
    ticks = simulate(120, rate=500, seed=2)
    trades = trades_of(ticks)
    parser = FrameParser(SYMBOLS, source="feed", max_past_skew_ms=10**12, max_future_skew_ms=10**12)
    for tick in ticks:
        for f in tick.frames:
            result = parser.parse(json.dumps(f), received_ms=START)
            assert result.dead_letters == []
            assert len({d["s"] for d in f["data"]}) == 1  # one symbol per frame, like Finnhub
    same_ms = Counter((d["s"], d["t"]) for d in trades)
    assert sum(n for n in same_ms.values() if n > 1) / len(trades) > 0.3
    equities = [d for d in trades if ":" not in d["s"]]
    crypto = [d for d in trades if ":" in d["s"]]
    assert equities and crypto
    assert all(d["c"] for d in equities) and all(d["c"] is None for d in crypto)
    assert all(float(d["v"]).is_integer() and d["v"] >= 1 for d in equities)
    assert any(d["v"] % 100 == 0 for d in equities) and any(d["v"] % 100 for d in equities)
    assert all(START <= d["t"] <= START + 121_000 for d in trades)


def test_simulated_prices_cluster_volatility_and_stay_positive() -> None:
    trades = [d for d in trades_of(simulate(600, rate=300, seed=3)) if d["s"] == "BINANCE:BTCUSDT"]
    prices = [d["p"] for d in trades]
    assert min(prices) > 0
    returns = [math.log(b / a) for a, b in zip(prices, prices[1:], strict=False) if a != b]
    assert len(returns) > 1000
    absolute = [abs(r) for r in returns]
    mean = sum(absolute) / len(absolute)
    # volatility clustering: |r_t| and |r_t+1| are positively correlated
    cov = sum((a - mean) * (b - mean) for a, b in zip(absolute, absolute[1:], strict=False))
    var = sum((a - mean) ** 2 for a in absolute)
    assert cov / var > 0.05


def test_zero_volume_price_updates_are_simulated_for_crypto() -> None:
    trades = trades_of(simulate(300, rate=500, seed=6))
    zero = [d for d in trades if d["v"] == 0]
    assert zero and all(":" in d["s"] for d in zero)


def test_market_hours_silence_equities_only() -> None:
    ticks = simulate(30, rate=500, seed=1, market_hours=True)
    symbols = {d["s"] for d in trades_of(ticks)}
    assert not us_market_open(START)
    assert symbols and all(":" in s for s in symbols)


@pytest.mark.parametrize(
    ("kw", "message"), [({"rate": 0}, "--rate 0"), ({"rate": float("nan")}, "--rate")]
)
def test_bad_simulator_settings_are_clear(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(FeedError, match=message):
        SimulatedMarket(SYMBOLS, **kw)


# -- replays ---------------------------------------------------------------------------------------
def test_csv_replay_rebases_times_keeps_every_row_and_paces_by_arrival(shared_data: Path) -> None:
    path = shared_data / "binance_futures_btcusdt_20200222.csv"
    source = CsvReplay(path, speed=100.0)
    ticks = list(source.ticks(START))
    trades = trades_of(ticks)
    rows = source.rows
    assert len(trades) == len(rows) == 9999
    t0 = rows[0][1]
    assert [d["t"] for d in trades] == [int(START + (r[1] - t0) / 100.0) for r in rows]
    assert [(d["s"], d["p"], d["v"]) for d in trades] == [(r[0], r[2], r[3]) for r in rows]
    dues = [t.due_s for t in ticks]
    assert dues == sorted(dues)
    assert dues[-1] == pytest.approx((rows[-1][1] - t0) / 100.0 / 1000, abs=0.02)


def test_csv_replay_at_a_rate_compresses_time_consistently(shared_data: Path) -> None:
    source = CsvReplay(shared_data / "binance_6sym_20240808.csv", rate=10_000, limit=5000)
    ticks = list(source.ticks(START))
    assert sum(t.trades for t in ticks) == 5000
    assert ticks[-1].due_s == pytest.approx(0.5, abs=0.05)
    assert {d["s"] for d in trades_of(ticks)} == set(source.symbols)


def test_csv_replay_loops(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("symbol,t_ms,price,volume\nA,1000,1.5,2\nA,1010,1.6,3\n", encoding="utf-8")
    ticks = list(itertools.islice(CsvReplay(path, loop=True).ticks(START), 6))
    times = [d["t"] for d in trades_of(ticks)]
    assert len(times) == 6 and times == sorted(times)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("symbol,price\nA,1\n", "missing column(s) t_ms, volume"),
        ("symbol,t_ms,price,volume\nA,x,1,1\n", ":2: not a trade row"),
    ],
)
def test_bad_csv_files_are_named_with_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FeedError, match=re.escape(message)):
        CsvReplay(path)


def test_jsonl_replay_rebases_trades_and_passes_junk_through(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl"
    path.write_text(
        '{"type":"trade","data":[{"s":"A","p":1,"t":5000,"v":1}]}\n'
        '{"type":"ping"}\n'
        "not json\n"
        '{"type":"trade","data":[{"s":"A","p":2,"t":7000,"v":1},{"s":"B","p":3,"t":6500,"v":1}]}\n',
        encoding="utf-8",
    )
    source = JsonlReplay(path, speed=2.0)
    ticks = list(source.ticks(START))
    frames = [f for t in ticks for f in t.frames]
    assert frames[1] == {"type": "ping"} and frames[2] == b"not json"
    assert [d["t"] for d in frames[0]["data"] + frames[3]["data"]] == [
        START,
        START + 1000,
        START + 750,
    ]
    assert [t.due_s for t in ticks] == [0.0, 0.0, 0.0, 0.75]
    assert source.symbols == ("A", "B")


def test_recorded_finnhub_frames_replay(shared_data: Path) -> None:
    source = JsonlReplay(shared_data / "finnhub_frames_aapl_2023-03-31.jsonl")
    trades = [d for t in source.ticks(START) for f in t.frames for d in f["data"]]
    assert trades and min(d["t"] for d in trades) == START
    assert source.symbols == ("AAPL",)


def test_every_junk_frame_becomes_exactly_its_dead_letter() -> None:
    parser = FrameParser(["AAPL"], source="feed")
    for i in range(len(JUNK)):
        reason, raw = junk_frame(i, "AAPL", START)
        result = parser.parse(raw, received_ms=START)
        assert [d.reason for d in result.dead_letters] == [reason]
        assert result.trades == []


def test_fault_plans_are_validated() -> None:
    with pytest.raises(ValueError, match="--drop-every 0"):
        FaultPlan(drop_every=0)
    with pytest.raises(ValueError, match="--stall-seconds"):
        FaultPlan(stall_after=5)


# -- the server, over a real socket ----------------------------------------------------------------
@pytest.fixture
def client() -> Iterator[Callable[..., websocket.WebSocket]]:
    sockets: list[websocket.WebSocket] = []

    def connect(port: int, token: str = "any") -> websocket.WebSocket:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/?token={token}", timeout=5)
        sockets.append(ws)
        return ws

    yield connect
    for ws in sockets:
        ws.close(timeout=0.2)
        # close() does nothing once the server has closed first (websocket-client then counts the
        # connection as closed but keeps its socket open): shutdown() closes the socket itself.
        ws.shutdown()


def recv_json(ws: websocket.WebSocket) -> Any:
    return json.loads(ws.recv())


def read_trades(ws: websocket.WebSocket, n: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        frame = recv_json(ws)
        if frame["type"] == "trade":
            got += frame["data"]
    return got


def test_the_server_sends_only_subscribed_symbols_and_exactly_max_trades(
    feed: Callable[..., FeedServer], client: Callable[..., websocket.WebSocket]
) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=2000, seed=1), max_trades=300)
    ws = client(server.port)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    ws.send(json.dumps({"type": "subscribe", "symbol": "BINANCE:BTCUSDT"}))
    trades = read_trades(ws, 300)
    assert len(trades) == 300 and server.stats.trades_sent == 300
    assert {d["s"] for d in trades} <= {"AAPL", "BINANCE:BTCUSDT"}
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()  # nothing more after max_trades


def test_the_market_waits_for_a_subscriber_and_unsubscribe_stops_a_symbol(
    feed: Callable[..., FeedServer], client: Callable[..., websocket.WebSocket]
) -> None:
    server = feed(SimulatedMarket(("AAPL", "MSFT"), rate=2000, seed=1))
    time.sleep(0.3)
    assert server.stats.trades_sent == 0
    ws = client(server.port)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    ws.send(json.dumps({"type": "subscribe", "symbol": "MSFT"}))
    read_trades(ws, 50)
    ws.send(json.dumps({"type": "unsubscribe", "symbol": "MSFT"}))
    # Trades sent before the feed read the unsubscribe may still carry MSFT; after it, none do.
    # Wait for that point (100 AAPL trades in a row; by chance 2**-100), then none may follow.
    in_a_row, deadline = 0, time.monotonic() + 20
    while in_a_row < 100:
        assert time.monotonic() < deadline, "MSFT trades kept coming after the unsubscribe"
        for trade in read_trades(ws, 1):
            in_a_row = in_a_row + 1 if trade["s"] == "AAPL" else 0
    later = read_trades(ws, 100)
    assert len(later) >= 100
    assert {d["s"] for d in later} == {"AAPL"}


def test_pings_errors_and_the_symbol_limit(
    feed: Callable[..., FeedServer], client: Callable[..., websocket.WebSocket]
) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=10, seed=1), ping_interval_s=0.1, max_symbols=1)
    ws = client(server.port)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    ws.send(json.dumps({"type": "subscribe", "symbol": "MSFT"}))
    ws.send("garbage")
    kinds: list[Any] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
        {"ping"} <= {k["type"] for k in kinds}
        and len([k for k in kinds if k["type"] == "error"]) >= 2
    ):
        kinds.append(recv_json(ws))
    errors = [k["msg"] for k in kinds if k["type"] == "error"]
    assert errors == ["Subscribing to too many symbols", "Invalid message"]
    assert any(k["type"] == "ping" for k in kinds)


def test_a_configured_token_is_checked_at_the_handshake(
    feed: Callable[..., FeedServer], client: Callable[..., websocket.WebSocket]
) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=10, seed=1), token=SecretStr("right"))
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        client(server.port, token="wrong")
    assert info.value.status_code == 401
    client(server.port, token="right").send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))


def test_a_drop_fault_closes_the_connection_after_n_trades(
    feed: Callable[..., FeedServer], client: Callable[..., websocket.WebSocket]
) -> None:
    server = feed(SimulatedMarket(SYMBOLS, rate=3000, seed=1), FaultPlan(drop_every=200))
    ws = client(server.port)
    for s in SYMBOLS:
        ws.send(json.dumps({"type": "subscribe", "symbol": s}))
    got = 0
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        got += len(json.loads(data).get("data", []))
    assert got == server.stats.trades_sent >= 200
    assert server.stats.drops == 1
