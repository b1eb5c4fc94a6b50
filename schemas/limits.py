"""Limits a trade must respect to reach the bars, shared by the collector and the stream processor.

Both services send a trade outside them to the DLQ with a reason, and both take their defaults
from here, so a trade the collector lets through is not rejected later by the same rule.

**Future skew and the watermark.** The bars' watermark is the largest trade time seen (over every
symbol) minus ``BARS_WATERMARK``, so one trade stamped far in the future would move it for every
symbol and drop the on-time trades that follow. A trade may therefore be at most
:data:`MAX_FUTURE_SKEW_MS` after its arrival: the collector's receive time, and in the stream
processor the record's Kafka timestamp, which the collector's producer sets when it sends, so
later. The skew must stay below the watermark delay: then no single trade moves the watermark
past ``arrival - (watermark - skew)`` of the records around it, and a trade is never dropped
because of another one unless it reaches Kafka more than ``watermark - skew`` (8 s by default)
after its own trade time.

>>> MAX_FUTURE_SKEW_MS < BARS_WATERMARK_MS
True
"""

from __future__ import annotations

__all__ = ["BARS_WATERMARK_MS", "MAX_FUTURE_SKEW_MS"]

# A host clock synchronised by NTP is within milliseconds of the exchange's; 2 s leaves room for
# a drifting clock while keeping 8 s of the 10-s watermark for trades that arrive late.
MAX_FUTURE_SKEW_MS = 2_000
BARS_WATERMARK_MS = 10_000
