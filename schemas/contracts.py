"""Names and files of the data contracts: one place for topic, table and schema names."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

SCHEMAS_DIR = Path(__file__).resolve().parent
AVRO_DIR = SCHEMAS_DIR / "avro"
CQL_DIR = SCHEMAS_DIR / "cql"
TOPICS_FILE = SCHEMAS_DIR / "topics" / "topics.json"

TABLE_TRADES = "trades"
TABLE_AGG_5S = "trades_agg_5s"
TABLE_AGG_1M = "trades_agg_1m"
TABLE_AGG_1H = "trades_agg_1h"
TABLE_COLLECTOR_GAPS = "collector_gaps"


def _package_text(name: str) -> str:
    """A data file of this package, read through its loader: it works from a folder and from
    the zip spark-submit ships to the executors (``--py-files``), where ``open`` cannot."""
    return files(__package__ or "schemas").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """A Kafka topic as the contract describes it; ``name`` already reflects the environment."""

    role: str
    name: str
    partitions: int
    retention_ms: int


@cache
def load_avro_schema(name: str) -> dict[str, Any]:
    """Return the parsed JSON of ``schemas/avro/<name>.avsc``.

    >>> load_avro_schema("trade")["name"]
    'Trade'
    """
    schema: dict[str, Any] = json.loads(_package_text(f"avro/{name}.avsc"))
    return schema


def topic_specs(env: Mapping[str, str] | None = None) -> dict[str, TopicSpec]:
    """Topics by role (``trades``, ``dlq``), names overridable by their environment variable.

    >>> topic_specs({"TRADES_TOPIC": "t1"})["trades"].name
    't1'
    >>> topic_specs({"TRADES_TOPIC": "t1"})["dlq"].name
    't1.dlq'
    """
    env = os.environ if env is None else env
    raw = json.loads(_package_text("topics/topics.json"))
    specs: dict[str, TopicSpec] = {}
    for entry in raw:
        name = env.get(entry["env"]) or entry["default_name"]
        specs[entry["role"]] = TopicSpec(
            role=entry["role"],
            name=name,
            partitions=int(entry["partitions"]),
            retention_ms=int(entry["retention_ms"]),
        )
    # A DLQ follows a renamed trades topic unless it is named explicitly.
    if not env.get("DLQ_TOPIC") and env.get("TRADES_TOPIC"):
        dlq = specs["dlq"]
        specs["dlq"] = TopicSpec(
            role=dlq.role,
            name=f"{specs['trades'].name}.dlq",
            partitions=dlq.partitions,
            retention_ms=dlq.retention_ms,
        )
    return specs
