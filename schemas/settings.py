"""Connection settings every service shares, read from the environment with loopback defaults.

Cassandra credentials come from ``CASSANDRA_USERNAME``/``CASSANDRA_PASSWORD`` (the writers' role) or
``CASSANDRA_READER_USERNAME``/``CASSANDRA_READER_PASSWORD`` (the read-only role of the API and the
dashboards) or, when those are unset, from ``$STATE_DIR/credentials.env`` that ``make up`` writes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_STATE_DIR = ".state"
CREDENTIALS_FILE_NAME = "credentials.env"

CassandraRole = Literal["writer", "reader"]
# Prefix of the credential variables of each role, in the environment and in credentials.env.
ROLE_PREFIX: dict[str, str] = {"writer": "CASSANDRA_", "reader": "CASSANDRA_READER_"}


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable and the value."""


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("STATE_DIR") or DEFAULT_STATE_DIR).resolve()


def load_credentials_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (``#`` comments and blank lines ignored).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.env"
    >>> _ = p.write_text("# x\\nCASSANDRA_USERNAME=app\\nCASSANDRA_PASSWORD=a=b\\n")
    >>> load_credentials_file(p)
    {'CASSANDRA_USERNAME': 'app', 'CASSANDRA_PASSWORD': 'a=b'}
    """
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{lineno}: expected KEY=VALUE, got {line[:40]!r}")
        values[key.strip()] = value.strip()
    return values


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's text without surrounding blanks; ``None`` when unset or blank."""
    raw = env.get(name)
    return raw.strip() if raw is not None and raw.strip() else None


def int_setting(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """
    >>> int_setting({"N": " 7 "}, "N", 1, minimum=0), int_setting({}, "N", 1, minimum=0)
    (7, 1)
    >>> int_setting({"N": "-1"}, "N", 1, minimum=0)
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: N='-1' must be >= 0
    """
    raw = env_value(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
    return value


def number_setting(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env_value(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name}={raw!r} must be a finite number >= {minimum:g}")
    return value


def choice_setting(
    env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]
) -> str:
    """The lower-cased value, which must be one of ``allowed``."""
    raw = env_value(env, name)
    if raw is None:
        return default
    if raw.lower() not in allowed:
        raise SettingsError(f"{name}={raw!r}: allowed values are {', '.join(allowed)}")
    return raw.lower()


def port_setting(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name}={raw!r} is outside 1..65535")
    return port


_UNITS_MS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1),
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1000),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")


def parse_duration_ms(name: str, raw: str) -> int:
    """Milliseconds in ``"10"`` (seconds), ``"10s"``, ``"10 seconds"``, ``"500 ms"``, ``"5m"``,
    ``"1 hour"`` or ``"1d"``.

    :param name: the variable or option the text came from, for the error message.
    :raises SettingsError: on anything else, naming ``name`` and the text.

    >>> parse_duration_ms("BARS_WATERMARK", "10 seconds"), parse_duration_ms("X", "500ms")
    (10000, 500)
    >>> parse_duration_ms("BARS_WATERMARK", "ten")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: BARS_WATERMARK='ten': expected a duration like ...
    """
    match = _DURATION_RE.match(raw.lower())
    unit = match.group(2) if match else ""
    if not match or (unit and unit not in _UNITS_MS):
        raise SettingsError(
            f"{name}={raw!r}: expected a duration like '10 seconds', '500 ms', '5m' or '6h'"
        )
    return int(match.group(1)) * _UNITS_MS[unit or "s"]


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        servers = env.get("KAFKA_BOOTSTRAP_SERVERS") or cls.bootstrap_servers
        for server in servers.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise SettingsError(
                    f"KAFKA_BOOTSTRAP_SERVERS={servers!r}: expected host:port[,host:port...]"
                )
        return cls(bootstrap_servers=servers)

    @property
    def first_port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rpartition(":")[2])


@dataclass(frozen=True, kw_only=True)
class CassandraSettings:
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "market"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    local_dc: str = "datacenter1"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, role: CassandraRole = "writer"
    ) -> CassandraSettings:
        """The settings, with the credentials of ``role``: ``writer`` (the collector, the stream
        processor and the forecast job: SELECT and MODIFY) or ``reader`` (the API and the
        dashboards: SELECT only). The reader falls back to the writer's variables when none of its
        own are set anywhere, so a deployment that configures one role keeps working."""
        env = os.environ if env is None else env
        file_values = load_credentials_file(state_dir(env) / CREDENTIALS_FILE_NAME)
        username, password = _role_credentials(env, file_values, ROLE_PREFIX[role])
        if role == "reader" and username is None:
            username, password = _role_credentials(env, file_values, ROLE_PREFIX["writer"])
        keyspace = env.get("CASSANDRA_KEYSPACE") or cls.keyspace
        if not keyspace.replace("_", "").isalnum() or not keyspace[0].isalpha():
            raise SettingsError(
                f"CASSANDRA_KEYSPACE={keyspace!r}: use letters, digits and _ starting with a letter"
            )
        hosts = tuple(h.strip() for h in (env.get("CASSANDRA_HOSTS") or "127.0.0.1").split(","))
        return cls(
            hosts=tuple(h for h in hosts if h),
            port=port_setting(env, "CASSANDRA_PORT", 9042),
            keyspace=keyspace,
            username=username,
            password=password,
        )


def _role_credentials(
    env: Mapping[str, str], file_values: Mapping[str, str], prefix: str
) -> tuple[str | None, str | None]:
    return (
        env.get(f"{prefix}USERNAME") or file_values.get(f"{prefix}USERNAME"),
        env.get(f"{prefix}PASSWORD") or file_values.get(f"{prefix}PASSWORD"),
    )


REPO_ROOT = Path(__file__).resolve().parent.parent


def jars_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where Maven-resolved jars are cached, one folder per engine (kafka, cassandra, spark).

    Outside STATE_DIR on purpose: ``make clean`` wipes state but never forces a re-download.
    """
    env = os.environ if env is None else env
    return Path(env.get("JARS_DIR") or REPO_ROOT / ".cache" / "jars").resolve()
