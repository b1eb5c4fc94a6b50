"""Frame -> trades/dead letters -> Kafka: the work done for every websocket frame."""

from __future__ import annotations

import logging
import time
from collections import Counter

from collector.delivery import TradeSink
from collector.encoding import TradeEncoder
from collector.finnhub import FrameParser
from collector.heartbeat import Heartbeat
from collector.metrics import CollectorMetrics
from collector.models import FrameResult
from collector.recorder import FrameRecorder

__all__ = ["FrameHandler"]

logger = logging.getLogger(__name__)

# Dead letters are logged one by one up to this many per progress interval, then summarised.
_LETTERS_LOGGED_PER_INTERVAL = 20


class FrameHandler:
    """Parses a frame, produces its trades and dead letters, counts them, reports progress.

    :param parser: validation rules for this subscription.
    :param sink: the Kafka sink (set up).
    :param metrics: counters shared with the connection.
    :param recorder: when given, every JSON frame is also written to a file.
    :param max_trades: :attr:`done` turns true once this many trades were produced (a frame is
        never split: the last frame may overshoot).
    :param progress_interval_s: seconds between progress lines (0 = none).
    :param heartbeat: written from :meth:`tick` with the newest frame's arrival time, so the
        next run can record the gap if this one is killed.
    :param limit_bytes: the frame size limit the connection enforces (named in the dead letter
        of a frame it refused).
    """

    def __init__(
        self,
        parser: FrameParser,
        sink: TradeSink,
        metrics: CollectorMetrics,
        *,
        encoder: TradeEncoder | None = None,
        recorder: FrameRecorder | None = None,
        max_trades: int | None = None,
        progress_interval_s: float = 10.0,
        limit_bytes: int = 0,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.heartbeat = heartbeat
        self.newest_frame_ms = int(time.time() * 1000)
        self.parser = parser
        self.sink = sink
        self.metrics = metrics
        self.encoder = encoder or TradeEncoder()
        self.recorder = recorder
        self.max_trades = max_trades
        self.progress_interval_s = progress_interval_s
        self.trades = 0
        self.dead_letters = 0
        self.frames = 0
        self._started = time.monotonic()
        self._last_report = self._started
        self._trades_at_report = 0
        self._letters_logged = 0
        self._reasons: Counter[str] = Counter()

    @property
    def done(self) -> bool:
        return self.max_trades is not None and self.trades >= self.max_trades

    def __call__(self, raw: bytes, received_ms: int) -> None:
        self.newest_frame_ms = received_ms
        if self.recorder is not None:
            self.recorder.write(raw)
        self._handle(self.parser.parse(raw, received_ms=received_ms))

    def reject_oversized(self, size: int, received_ms: int) -> None:
        """A frame the connection refused unread (above ``limit_bytes``): a dead letter."""
        self._handle(self.parser.oversized(size, self.limit_bytes, received_ms=received_ms))

    def _handle(self, result: FrameResult) -> None:
        self.frames += 1
        self.metrics.observe_frame(result)
        if result.trades:
            self.sink.send_trades(result.trades, self.encoder.encode_many(result.trades))
            self.trades += len(result.trades)
        if result.dead_letters:
            self.sink.send_dead_letters(result.dead_letters)
            self.dead_letters += len(result.dead_letters)
            for letter in result.dead_letters:
                self._reasons[letter.reason] += 1
                if self._letters_logged < _LETTERS_LOGGED_PER_INTERVAL:
                    self._letters_logged += 1
                    logger.warning(
                        "dlq %s: %s: %s", self.sink.dlq_topic, letter.reason, letter.detail
                    )
        if result.kind == "error":
            logger.error("server error frame: %s (connection kept open)", result.message)
        elif result.kind == "unknown":
            logger.warning("frame of unknown type %s: sent to the DLQ", result.message)
        self.sink.raise_if_failed()
        self.tick()

    def tick(self) -> None:
        """Beat the heartbeat; log a progress line when the interval has passed (cheap to call
        often)."""
        if self.heartbeat is not None:
            self.heartbeat.beat(self.newest_frame_ms)
        if not self.progress_interval_s:
            return
        now = time.monotonic()
        if now - self._last_report < self.progress_interval_s:
            return
        rate = (self.trades - self._trades_at_report) / (now - self._last_report)
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self._reasons.items())) or "none"
        logger.info(
            "progress: %d trades (%.0f/s over the last %.0f s), %d frames, "
            "%d dead letters (%s), %d reconnects",
            self.trades,
            rate,
            now - self._last_report,
            self.frames,
            self.dead_letters,
            reasons,
            int(self.metrics.total("collector_reconnects_total")),
        )
        self._last_report = now
        self._trades_at_report = self.trades
        self._letters_logged = 0

    def summary(self) -> str:
        elapsed = time.monotonic() - self._started
        return (
            f"{self.trades} trades in {elapsed:.1f} s ({self.trades / max(elapsed, 1e-9):.0f}/s), "
            f"{self.frames} frames, {self.dead_letters} dead letters"
        )
