"""Errors of the stream processor.

::

    StreamProcessorError            root; every error this package raises on purpose
    ├── ConfigError                 a setting has a value we cannot use (also a ValueError)
    ├── RollupError                 parts that cannot form one coarser bar (also a ValueError)
    └── SinkError                   a micro-batch could not be written after every retry
        ├── CassandraSinkError      the Cassandra upsert failed
        └── DeadLetterSinkError     the DLQ write to Kafka failed
"""

from __future__ import annotations

__all__ = [
    "CassandraSinkError",
    "ConfigError",
    "DeadLetterSinkError",
    "RollupError",
    "SinkError",
    "StreamProcessorError",
]


class StreamProcessorError(Exception):
    """Root of the stream processor's errors."""


class ConfigError(StreamProcessorError, ValueError):
    """A setting is unusable; the message names the variable and the value, on one line."""


class RollupError(StreamProcessorError, ValueError):
    """Parts that cannot form one bar (no parts, or parts of another symbol or window)."""


class SinkError(StreamProcessorError):
    """A micro-batch could not be written; the query stops and restarts from its checkpoint."""


class CassandraSinkError(SinkError):
    """Writing a micro-batch to a Cassandra table failed after every retry."""


class DeadLetterSinkError(SinkError):
    """Writing dead letters to the DLQ topic failed after every retry."""
