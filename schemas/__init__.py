"""Data contracts shared by every service: Avro schemas, Kafka topics, CQL tables, settings.

Services import only from here to talk about data; they never import each other.
"""

from __future__ import annotations

from schemas.contracts import (
    AVRO_DIR,
    CQL_DIR,
    TABLE_AGG_1H,
    TABLE_AGG_1M,
    TABLE_AGG_5S,
    TABLE_COLLECTOR_GAPS,
    TABLE_TRADES,
    TopicSpec,
    load_avro_schema,
    topic_specs,
)
from schemas.settings import CassandraSettings, KafkaSettings, load_credentials_file

__all__ = [
    "AVRO_DIR",
    "CQL_DIR",
    "TABLE_AGG_1H",
    "TABLE_AGG_1M",
    "TABLE_AGG_5S",
    "TABLE_COLLECTOR_GAPS",
    "TABLE_TRADES",
    "CassandraSettings",
    "KafkaSettings",
    "TopicSpec",
    "load_avro_schema",
    "load_credentials_file",
    "topic_specs",
]
