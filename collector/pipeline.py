"""Frame -> trades/dead letters -> Kafka: the work done for every websocket frame.

While Kafka is away the websocket is still read: frames wait in the sink's bounded
:class:`~collector.delivery.DeliveryBacklog` until Kafka acknowledges them. A frame read while the
backlog is full is not captured; each run of such frames becomes one ``kafka_buffer_full`` gap
row saying when they arrived and how many trades of which symbols they held.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from collector.delivery import TradeSink, estimated_size
from collector.encoding import TradeEncoder
from collector.finnhub import FrameParser
from collector.gaps import GapSink
from collector.heartbeat import Heartbeat
from collector.metrics import CollectorMetrics
from collector.models import FrameResult, Gap
from collector.recorder import FrameRecorder

__all__ = ["FrameHandler"]

logger = logging.getLogger(__name__)

# Dead letters are logged one by one up to this many per progress interval, then summarised.
_LETTERS_LOGGED_PER_INTERVAL = 20


@dataclass
class _Dropped:
    """A run of frames read while the Kafka backlog was full."""

    first_ms: int
    last_ms: int = 0
    frames: int = 0
    trades: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0

    def add(self, result: FrameResult, received_ms: int) -> None:
        self.last_ms = received_ms
        self.frames += 1
        self.trades.update(t.symbol for t in result.trades)
        self.dead_letters += len(result.dead_letters)

    def describe(self) -> str:
        per_symbol = ", ".join(f"{s} {n}" for s, n in sorted(self.trades.items()))
        return (
            f"{self.trades.total()} trades ({per_symbol or 'none'}) and {self.dead_letters} "
            f"dead letters in {self.frames} frames read while the Kafka buffer was full, "
            "not captured"
        )


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
    :param gaps: where a run of frames dropped because the Kafka backlog was full is recorded
        (None: logged only).
    :param collector_id: names this run in those gap rows.
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
        gaps: GapSink | None = None,
        collector_id: str = "",
    ) -> None:
        self.gaps = gaps
        self.collector_id = collector_id
        self._dropped: _Dropped | None = None
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
        self._handle(self.parser.parse(raw, received_ms=received_ms), received_ms)

    def reject_oversized(self, size: int, received_ms: int) -> None:
        """A frame the connection refused unread (above ``limit_bytes``): a dead letter."""
        self._handle(
            self.parser.oversized(size, self.limit_bytes, received_ms=received_ms), received_ms
        )

    def _handle(self, result: FrameResult, received_ms: int) -> None:
        self.frames += 1
        self.metrics.observe_frame(result)
        if result.trades or result.dead_letters:
            self._produce(result, received_ms)
        if result.kind == "error":
            logger.error("server error frame: %s (connection kept open)", result.message)
        elif result.kind == "unknown":
            logger.warning("frame of unknown type %s: sent to the DLQ", result.message)
        self.sink.raise_if_failed()
        self.tick()

    def _produce(self, result: FrameResult, received_ms: int) -> None:
        values = self.encoder.encode_many(result.trades) if result.trades else []
        size = sum(map(len, values)) + estimated_size(result.dead_letters)
        records = len(values) + len(result.dead_letters)
        pending = self.sink.backlog.admit(records, size, received_ms=received_ms)
        if pending is None:
            self._drop(result, received_ms)
            return
        if self._dropped is not None:
            self.finish()
        if result.trades:
            self.sink.send_trades(result.trades, values, pending)
            self.trades += len(result.trades)
        if result.dead_letters:
            self.sink.send_dead_letters(result.dead_letters, pending)
            self.dead_letters += len(result.dead_letters)
            for letter in result.dead_letters:
                self._reasons[letter.reason] += 1
                if self._letters_logged < _LETTERS_LOGGED_PER_INTERVAL:
                    self._letters_logged += 1
                    logger.warning(
                        "dlq %s: %s: %s", self.sink.dlq_topic, letter.reason, letter.detail
                    )

    def _drop(self, result: FrameResult, received_ms: int) -> None:
        if self._dropped is None:
            self._dropped = _Dropped(first_ms=received_ms)
            backlog = self.sink.backlog
            logger.error(
                "kafka %s: buffer full (%d records, %d bytes unacknowledged for %.0f s): frames "
                "read from now on are not captured until Kafka has taken half of it; they will "
                "be recorded as a kafka_buffer_full gap",
                self.sink.bootstrap_servers,
                backlog.records,
                backlog.bytes,
                backlog.outage_s(),
            )
        self._dropped.add(result, received_ms)
        if result.trades:
            self.metrics.dropped.labels("trade").inc(len(result.trades))
        if result.dead_letters:
            self.metrics.dropped.labels("dead_letter").inc(len(result.dead_letters))

    def finish(self) -> None:
        """Record the run of frames dropped so far, if any (called again when frames are
        admitted, and at stop)."""
        dropped, self._dropped = self._dropped, None
        if dropped is None:
            return
        symbols = tuple(sorted(dropped.trades)) or tuple(sorted(self.parser.symbols))
        gap = Gap(
            start_ms=dropped.first_ms,
            end_ms=dropped.last_ms,
            symbols=symbols,
            reason="kafka_buffer_full",
            detail=dropped.describe(),
            source=self.parser.source,
            collector_id=self.collector_id,
        )
        if self.gaps is None:
            logger.error("kafka buffer full: %s (no gap store)", gap.detail)
        else:
            self.gaps.record(gap)

    def idle(self) -> None:
        """No frame for a moment: let the sink serve Kafka's acknowledgements, then :meth:`tick`."""
        self.sink.poll()
        self.tick()

    def tick(self) -> None:
        """Beat the heartbeat; log a progress line when the interval has passed (cheap to call
        often)."""
        backlog = self.sink.backlog
        backlog.check(logger, self.sink.bootstrap_servers)
        if self.heartbeat is not None:
            self.heartbeat.beat(
                self.newest_frame_ms, unacknowledged_ms=backlog.oldest_received_ms()
            )
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
