"""Replay-safe trade ids.

Finnhub sends no trade id, so we derive one from the content of the trade: the hex SHA-1 of
``symbol, t, p, v, conditions`` plus the *ordinal* of the trade among identical trades (same
symbol, time, price, size, conditions) that came before it. The record's ``source`` is not part
of it: a trade is the same row whichever connection brought it.

"Before it" means earlier in the same frame and, because Finnhub may split one millisecond's
trades over two frames, in earlier frames of the same symbol that are still remembered
(:class:`collector.finnhub.FrameParser` keeps these counts). Each symbol remembers a trade until
its own stream has moved on by both ``id_window_ms`` of trade time (default 2 s) and
``id_window_frames`` frames (default 256). Only the symbol's own frames count, so the numbering
of a symbol's trades depends on its own frame sequence alone: how the streams of different
symbols interleave, how far one lags behind another, or a trade stamped in the future (by up to
the allowed skew) changes no id. When no identical trade precedes a frame, which is almost
always, the ordinal is exactly "the ordinal within the frame".

Why this choice:

* the same frames always yield the same ids, so a replayed stream (a recorded file, a retried
  produce) overwrites its rows downstream instead of adding new ones;
* identical trades are real, separate trades (real data has hundreds of same-ms trades, many
  identical), and the ordinal keeps them apart, also when a burst is split over frames (in the
  recorded 6-symbol Binance capture, 81 of 55,270 trades would collide with a per-frame ordinal);
* the state is small (per symbol, the trade keys of its last 256 frames and 2 s) and needs
  nothing from before a restart. In the recorded 6-symbol Binance capture an identical trade is
  never more than one frame of its symbol away from its twin.

Replays (``python -m collector.feed --replay FILE`` of a ``python -m collector --record FILE``
run) and what they write:

* ``--no-rebase`` sends the recorded frames unchanged, so every trade gets the id (and the trade
  time, hence the Cassandra key) it got in the run that recorded it, or in any earlier replay of
  the whole file: the replay overwrites those rows (their ``source`` becomes the replay's). The
  collector still judges trade times against its clock: for a file older than
  ``COLLECTOR_MAX_PAST_SKEW`` (default one day) raise that setting, or its trades go to the
  DLQ as ``timestamp_out_of_range``.
* the default, rebasing, moves every trade time to "now", so a rebased replay is new trades at
  new times: new ids and new rows next to the recorded ones, never an overwrite. Two rebased
  replays agree only if they start at the same millisecond. A CSV replay is always rebased.

The limits: replaying a *part* of a stream can number an identical trade differently if its twin
sat in the memory just before the replayed part; two identical trades of one symbol that are
more than both windows apart may get the same id (a late re-send of the same trade is then,
correctly, collapsed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["trade_id"]

_SEP = "\x1f"


def trade_id(
    symbol: str,
    trade_ts_ms: int,
    price: float,
    volume: float,
    conditions: Sequence[str],
    ordinal: int,
) -> str:
    """The replay-safe id of a trade (40 hex chars).

    Prices and sizes go in as ``repr(float(x))``, so ``164`` and ``164.0`` give the same id.

    >>> a = trade_id("AAPL", 1680286538064, 164.06, 4, ("1", "8"), 0)
    >>> a == trade_id("AAPL", 1680286538064, 164.06, 4.0, ["1", "8"], 0)
    True
    >>> a == trade_id("AAPL", 1680286538064, 164.06, 4, ("1", "8"), 1)
    False
    >>> len(a)
    40
    """
    key = _SEP.join(
        (
            symbol,
            str(trade_ts_ms),
            repr(float(price)),
            repr(float(volume)),
            "\x1e".join(conditions),
            str(ordinal),
        )
    )
    return hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).hexdigest()
