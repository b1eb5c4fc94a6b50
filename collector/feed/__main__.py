"""``python -m collector.feed``: serve the Finnhub websocket protocol offline.

Usage::

    python -m collector.feed --simulate --rate 500                     # ws://127.0.0.1:8765
    python -m collector.feed --replay-csv ../shared/data/binance_6sym_20240808.csv --speed 10
    python -m collector.feed --replay frames.jsonl                     # from collector --record
    python -m collector.feed --simulate --junk-every 50 --drop-every 10000 --stall-after 5000 \\
        --stall-seconds 20                                             # with faults

Any token is accepted unless ``--token`` (or ``FEED_TOKEN``) is set. Point the collector at it
with ``FINNHUB_WS_URL=ws://127.0.0.1:8765 python -m collector``. Ctrl+C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from collector.config import DEFAULT_SYMBOLS
from collector.exceptions import FeedError
from collector.feed.faults import FaultPlan
from collector.feed.server import FeedOptions, FeedServer
from collector.feed.sources import CsvReplay, JsonlReplay, SimulatedMarket, TradeSource
from schemas.settings import SecretStr, env_value, secret_setting

logger = logging.getLogger("collector.feed")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m collector.feed", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--simulate", action="store_true", help="built-in market simulator (default)")
    src.add_argument(
        "--replay-csv", type=Path, metavar="CSV", help="trades: symbol,t_ms,price,volume"
    )
    src.add_argument("--replay", type=Path, metavar="JSONL", help="recorded Finnhub frames")
    env = os.environ
    p.add_argument("--host", default=env_value(env, "FEED_HOST") or FeedOptions.host)
    # A string default goes through ``type`` too, so a bad FEED_PORT is a usage error, not a trace.
    p.add_argument(
        "--port",
        type=int,
        default=env_value(env, "FEED_PORT") or str(FeedOptions.port),
        help="(env FEED_PORT)",
    )
    p.add_argument(
        "--token",
        type=SecretStr,
        default=secret_setting(env, "FEED_TOKEN"),
        help="required token (env FEED_TOKEN; default: accept any)",
    )
    p.add_argument(
        "--symbols",
        default=env_value(env, "SYMBOLS") or ",".join(DEFAULT_SYMBOLS),
        help="simulated symbols, comma-separated",
    )
    p.add_argument("--rate", type=float, help="trades/s (simulator default 200; CSV: re-pace)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--market-hours", action="store_true", help="equities only in US hours")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    p.add_argument("--loop", action="store_true", help="CSV replay: start over at the end")
    p.add_argument("--limit", type=int, help="CSV replay: at most this many rows")
    p.add_argument(
        "--no-rebase", action="store_true", help="JSONL replay: keep trade times (and ids)"
    )
    p.add_argument("--max-trades", type=int, help="send exactly this many trades, then only pings")
    p.add_argument("--ping-interval", type=float, default=15.0, metavar="S")
    p.add_argument("--max-symbols", type=int, default=50)
    p.add_argument("--sent-log", type=Path, help="write each trade frame sent here (JSONL)")
    p.add_argument("--drop-every", type=int, metavar="N", help="fault: close after every N trades")
    p.add_argument("--drop-mode", choices=["close", "abort"], default="close")
    p.add_argument("--stall-after", type=int, metavar="N", help="fault: go silent after N trades")
    p.add_argument("--stall-seconds", type=float, default=0.0, metavar="S")
    p.add_argument("--junk-every", type=int, metavar="N", help="fault: junk after N trade frames")
    p.add_argument("--error-every", type=int, metavar="N", help="fault: error frame every N")
    p.add_argument(
        "--hostile-every",
        type=int,
        metavar="N",
        help="fault: a hostile frame (huge numbers, lone surrogates, 2 MB fields, "
        "deep nesting) after every N trade frames",
    )
    p.add_argument(
        "--drip-after",
        type=int,
        metavar="N",
        help="fault: once, after N trades, send a frame one byte at a time",
    )
    p.add_argument("--drip-seconds", type=float, default=0.0, metavar="S")
    p.add_argument(
        "--abort-mid-frame-after",
        type=int,
        metavar="N",
        help="fault: once, after N trades, reset the TCP connection mid-frame",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def _source(args: argparse.Namespace) -> TradeSource:
    if args.replay_csv is not None:
        return CsvReplay(
            args.replay_csv, speed=args.speed, rate=args.rate, loop=args.loop, limit=args.limit
        )
    if args.replay is not None:
        return JsonlReplay(args.replay, speed=args.speed, rebase=not args.no_rebase)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    return SimulatedMarket(
        symbols, rate=args.rate or 200.0, seed=args.seed, market_hours=args.market_hours
    )


async def _serve(server: FeedServer) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    progress = asyncio.create_task(_progress(server))
    try:
        await server.run()
    except asyncio.CancelledError:
        pass
    finally:
        progress.cancel()
    s = server.stats
    logger.info(
        "stopped: %d trades in %d frames to %d connection(s); junk %d, hostile %d, drops %d, "
        "stalls %d, drips %d",
        s.trades_sent,
        s.trade_frames_sent,
        s.connections,
        sum(s.junk_sent.values()),
        sum(s.hostile_sent.values()),
        s.drops,
        s.stalls,
        s.drips,
    )


async def _progress(server: FeedServer, every_s: float = 10.0) -> None:
    last = 0
    while True:
        await asyncio.sleep(every_s)
        sent = server.stats.trades_sent
        logger.info(
            "progress: %d trades sent (%.0f/s), %d client(s)",
            sent,
            (sent - last) / every_s,
            server.client_count,
        )
        last = sent


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        faults = FaultPlan(
            drop_every=args.drop_every,
            drop_mode=args.drop_mode,
            stall_after=args.stall_after,
            stall_s=args.stall_seconds,
            junk_every=args.junk_every,
            error_every=args.error_every,
            hostile_every=args.hostile_every,
            drip_after=args.drip_after,
            drip_s=args.drip_seconds,
            abort_mid_frame_after=args.abort_mid_frame_after,
        )
        source = _source(args)
    except (FeedError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = FeedOptions(
        host=args.host,
        port=args.port,
        token=args.token,
        ping_interval_s=args.ping_interval,
        max_symbols=args.max_symbols,
        max_trades=args.max_trades,
        sent_log=args.sent_log,
    )
    server = FeedServer(source, options, faults)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror})", file=sys.stderr)
        return 1
    if server.error is not None:
        print(f"error: feed failed: {server.error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
