"""Finnhub websocket -> validated Avro trades in Kafka; ``collector.feed`` is an offline
Finnhub-protocol server for tests, demos and benchmarks."""

from __future__ import annotations

from collector.config import CollectorConfig, SecretStr
from collector.encoding import TradeEncoder
from collector.exceptions import (
    AuthenticationError,
    CollectorError,
    ConfigError,
    DeliveryError,
    FeedConnectionError,
    FeedError,
    GapStoreError,
    SinkError,
    SinkSetupError,
)
from collector.finnhub import FrameParser
from collector.models import DeadLetter, FrameResult, Gap, Trade

__all__ = [
    "AuthenticationError",
    "CollectorConfig",
    "CollectorError",
    "ConfigError",
    "DeadLetter",
    "DeliveryError",
    "FeedConnectionError",
    "FeedError",
    "FrameParser",
    "FrameResult",
    "Gap",
    "GapStoreError",
    "SecretStr",
    "SinkError",
    "SinkSetupError",
    "Trade",
    "TradeEncoder",
]
