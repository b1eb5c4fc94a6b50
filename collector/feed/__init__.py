"""``python -m collector.feed``: an offline Finnhub-protocol websocket server.

It serves a built-in market simulator, a CSV replay of recorded trades, or a replay of recorded
Finnhub frames, and injects faults (dropped connections, stalls, junk and error frames) on
request. See :mod:`collector.feed.__main__` for the command line.
"""

from __future__ import annotations

from collector.feed.faults import JUNK, FaultPlan, junk_frame
from collector.feed.server import FeedOptions, FeedServer, FeedStats
from collector.feed.sources import CsvReplay, JsonlReplay, SimulatedMarket, Tick, TradeSource

__all__ = [
    "JUNK",
    "CsvReplay",
    "FaultPlan",
    "FeedOptions",
    "FeedServer",
    "FeedStats",
    "JsonlReplay",
    "SimulatedMarket",
    "Tick",
    "TradeSource",
    "junk_frame",
]
