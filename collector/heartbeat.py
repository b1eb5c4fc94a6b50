"""Gaps across process restarts: a heartbeat file the next run of the same collector reads.

A collector killed with ``kill -9`` (or crashed, or stopped and started again) records no gap
itself. So every run rewrites a small JSON file about once a second, and the next run with the
same identity (websocket URL, symbols, topic, keyspace) reads it at start: the time from the
previous run's last safe frame to the new run's first subscribe becomes one ``restart`` gap row.

"Last safe frame" is the newest frame received as of the *previous* beat, one interval back: a
trade read just before a ``kill -9`` may still have sat in the producer's buffer, and the
producer acknowledges within milliseconds when Kafka is up, so everything older than one beat
is in Kafka, and the gap starts early enough to cover what was not. While Kafka is away it is
earlier still: just before the oldest frame Kafka has not acknowledged. A clean stop writes the
final frame time after Kafka acknowledged everything.

The file is replaced atomically (write, then rename), so a kill mid-write leaves the old beat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Heartbeat", "PreviousRun", "heartbeat_path"]

logger = logging.getLogger(__name__)


def heartbeat_path(directory: Path, *parts: str) -> Path:
    """The heartbeat file of the collector identified by ``parts`` (URL, symbols, topic...).

    >>> heartbeat_path(Path("/s"), "ws://h", "AAPL").name
    'collector-f987eab58f12.heartbeat'
    """
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8"), usedforsecurity=False)
    return directory / f"collector-{digest.hexdigest()[:12]}.heartbeat"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class PreviousRun:
    """What the last run of this collector left: where its gap starts, and how it ended."""

    collector_id: str
    safe_ms: int
    clean: bool

    def describe(self) -> str:
        how = "stopped cleanly" if self.clean else "did not stop cleanly (killed or crashed)"
        return (
            f"previous run {self.collector_id} {how}; its trades are complete up to "
            f"{_iso(self.safe_ms)}"
        )


class Heartbeat:
    """Writes this run's heartbeat; reads the previous run's.

    :param path: the file (its directory is created).
    :param collector_id: this run's ``host:pid``.
    :param interval_s: seconds between writes (default 1).
    """

    def __init__(self, path: Path, collector_id: str, *, interval_s: float = 1.0) -> None:
        self.path = path
        self.collector_id = collector_id
        self.interval_s = interval_s
        self._next = 0.0
        self._newest_at_write: int | None = None

    def previous(self) -> PreviousRun | None:
        """The last run's beat, or None when there is none (or it cannot be read)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return PreviousRun(str(doc["collector_id"]), int(doc["safe_ms"]), bool(doc["clean"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("heartbeat %s unreadable (%s): no restart gap recorded", self.path, exc)
            return None

    def beat(self, newest_frame_ms: int, *, unacknowledged_ms: int | None = None) -> None:
        """Note the newest frame; write the file when ``interval_s`` has passed (cheap to call
        often).

        :param unacknowledged_ms: arrival time of the oldest frame Kafka has not acknowledged
            yet (during an outage, long ago): the safe point stays before it.
        """
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        # What was newest at the previous write is acknowledged by now; before any write, one
        # interval back from now is.
        previous = self._newest_at_write
        safe = previous if previous is not None else newest_frame_ms - int(self.interval_s * 1000)
        self._newest_at_write = newest_frame_ms
        if unacknowledged_ms is not None:
            safe = min(safe, unacknowledged_ms - 1)
        self._write(safe, clean=False)

    def stopped_cleanly(self, newest_frame_ms: int) -> None:
        """Everything up to ``newest_frame_ms`` is acknowledged: say so for the next run."""
        self._write(newest_frame_ms, clean=True)

    def _write(self, safe_ms: int, *, clean: bool) -> None:
        doc = {"collector_id": self.collector_id, "safe_ms": safe_ms, "clean": clean}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a missed beat only makes the next restart gap start earlier
            logger.warning("heartbeat %s: cannot write (%s)", self.path, exc)
