"""Collector settings: one frozen object, read from the environment only by the entrypoint.

Every variable has a default that works on loopback against ``python -m collector.feed``; against
the live Finnhub only ``FINNHUB_TOKEN`` is needed (and ``FINNHUB_WS_URL`` left at its default).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from collector.exceptions import ConfigError
from collector.heartbeat import heartbeat_path
from collector.sink import ProducerOptions
from schemas.contracts import topic_specs
from schemas.limits import MAX_FUTURE_SKEW_MS, MAX_PAST_SKEW_MS
from schemas.settings import (
    CassandraSettings,
    KafkaSettings,
    SecretStr,
    choice_setting,
    duration_ms_setting,
    env_value,
    flag_setting,
    int_setting,
    read_settings,
    seconds_setting,
    secret_setting,
    size_setting,
    state_dir,
)

__all__ = [
    "DEFAULT_SYMBOLS",
    "FINNHUB_WS_URL",
    "CollectorConfig",
    "Compression",
    "KafkaClient",
    "SecretStr",
    "Source",
    "parse_symbols",
    "redact",
]

FINNHUB_WS_URL = "wss://ws.finnhub.io"
DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BINANCE:BTCUSDT",
    "BINANCE:ETHUSDT",
    "BINANCE:XRPUSDT",
    "BINANCE:DOGEUSDT",
    "AAPL",
    "AMZN",
    "MSFT",
)
Source = Literal["finnhub", "feed", "replay"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
KafkaClient = Literal["kafka-python", "confluent"]
_REDACTED = "***"


def redact(text: str, secret: SecretStr | None) -> str:
    """``text`` with every occurrence of the secret (and its URL-encoded form) replaced by ``***``.

    >>> redact("GET wss://h/?token=s3cr%2Ft failed", SecretStr("s3cr/t"))
    'GET wss://h/?token=*** failed'
    """
    if secret is None or not secret.get_secret_value():
        return text
    value = secret.get_secret_value()
    for form in {value, urlencode({"": value})[1:]}:
        text = text.replace(form, _REDACTED)
    return text


def parse_symbols(raw: str | None) -> tuple[str, ...]:
    """The ``SYMBOLS`` setting: comma-separated, duplicates dropped; the defaults when unset."""
    if raw is None:
        return DEFAULT_SYMBOLS
    symbols = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    if not symbols:
        raise ConfigError(f"SYMBOLS={raw!r} names no symbol (expected e.g. AAPL,BINANCE:BTCUSDT)")
    for symbol in symbols:
        if any(ch.isspace() for ch in symbol) or len(symbol) > 64:
            raise ConfigError(f"SYMBOLS: {symbol!r} is not a symbol (no spaces, <= 64 chars)")
    return symbols


def _ws_url(raw: str | None) -> str:
    url = raw or FINNHUB_WS_URL
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(f"FINNHUB_WS_URL={url!r}: expected ws://host[:port] or wss://host")
    if any(k == "token" for k, _ in parse_qsl(parts.query)):
        raise ConfigError("FINNHUB_WS_URL must not contain the token: set FINNHUB_TOKEN instead")
    return url


def _heartbeat_file(
    env: Mapping[str, str], ws_url: str, symbols: tuple[str, ...], topic: str
) -> Path | None:
    raw = env_value(env, "COLLECTOR_HEARTBEAT_FILE")
    if raw == "off":
        return None
    if raw:
        return Path(raw)
    keyspace = CassandraSettings.from_env(env).keyspace
    return heartbeat_path(state_dir(env) / "collector", ws_url, ",".join(symbols), topic, keyspace)


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    """Everything the collector needs, validated on construction.

    :param ws_url: websocket base URL, without the token (``FINNHUB_WS_URL``).
    :param token: Finnhub API token (``FINNHUB_TOKEN``); required for ``wss://ws.finnhub.io``,
        optional for the offline feed. Never logged.
    :param symbols: symbols to subscribe (``SYMBOLS``, comma-separated).
    :param source: the ``source`` field of every record: ``finnhub``, ``feed`` or ``replay``.
    :param max_future_skew_s: a trade later than now + this (s) goes to the DLQ (default 2, the
        stream processor's default too: ``schemas.limits``).
    :param max_past_skew_s: a trade older than now - this (s) goes to the DLQ (default a day).
    :param stall_timeout_s: reconnect when no frame at all (not even a ping) came for this long.
    :param heartbeat_file: where this collector beats about once a second, so the next run can
        record the gap if this one is killed (``COLLECTOR_HEARTBEAT_FILE``; default a file per
        URL, symbols, topic and keyspace under ``$STATE_DIR/collector``; ``off`` or None: none).
    :param max_frame_bytes: a bigger websocket frame (or fragmented message) is refused unread:
        a dead letter and a reconnect (``COLLECTOR_MAX_FRAME_BYTES``, default 8 MiB).
    :param backoff_initial_s: first reconnect delay; doubles per failed attempt...
    :param backoff_max_s: ...up to this cap, with jitter.
    :param kafka_client: the Kafka client library the sink uses (``COLLECTOR_KAFKA_CLIENT``):
        ``kafka-python`` (default) or ``confluent`` (confluent-kafka, librdkafka; faster).
    :param kafka_buffer_records: at most this many records wait for Kafka's acknowledgement
        (``COLLECTOR_KAFKA_BUFFER_RECORDS``, default 100,000); frames read beyond it, or beyond
        ``kafka_buffer_bytes`` (``COLLECTOR_KAFKA_BUFFER_BYTES``, default 64 MiB), are not
        captured and become a ``kafka_buffer_full`` gap row.
    :raises ConfigError: a value is out of range; the message names it.

    >>> c = CollectorConfig.from_env({"FINNHUB_WS_URL": "ws://127.0.0.1:8765", "SYMBOLS": "A,B"})
    >>> (c.symbols, c.source, c.token)
    (('A', 'B'), 'feed', None)
    """

    ws_url: str = FINNHUB_WS_URL
    token: SecretStr | None = None
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    source: Source = "finnhub"
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    trades_topic: str = "trades"
    dlq_topic: str = "trades.dlq"
    max_future_skew_s: float = MAX_FUTURE_SKEW_MS / 1000
    max_past_skew_s: float = MAX_PAST_SKEW_MS / 1000
    stall_timeout_s: float = 60.0
    max_frame_bytes: int = 8 * 1024 * 1024
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    linger_ms: int = ProducerOptions.linger_ms
    batch_bytes: int = ProducerOptions.batch_bytes
    compression: Compression = cast(Compression, ProducerOptions.compression)
    kafka_client: KafkaClient = "kafka-python"
    kafka_buffer_records: int = ProducerOptions.buffer_records
    kafka_buffer_bytes: int = ProducerOptions.buffer_bytes
    flush_timeout_s: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    progress_interval_s: float = 10.0
    record_gaps: bool = True
    heartbeat_file: Path | None = None
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    collector_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def __post_init__(self) -> None:
        if self.source not in get_args(Source):
            raise ConfigError(
                f"source={self.source!r}: allowed values are {', '.join(get_args(Source))}"
            )
        if self.compression not in get_args(Compression):
            raise ConfigError(
                f"compression={self.compression!r}: allowed values are "
                f"{', '.join(get_args(Compression))}"
            )
        if self.kafka_client not in get_args(KafkaClient):
            raise ConfigError(
                f"kafka_client={self.kafka_client!r}: allowed values are "
                f"{', '.join(get_args(KafkaClient))}"
            )
        if not self.symbols:
            raise ConfigError("symbols: at least one symbol is needed")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"backoff_max_s={self.backoff_max_s:g} is below "
                f"backoff_initial_s={self.backoff_initial_s:g}"
            )
        if self.stall_timeout_s <= 0:
            raise ConfigError(f"stall_timeout_s={self.stall_timeout_s:g} must be > 0")
        if self.kafka_buffer_records < 1:
            raise ConfigError(f"kafka_buffer_records={self.kafka_buffer_records} must be >= 1")
        if self.kafka_buffer_bytes < 1024:
            raise ConfigError(f"kafka_buffer_bytes={self.kafka_buffer_bytes} must be >= 1024")
        if self.max_frame_bytes < 1024:
            raise ConfigError(f"max_frame_bytes={self.max_frame_bytes} must be >= 1024")
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"metrics_port={self.metrics_port} is outside 0..65535")
        if urlsplit(self.ws_url).hostname == urlsplit(FINNHUB_WS_URL).hostname and not self.token:
            raise ConfigError(
                "FINNHUB_TOKEN is not set: the live Finnhub needs it "
                "(or point FINNHUB_WS_URL at the offline feed, ws://127.0.0.1:8765)"
            )

    @property
    def connect_url(self) -> str:
        """The URL with ``token=`` appended. Secret: pass it to the socket, never to a log."""
        if self.token is None:
            return self.ws_url
        parts = urlsplit(self.ws_url)
        query = urlencode([*parse_qsl(parts.query), ("token", self.token.get_secret_value())])
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, parts.fragment))

    def redact(self, text: str) -> str:
        """``text`` without the token, for logs and error messages."""
        return redact(text, self.token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CollectorConfig:
        """Read every setting from ``env`` (default ``os.environ``).

        :raises ConfigError: a variable has an unusable value; the message names it.
        """
        return read_settings(cls._from_env, env, ConfigError)

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> CollectorConfig:
        ws_url = _ws_url(env_value(env, "FINNHUB_WS_URL"))
        is_finnhub = urlsplit(ws_url).hostname == urlsplit(FINNHUB_WS_URL).hostname
        source = choice_setting(
            env, "COLLECTOR_SOURCE", "finnhub" if is_finnhub else "feed", get_args(Source)
        )
        topics = topic_specs(env)
        symbols = parse_symbols(env_value(env, "SYMBOLS"))

        def seconds(name: str, default: float, minimum: float) -> float:
            return seconds_setting(env, name, default, minimum_s=minimum)

        return cls(
            ws_url=ws_url,
            token=secret_setting(env, "FINNHUB_TOKEN"),
            symbols=symbols,
            source=cast(Source, source),
            kafka=KafkaSettings.from_env(env),
            trades_topic=topics["trades"].name,
            dlq_topic=topics["dlq"].name,
            max_future_skew_s=seconds("COLLECTOR_MAX_FUTURE_SKEW", cls.max_future_skew_s, 0),
            max_past_skew_s=seconds("COLLECTOR_MAX_PAST_SKEW", cls.max_past_skew_s, 0),
            stall_timeout_s=seconds("COLLECTOR_STALL_TIMEOUT", cls.stall_timeout_s, 0.1),
            max_frame_bytes=size_setting(
                env, "COLLECTOR_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=1024
            ),
            connect_timeout_s=seconds("COLLECTOR_CONNECT_TIMEOUT", cls.connect_timeout_s, 0.1),
            backoff_initial_s=seconds("COLLECTOR_BACKOFF_INITIAL", cls.backoff_initial_s, 0.01),
            backoff_max_s=seconds("COLLECTOR_BACKOFF_MAX", cls.backoff_max_s, 0.01),
            linger_ms=duration_ms_setting(env, "COLLECTOR_LINGER", cls.linger_ms),
            batch_bytes=size_setting(env, "COLLECTOR_BATCH_BYTES", cls.batch_bytes, minimum=1024),
            compression=cast(
                Compression,
                choice_setting(
                    env, "COLLECTOR_COMPRESSION", cls.compression, get_args(Compression)
                ),
            ),
            kafka_client=cast(
                KafkaClient,
                choice_setting(
                    env, "COLLECTOR_KAFKA_CLIENT", cls.kafka_client, get_args(KafkaClient)
                ),
            ),
            kafka_buffer_records=int_setting(
                env, "COLLECTOR_KAFKA_BUFFER_RECORDS", cls.kafka_buffer_records, minimum=1
            ),
            kafka_buffer_bytes=size_setting(
                env, "COLLECTOR_KAFKA_BUFFER_BYTES", cls.kafka_buffer_bytes, minimum=1024
            ),
            flush_timeout_s=seconds("COLLECTOR_FLUSH_TIMEOUT", cls.flush_timeout_s, 0.1),
            metrics_host=env_value(env, "COLLECTOR_METRICS_HOST") or cls.metrics_host,
            metrics_port=int_setting(env, "COLLECTOR_METRICS_PORT", cls.metrics_port, minimum=0),
            progress_interval_s=seconds("COLLECTOR_PROGRESS_INTERVAL", cls.progress_interval_s, 0),
            record_gaps=flag_setting(env, "COLLECTOR_GAPS", cls.record_gaps),
            heartbeat_file=_heartbeat_file(env, ws_url, symbols, topics["trades"].name),
            cassandra=CassandraSettings.from_env(env),
        )
