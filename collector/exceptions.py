"""Errors of the collector. Every message is one line naming the setting, field or peer involved;
none ever contains the Finnhub token.

::

    CollectorError                  root: catch this to handle any collector failure
    ├── ConfigError                 a setting (environment variable or option) has an unusable value
    ├── FeedConnectionError         the websocket could not be opened, or broke, or went silent
    │   └── AuthenticationError     the server refused the token (HTTP 401/403): no retry helps
    ├── SinkError                   Kafka: setup failed, or records were not delivered
    │   ├── SinkSetupError          the producer could not start or reach the topics
    │   └── DeliveryError           records that were handed to the producer were not acknowledged
    ├── GapStoreError               the collector_gaps table could not be reached at startup
    └── FeedError                   the offline feed cannot start or read its source
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CollectorError",
    "ConfigError",
    "DeliveryError",
    "FeedConnectionError",
    "FeedError",
    "GapStoreError",
    "SinkError",
    "SinkSetupError",
]


class CollectorError(Exception):
    """Root of every error the collector raises on purpose."""


class ConfigError(CollectorError, ValueError):
    """A setting has a value we cannot use; the message names the variable and the value."""


class FeedConnectionError(CollectorError):
    """The websocket could not be opened, broke, or went silent. The connection retries these."""


class AuthenticationError(FeedConnectionError):
    """The server rejected the token. Retrying with the same token cannot succeed."""


class SinkError(CollectorError):
    """Root of Kafka sink failures."""


class SinkSetupError(SinkError):
    """The producer could not be created, or the brokers or topics could not be reached."""


class DeliveryError(SinkError):
    """Records handed to the producer were not acknowledged by Kafka (failed or timed out)."""


class GapStoreError(CollectorError):
    """The Cassandra table of recorded gaps could not be reached at startup."""


class FeedError(CollectorError):
    """The offline feed cannot start, or cannot read the source it was given."""
