"""Settings of the stream processor: one frozen object, read from the environment only by the
entry point and passed down.

Every variable has a loopback or local default; see :meth:`StreamSettings.from_env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from schemas.contracts import topic_specs
from schemas.settings import CassandraSettings, KafkaSettings, SettingsError, state_dir
from stream_processor.exceptions import ConfigError

__all__ = [
    "QUERY_NAMES",
    "QueryName",
    "StreamSettings",
    "parse_duration_ms",
    "parse_queries",
]

QueryName = Literal["trades_raw", "bars_5s"]
QUERY_NAMES: tuple[QueryName, ...] = get_args(QueryName)

_ROLLED_UP = {"bars_1m", "bars_1h"}
_UNITS_MS = {
    "ms": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": 1000,
    "sec": 1000,
    "second": 1000,
    "seconds": 1000,
    "m": 60_000,
    "min": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")


def parse_duration_ms(name: str, raw: str) -> int:
    """Parse ``"10"`` (seconds), ``"10s"``, ``"10 seconds"``, ``"500 ms"``, ``"1 minute"``.

    :param name: the variable the value came from, for the error message.
    :param raw: the text to parse.
    :raises ConfigError: on anything else, naming the variable and the value.

    >>> parse_duration_ms("BARS_WATERMARK", "10 seconds")
    10000
    >>> parse_duration_ms("RAW_TRIGGER", "500ms")
    500
    >>> parse_duration_ms("BARS_WATERMARK", "ten")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_processor.exceptions.ConfigError: BARS_WATERMARK='ten': expected a duration like ...
    """
    match = _DURATION_RE.match(raw.lower())
    unit = match.group(2) if match else ""
    if not match or (unit and unit not in _UNITS_MS):
        raise ConfigError(
            f"{name}={raw!r}: expected a duration like '10 seconds', '500 ms' or '1 minute'"
        )
    return int(match.group(1)) * _UNITS_MS[unit or "s"]


def parse_queries(name: str, raw: str) -> tuple[QueryName, ...]:
    """Parse a comma-separated query selection, keeping the canonical order.

    >>> parse_queries("STREAM_QUERIES", "bars_5s, trades_raw")
    ('trades_raw', 'bars_5s')
    >>> parse_queries("STREAM_QUERIES", "all")
    ('trades_raw', 'bars_5s')
    """
    wanted = {part.strip() for part in raw.split(",") if part.strip()}
    if wanted == {"all"}:
        return QUERY_NAMES
    retired = sorted(wanted & _ROLLED_UP)
    if retired:
        raise ConfigError(
            f"{name}={raw!r}: {', '.join(retired)}: no longer a separate query; the 1-minute "
            "and 1-hour bars are rolled up from the 5-second bars by bars_5s"
        )
    unknown = sorted(wanted - set(QUERY_NAMES))
    if unknown or not wanted:
        raise ConfigError(f"{name}={raw!r}: choose from {', '.join(QUERY_NAMES)} or 'all'")
    return tuple(q for q in QUERY_NAMES if q in wanted)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    return value


@dataclass(frozen=True, kw_only=True)
class StreamSettings:
    """Everything the streaming job needs.

    :param kafka: broker addresses.
    :param cassandra: Cassandra contact points, keyspace and credentials (password hidden in repr).
    :param trades_topic: the Avro trades topic to read.
    :param dlq_topic: where records that fail to decode or validate go, as JSON with a reason.
    :param checkpoint_dir: any Hadoop path; each query checkpoints under ``<dir>/<query name>``.
    :param queries: which queries to run.
    :param starting_offsets: Kafka ``startingOffsets`` for a query without a checkpoint.
    :param max_offsets_per_trigger: cap on records per micro-batch (0, the default: no cap).
        Kafka partitions are read in proportion to their offsets, not their event time, so
        with a cap a backfill can put one partition more than the watermark ahead of another
        and the bars drop the lagging partition's trades; leave it at 0 unless memory forces it.
    :param raw_trigger_ms: trigger interval of the raw query, ms.
    :param bars_trigger_ms: trigger interval of the bars query (5-s bars and their 1-min and
        1-h rollups), ms.
    :param watermark_ms: event-time watermark delay of the 5-s bars, ms.
    :param bars_dedupe: count a trade published to Kafka more than once only once in the bars
        (costs CPU and state; its checkpoint is ``bars_5s_dedup``, since the state differs).
    :param max_future_skew_ms: a trade whose time is this far after its Kafka timestamp is
        rejected to the DLQ, because it would push the watermark ahead and drop good trades.
    :param sink_retry_ms: how long a failing Cassandra/DLQ write is retried before the batch fails.
    :param stall_timeout_ms: a micro-batch running longer than this counts as wedged (for
        example inside a Cassandra driver call that never returns); the job then exits with
        status 3 for its service manager to restart it from the checkpoints.
    :param metrics_host: bind address of the Prometheus endpoint.
    :param metrics_port: port of the Prometheus endpoint; 0 turns it off.
    :param fail_on_data_loss: Kafka ``failOnDataLoss``; True stops the query loudly when offsets
        it still needed were deleted by retention.

    >>> s = StreamSettings.from_env({"STATE_DIR": "/tmp/x", "BARS_WATERMARK": "20s"})
    >>> (s.watermark_ms, s.checkpoint_dir, s.trades_topic, s.dlq_topic)
    (20000, '/tmp/x/checkpoints', 'trades', 'trades.dlq')
    """

    kafka: KafkaSettings
    cassandra: CassandraSettings
    trades_topic: str
    dlq_topic: str
    checkpoint_dir: str
    queries: tuple[QueryName, ...] = QUERY_NAMES
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 0
    raw_trigger_ms: int = 500
    bars_trigger_ms: int = 5000
    watermark_ms: int = 10_000
    bars_dedupe: bool = False
    max_future_skew_ms: int = 60_000
    sink_retry_ms: int = 300_000
    stall_timeout_ms: int = 600_000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9109
    fail_on_data_loss: bool = True

    def __post_init__(self) -> None:
        if self.starting_offsets not in ("earliest", "latest") and not (
            self.starting_offsets.startswith("{")
        ):
            raise ConfigError(
                f"STARTING_OFFSETS={self.starting_offsets!r}: use earliest, latest or a JSON "
                "offsets object"
            )
        if self.raw_trigger_ms > 1000:
            raise ConfigError(
                f"RAW_TRIGGER={self.raw_trigger_ms} ms: the raw query must trigger at least "
                "every second"
            )
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"METRICS_PORT={self.metrics_port!r} is outside 0..65535")

    def checkpoint(self, query: QueryName) -> str:
        """The checkpoint location of one query. The bars with and without de-duplication keep
        different state, so each has its own folder and switching does not break a restart."""
        folder = f"{query}_dedup" if query == "bars_5s" and self.bars_dedupe else query
        return f"{self.checkpoint_dir.rstrip('/')}/{folder}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamSettings:
        """Read the settings; see the README table for every variable.

        :raises ConfigError: naming the variable and its value when one is unusable.
        """
        env = os.environ if env is None else env
        try:
            kafka = KafkaSettings.from_env(env)
            cassandra = CassandraSettings.from_env(env)
        except SettingsError as exc:
            raise ConfigError(str(exc)) from exc
        topics = topic_specs(env)
        fail_raw = (env.get("FAIL_ON_DATA_LOSS") or "true").lower()
        if fail_raw not in ("true", "false"):
            raise ConfigError(f"FAIL_ON_DATA_LOSS={fail_raw!r}: use true or false")
        dedupe_raw = (env.get("BARS_DEDUPE") or "off").lower()
        if dedupe_raw not in ("on", "off"):
            raise ConfigError(f"BARS_DEDUPE={dedupe_raw!r}: use on or off")
        return cls(
            kafka=kafka,
            cassandra=cassandra,
            trades_topic=topics["trades"].name,
            dlq_topic=topics["dlq"].name,
            checkpoint_dir=env.get("CHECKPOINT_DIR") or str(state_dir(env) / "checkpoints"),
            queries=parse_queries("STREAM_QUERIES", env.get("STREAM_QUERIES") or "all"),
            starting_offsets=env.get("STARTING_OFFSETS") or "earliest",
            max_offsets_per_trigger=_int(env, "MAX_OFFSETS_PER_TRIGGER", 0, 0),
            raw_trigger_ms=parse_duration_ms("RAW_TRIGGER", env.get("RAW_TRIGGER") or "500ms"),
            bars_trigger_ms=parse_duration_ms("BARS_TRIGGER", env.get("BARS_TRIGGER") or "5s"),
            watermark_ms=parse_duration_ms("BARS_WATERMARK", env.get("BARS_WATERMARK") or "10s"),
            bars_dedupe=dedupe_raw == "on",
            max_future_skew_ms=parse_duration_ms(
                "TRADE_MAX_FUTURE_SKEW", env.get("TRADE_MAX_FUTURE_SKEW") or "60s"
            ),
            sink_retry_ms=parse_duration_ms(
                "SINK_RETRY_TIMEOUT", env.get("SINK_RETRY_TIMEOUT") or "300s"
            ),
            stall_timeout_ms=parse_duration_ms(
                "BATCH_STALL_TIMEOUT", env.get("BATCH_STALL_TIMEOUT") or "600s"
            ),
            metrics_host=env.get("METRICS_HOST") or "127.0.0.1",
            metrics_port=_int(env, "METRICS_PORT", 9109, 0),
            fail_on_data_loss=fail_raw == "true",
        )
