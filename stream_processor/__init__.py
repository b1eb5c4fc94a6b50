"""Stream processor: Kafka trades (Avro) -> Cassandra raw trades and event-time OHLCV/VWAP bars.

Pure transforms live in :mod:`stream_processor.transforms`, sinks in
:mod:`stream_processor.sinks`, query wiring in :mod:`stream_processor.queries`, the job in
:mod:`stream_processor.jobs.pipeline`.
"""

from __future__ import annotations

from stream_processor.config import QUERY_NAMES, StreamSettings
from stream_processor.exceptions import (
    CassandraSinkError,
    ConfigError,
    DeadLetterSinkError,
    SinkError,
    StreamProcessorError,
)

__all__ = [
    "QUERY_NAMES",
    "CassandraSinkError",
    "ConfigError",
    "DeadLetterSinkError",
    "SinkError",
    "StreamProcessorError",
    "StreamSettings",
]
