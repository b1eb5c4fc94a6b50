"""Settings of the stream processor: one frozen object, read from the environment only by the
entry point and passed down.

Every variable has a loopback or local default; see :meth:`StreamSettings.from_env`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from schemas.contracts import topic_specs
from schemas.limits import BARS_WATERMARK_MS, MAX_FUTURE_SKEW_MS, TradeLimits
from schemas.settings import (
    CassandraSettings,
    KafkaSettings,
    duration_ms_setting,
    env_value,
    flag_setting,
    int_setting,
    read_settings,
    state_dir,
)
from stream_processor.exceptions import ConfigError

__all__ = [
    "QUERY_NAMES",
    "QueryName",
    "StreamSettings",
    "parse_queries",
]

QueryName = Literal["trades_raw", "bars_5s"]
QUERY_NAMES: tuple[QueryName, ...] = get_args(QueryName)

_ROLLED_UP = {"bars_1m", "bars_1h"}


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
    :param watermark_ms: event-time watermark delay of the 5-s bars, ms (default 10 s).
    :param bars_dedupe: count a trade published to Kafka more than once only once in the bars
        (default; its checkpoint is ``bars_5s_dedup``, since the state differs from the
        counting-every-record bars of ``BARS_DEDUPE=false``).
    :param max_future_skew_ms: a trade whose time is more than this after its Kafka timestamp
        is rejected to the DLQ (default 2 s). It must be below ``watermark_ms``, so that no
        single trade moves the watermark past the records arriving with it (``schemas.limits``).
    :param limits: the price and volume bounds of a trade (``TRADE_MIN_PRICE`` and the like);
        a trade outside them is rejected to the DLQ.
    :param sink_retry_ms: how long a failing Cassandra/DLQ write is retried before the batch fails.
    :param stall_timeout_ms: a micro-batch running longer than this counts as wedged (for
        example inside a Cassandra driver call that never returns); the job then exits with
        status 3 for its service manager to restart it from the checkpoints.
    :param first_batch_stall_timeout_ms: the same for each query's first micro-batch after the
        job starts, which starts the executors and catches up (default, 0: ``stall_timeout_ms``;
        a value below it counts as it).
    :param max_restarts: failures of one query within ten minutes before the job gives up
        (exit status 1); each failure restarts the query from its checkpoint.
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
    watermark_ms: int = BARS_WATERMARK_MS
    bars_dedupe: bool = True
    max_future_skew_ms: int = MAX_FUTURE_SKEW_MS
    limits: TradeLimits = field(default_factory=TradeLimits)
    sink_retry_ms: int = 300_000
    stall_timeout_ms: int = 600_000
    first_batch_stall_timeout_ms: int = 0
    max_restarts: int = 10
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
        if self.max_future_skew_ms >= self.watermark_ms:
            raise ConfigError(
                f"TRADE_MAX_FUTURE_SKEW={self.max_future_skew_ms} ms must be below "
                f"BARS_WATERMARK={self.watermark_ms} ms: one trade that far ahead would move the "
                "watermark past the trades arriving with it and drop them from the bars"
            )
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"STREAM_METRICS_PORT={self.metrics_port!r} is outside 0..65535")

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
        return read_settings(cls._from_env, env, ConfigError)

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> StreamSettings:
        def duration_ms(name: str, default: int) -> int:
            return duration_ms_setting(env, name, default)

        topics = topic_specs(env)
        return cls(
            kafka=KafkaSettings.from_env(env),
            cassandra=CassandraSettings.from_env(env),
            trades_topic=topics["trades"].name,
            dlq_topic=topics["dlq"].name,
            checkpoint_dir=env_value(env, "CHECKPOINT_DIR") or str(state_dir(env) / "checkpoints"),
            queries=parse_queries("STREAM_QUERIES", env_value(env, "STREAM_QUERIES") or "all"),
            starting_offsets=env_value(env, "STARTING_OFFSETS") or cls.starting_offsets,
            max_offsets_per_trigger=int_setting(
                env, "MAX_OFFSETS_PER_TRIGGER", cls.max_offsets_per_trigger, minimum=0
            ),
            raw_trigger_ms=duration_ms("RAW_TRIGGER", cls.raw_trigger_ms),
            bars_trigger_ms=duration_ms("BARS_TRIGGER", cls.bars_trigger_ms),
            watermark_ms=duration_ms("BARS_WATERMARK", cls.watermark_ms),
            bars_dedupe=flag_setting(env, "BARS_DEDUPE", cls.bars_dedupe),
            max_future_skew_ms=duration_ms("TRADE_MAX_FUTURE_SKEW", cls.max_future_skew_ms),
            limits=TradeLimits.from_env(env),
            sink_retry_ms=duration_ms("SINK_RETRY_TIMEOUT", cls.sink_retry_ms),
            stall_timeout_ms=duration_ms("BATCH_STALL_TIMEOUT", cls.stall_timeout_ms),
            first_batch_stall_timeout_ms=duration_ms(
                "FIRST_BATCH_STALL_TIMEOUT", cls.first_batch_stall_timeout_ms
            ),
            max_restarts=int_setting(env, "QUERY_MAX_RESTARTS", cls.max_restarts, minimum=0),
            metrics_host=env_value(env, "STREAM_METRICS_HOST") or cls.metrics_host,
            metrics_port=int_setting(env, "STREAM_METRICS_PORT", cls.metrics_port, minimum=0),
            fail_on_data_loss=flag_setting(env, "FAIL_ON_DATA_LOSS", cls.fail_on_data_loss),
        )
