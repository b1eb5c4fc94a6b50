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

**Price and volume bounds.** A price must be finite and within ``[MIN_PRICE, MAX_PRICE]``, a
volume 0 or finite and within ``[MIN_VOLUME, MAX_VOLUME]`` (``TRADE_MIN_PRICE``,
``TRADE_MAX_PRICE``, ``TRADE_MIN_VOLUME``, ``TRADE_MAX_VOLUME``). The defaults are far outside
any real market (from a 1e-9 memecoin to bitcoin in rupiah, and trades of 1e13 tokens), and
they keep the bars' arithmetic finite: a trade's notional is at most 1e30, so no sum of them
overflows, and at least 1e-24, so no product of a positive volume underflows to 0.

>>> MAX_FUTURE_SKEW_MS < BARS_WATERMARK_MS
True
>>> limits = TradeLimits()
>>> limits.price_ok(64_250.5), limits.price_ok(1e308), limits.price_ok(float("nan"))
(True, False, False)
>>> limits.volume_ok(0.0), limits.volume_ok(0.001), limits.volume_ok(1e-300)
(True, True, False)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.settings import SettingsError, number_setting

__all__ = [
    "BARS_WATERMARK_MS",
    "MAX_FUTURE_SKEW_MS",
    "MAX_PAST_SKEW_MS",
    "MAX_PRICE",
    "MAX_VOLUME",
    "MIN_PRICE",
    "MIN_VOLUME",
    "TradeLimits",
]

# A host clock synchronised by NTP is within milliseconds of the exchange's; 2 s leaves room for
# a drifting clock while keeping 8 s of the 10-s watermark for trades that arrive late.
MAX_FUTURE_SKEW_MS = 2_000
BARS_WATERMARK_MS = 10_000
# The collector's bound on old trades: replays and backfills of a day are normal, older ones not.
MAX_PAST_SKEW_MS = 86_400_000

MIN_PRICE = 1e-12
MAX_PRICE = 1e12
MIN_VOLUME = 1e-12  # the smallest volume other than 0
MAX_VOLUME = 1e18


@dataclass(frozen=True, kw_only=True)
class TradeLimits:
    """The price and volume a trade may have; anything else goes to the DLQ.

    :param min_price: smallest price (``TRADE_MIN_PRICE``, default 1e-12), > 0.
    :param max_price: largest price (``TRADE_MAX_PRICE``, default 1e12).
    :param min_volume: smallest volume other than 0 (``TRADE_MIN_VOLUME``, default 1e-12), > 0;
        a volume of 0 (a price update, no execution) is always allowed.
    :param max_volume: largest volume (``TRADE_MAX_VOLUME``, default 1e18).
    :raises SettingsError: when a bound is not finite, not > 0, or a minimum exceeds its maximum.
    """

    min_price: float = MIN_PRICE
    max_price: float = MAX_PRICE
    min_volume: float = MIN_VOLUME
    max_volume: float = MAX_VOLUME

    def __post_init__(self) -> None:
        for name, low, high in (
            ("PRICE", self.min_price, self.max_price),
            ("VOLUME", self.min_volume, self.max_volume),
        ):
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise SettingsError(
                    f"TRADE_MIN_{name}={low!r} and TRADE_MAX_{name}={high!r}: need finite "
                    "bounds with 0 < minimum <= maximum"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TradeLimits:
        """Read ``TRADE_MIN_PRICE``, ``TRADE_MAX_PRICE``, ``TRADE_MIN_VOLUME`` and
        ``TRADE_MAX_VOLUME``.

        :raises SettingsError: naming the variable and its value when one is unusable.
        """
        env = os.environ if env is None else env
        return cls(
            min_price=number_setting(env, "TRADE_MIN_PRICE", cls.min_price, minimum=0),
            max_price=number_setting(env, "TRADE_MAX_PRICE", cls.max_price, minimum=0),
            min_volume=number_setting(env, "TRADE_MIN_VOLUME", cls.min_volume, minimum=0),
            max_volume=number_setting(env, "TRADE_MAX_VOLUME", cls.max_volume, minimum=0),
        )

    def price_ok(self, price: float) -> bool:
        """Finite and within ``[min_price, max_price]`` (NaN compares false, so it fails)."""
        return self.min_price <= price <= self.max_price

    def volume_ok(self, volume: float) -> bool:
        """0, or finite and within ``[min_volume, max_volume]``."""
        return volume == 0 or self.min_volume <= volume <= self.max_volume

    def price_rule(self) -> str:
        """What a price must be, as DLQ reasons say it: ``is not a finite price in [lo, hi]``."""
        return f"is not a finite price in [{self.min_price:g}, {self.max_price:g}]"

    def volume_rule(self) -> str:
        return f"is not 0 or a finite volume in [{self.min_volume:g}, {self.max_volume:g}]"
