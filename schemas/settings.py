"""The one reader of settings: every service reads its environment variables through here.

One spelling per kind of value, each parsed by one function below:

* **durations** (:func:`duration_ms_setting`, :func:`seconds_setting`): a number with an
  optional unit, ``500ms``, ``10s``, ``10 seconds``, ``5m``, ``2h``, ``1d``; a plain number is
  seconds (``0.5`` is 500 ms).
* **booleans** (:func:`flag_setting`): ``true`` or ``false``. ``on``/``off`` are read for one
  more release, with a warning.
* **sizes** (:func:`size_setting`, :func:`jvm_size_setting`): bytes, or an integer with ``k``,
  ``m`` or ``g`` (powers of 1024, as the JVM reads them): ``8m``, ``64m``, ``1g``.
* **lists** (:func:`list_setting`): comma-separated, blanks around items ignored.
* **secrets** (:func:`secret_setting`): a :class:`pydantic.SecretStr`, which prints as
  ``**********`` in ``repr``, ``str``, f-strings and logs.

A blank value counts as unset. An unusable value raises :class:`SettingsError` whose one-line
message names the variable and the value. Each default is written once, where the setting's
field is declared, and passed to the reader from there.

Variables renamed in this release (:data:`RENAMED`) are still read under their old name, with a
logged warning naming both; both set to different values is an error naming both.

Cassandra credentials come from ``CASSANDRA_USERNAME``/``CASSANDRA_PASSWORD`` (the writers' role) or
``CASSANDRA_READER_USERNAME``/``CASSANDRA_READER_PASSWORD`` (the read-only role of the API and the
dashboards) or, when those are unset, from ``$STATE_DIR/credentials.env`` that ``make up`` writes.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import SecretStr as SecretStr  # re-exported: the secret type of every setting

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = ".state"
CREDENTIALS_FILE_NAME = "credentials.env"

CassandraRole = Literal["writer", "reader"]
# Prefix of the credential variables of each role, in the environment and in credentials.env.
ROLE_PREFIX: dict[str, str] = {"writer": "CASSANDRA_", "reader": "CASSANDRA_READER_"}

#: New name -> old name of the variables renamed in this release. The old name is still read,
#: with a warning, until the next release; then this table empties.
RENAMED: dict[str, str] = {
    # the stream processor's metrics endpoint gets its service's prefix, as the collector's has
    "STREAM_METRICS_HOST": "METRICS_HOST",
    "STREAM_METRICS_PORT": "METRICS_PORT",
    # durations are named without a unit: the value carries it (plain numbers are seconds)
    "COLLECTOR_MAX_FUTURE_SKEW": "COLLECTOR_MAX_FUTURE_SKEW_S",
    "COLLECTOR_MAX_PAST_SKEW": "COLLECTOR_MAX_PAST_SKEW_S",
    "COLLECTOR_STALL_TIMEOUT": "COLLECTOR_STALL_TIMEOUT_S",
    "COLLECTOR_CONNECT_TIMEOUT": "COLLECTOR_CONNECT_TIMEOUT_S",
    "COLLECTOR_BACKOFF_INITIAL": "COLLECTOR_BACKOFF_INITIAL_S",
    "COLLECTOR_BACKOFF_MAX": "COLLECTOR_BACKOFF_MAX_S",
    "COLLECTOR_FLUSH_TIMEOUT": "COLLECTOR_FLUSH_TIMEOUT_S",
    "COLLECTOR_PROGRESS_INTERVAL": "COLLECTOR_PROGRESS_S",
    "COLLECTOR_LINGER": "COLLECTOR_LINGER_MS",
    "SUPERSET_REFRESH": "SUPERSET_REFRESH_S",
    "DEMO_DURATION": "DEMO_SECONDS",
}
#: The unit a plain number had under an old name whose unit was not seconds.
OLD_UNITS: dict[str, str] = {"COLLECTOR_LINGER_MS": "ms"}


_Settings = TypeVar("_Settings")


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable and the value."""


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env_value(env, "STATE_DIR") or DEFAULT_STATE_DIR).resolve()


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


# --- the lookup: blanks, renamed variables ------------------------------------------------------


def _stripped(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw.strip() if raw is not None and raw.strip() else None


def lookup(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(variable, text)`` of the setting ``name``: its text without surrounding blanks, and
    the variable it came from (``name``, or the old name of a renamed one); ``None`` when unset.

    >>> lookup({"METRICS_PORT": "0"}, "STREAM_METRICS_PORT")
    ('METRICS_PORT', '0')
    >>> lookup({"METRICS_PORT": "0", "STREAM_METRICS_PORT": "9"}, "STREAM_METRICS_PORT")
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: STREAM_METRICS_PORT='9' and METRICS_PORT='0' are both set: \
METRICS_PORT is the old name of STREAM_METRICS_PORT; unset it
    """
    raw = _stripped(env, name)
    old = RENAMED.get(name)
    old_raw = _stripped(env, old) if old else None
    if old is None or old_raw is None:
        return None if raw is None else (name, raw)
    # the old text in the new spelling: a plain number under an old name kept its old unit
    value = old_raw + OLD_UNITS[old] if old in OLD_UNITS and _NUMBER_RE.match(old_raw) else old_raw
    if raw is not None and raw != value:
        raise SettingsError(
            f"{name}={raw!r} and {old}={old_raw!r} are both set: {old} is the old name of "
            f"{name}; unset it"
        )
    logger.warning(
        "DeprecationWarning: %s is deprecated, set %s instead (the old name is read until the "
        "next release)",
        old,
        name,
    )
    return name if raw is not None else old, value


_NUMBER_RE = re.compile(r"^\d+(\.\d+)?$")


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """The variable's text without surrounding blanks; ``None`` when unset or blank."""
    found = lookup(env, name)
    return None if found is None else found[1]


def read_settings(
    build: Callable[[Mapping[str, str]], _Settings],
    env: Mapping[str, str] | None,
    error: Callable[[str], Exception],
) -> _Settings:
    """``build(env)`` (``os.environ`` when ``env`` is None), with a :class:`SettingsError`
    raised again as ``error``, the package's own error class, with the same one-line message.

    >>> read_settings(lambda env: int_setting(env, "N", 1, minimum=0), {"N": "x"}, RuntimeError)
    Traceback (most recent call last):
    ...
    RuntimeError: N='x' is not an integer
    """
    try:
        return build(os.environ if env is None else env)
    except SettingsError as exc:
        raise error(str(exc)) from None


# --- one reader per kind of value ---------------------------------------------------------------


def int_setting(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """
    >>> int_setting({"N": " 7 "}, "N", 1, minimum=0), int_setting({}, "N", 1, minimum=0)
    (7, 1)
    >>> int_setting({"N": "-1"}, "N", 1, minimum=0)
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: N='-1' must be >= 0
    """
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{var}={raw!r} must be >= {minimum}")
    return value


def number_setting(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{var}={raw!r} must be a finite number >= {minimum:g}")
    return value


def choice_setting(
    env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]
) -> str:
    """The lower-cased value, which must be one of ``allowed``."""
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    if raw.lower() not in allowed:
        raise SettingsError(f"{var}={raw!r}: allowed values are {', '.join(allowed)}")
    return raw.lower()


_OLD_FLAGS = {"on": True, "off": False}


def flag_setting(env: Mapping[str, str], name: str, default: bool) -> bool:
    """``true`` or ``false`` (any case); ``on``/``off`` still read, with a warning.

    >>> flag_setting({"F": "False"}, "F", True), flag_setting({}, "F", True)
    (False, True)
    >>> flag_setting({"F": "yes"}, "F", True)
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: F='yes': expected true or false
    """
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    text = raw.lower()
    if text in ("true", "false"):
        return text == "true"
    if text in _OLD_FLAGS:
        value = _OLD_FLAGS[text]
        logger.warning(
            "DeprecationWarning: %s=%s is deprecated, write %s=%s (on/off are read until the "
            "next release)",
            var,
            raw,
            var,
            str(value).lower(),
        )
        return value
    raise SettingsError(f"{var}={raw!r}: expected true or false")


def port_setting(env: Mapping[str, str], name: str, default: int) -> int:
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{var}={raw!r} is outside 1..65535")
    return port


_UNITS_MS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1),
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1000),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60_000),
    **dict.fromkeys(("h", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration_ms(name: str, raw: str) -> int:
    """Milliseconds in ``"10"`` (seconds), ``"0.5"``, ``"10s"``, ``"10 seconds"``, ``"500 ms"``,
    ``"5m"``, ``"1.5h"`` or ``"1d"``: a whole number of milliseconds.

    :param name: the variable or option the text came from, for the error message.
    :raises SettingsError: on anything else, naming ``name`` and the text.

    >>> parse_duration_ms("BARS_WATERMARK", "10 seconds"), parse_duration_ms("X", "0.5")
    (10000, 500)
    >>> parse_duration_ms("BARS_WATERMARK", "ten")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: BARS_WATERMARK='ten': expected a duration like ...
    """
    match = _DURATION_RE.match(raw.lower())
    millis = None
    if match and (match.group(2) or "s") in _UNITS_MS:
        millis = Decimal(match.group(1)) * _UNITS_MS[match.group(2) or "s"]
    if millis is None or millis != millis.to_integral_value():
        raise SettingsError(
            f"{name}={raw!r}: expected a duration like '10 seconds', '500 ms', '5m' or '6h'"
        )
    return int(millis)


def duration_ms_setting(
    env: Mapping[str, str], name: str, default_ms: int, *, minimum_ms: int = 0
) -> int:
    """A duration in milliseconds (see :func:`parse_duration_ms`), at least ``minimum_ms``.

    >>> duration_ms_setting({"T": "2s"}, "T", 500), duration_ms_setting({}, "T", 500)
    (2000, 500)
    """
    found = lookup(env, name)
    if found is None:
        return default_ms
    var, raw = found
    millis = parse_duration_ms(var, raw)
    if millis < minimum_ms:
        raise SettingsError(f"{var}={raw!r} must be at least {minimum_ms} ms")
    return millis


def seconds_setting(
    env: Mapping[str, str], name: str, default_s: float, *, minimum_s: float = 0.0
) -> float:
    """A duration (see :func:`parse_duration_ms`) in seconds, at least ``minimum_s``.

    >>> seconds_setting({"T": "250ms"}, "T", 1.0), seconds_setting({"T": "2"}, "T", 1.0)
    (0.25, 2.0)
    >>> seconds_setting({"T": "0"}, "T", 1.0, minimum_s=0.1)
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: T='0' must be at least 0.1 s
    """
    found = lookup(env, name)
    if found is None:
        return default_s
    var, raw = found
    seconds = parse_duration_ms(var, raw) / 1000
    if seconds < minimum_s:
        raise SettingsError(f"{var}={raw!r} must be at least {minimum_s:g} s")
    return seconds


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(name: str, raw: str) -> int:
    """Bytes in ``"262144"``, ``"256k"``, ``"8m"``, ``"8MiB"`` or ``"1g"`` (powers of 1024).

    >>> parse_size("X", "8m"), parse_size("X", "64 MiB"), parse_size("X", "1024")
    (8388608, 67108864, 1024)
    """
    match = _SIZE_RE.match(raw.lower())
    if not match:
        raise SettingsError(f"{name}={raw!r}: expected a size like '262144', '256k', '8m' or '1g'")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def size_setting(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """A size in bytes (see :func:`parse_size`), at least ``minimum``."""
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    size = parse_size(var, raw)
    if size < minimum:
        raise SettingsError(f"{var}={raw!r} must be at least {minimum} bytes")
    return size


def jvm_size_setting(env: Mapping[str, str], name: str, default: str) -> str:
    """A JVM heap: a size as :func:`parse_size` reads it, given to ``-Xmx`` as ``<n>[k|m|g]``.

    >>> jvm_size_setting({"HEAP": "2G"}, "HEAP", "1g"), jvm_size_setting({}, "HEAP", "1g")
    ('2g', '1g')
    >>> jvm_size_setting({"HEAP": "lots"}, "HEAP", "1g")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: HEAP='lots': expected a size like ...
    """
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    match = _SIZE_RE.match(raw.lower())
    if not match or parse_size(var, raw) == 0:
        raise SettingsError(f"{var}={raw!r}: expected a size like '512m' or '1g'")
    return match.group(1) + match.group(2)


def list_setting(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated items, blanks around them dropped, each kept once, in order.

    >>> list_setting({"L": " a, b,,a "}, "L", ()), list_setting({}, "L", ("x",))
    (('a', 'b'), ('x',))
    >>> list_setting({"L": " , "}, "L", ())
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: L=',': names nothing (expected items separated by commas)
    """
    found = lookup(env, name)
    if found is None:
        return default
    var, raw = found
    items = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not items:
        raise SettingsError(f"{var}={raw!r}: names nothing (expected items separated by commas)")
    return items


def secret_setting(env: Mapping[str, str], name: str) -> SecretStr | None:
    """The value as a :class:`SecretStr` (never printed); ``None`` when unset.

    >>> token = secret_setting({"TOKEN": "s3cr3t"}, "TOKEN")
    >>> (repr(token), f"{token}", token.get_secret_value() if token else None)
    ("SecretStr('**********')", '**********', 's3cr3t')
    """
    raw = env_value(env, name)
    return None if raw is None else SecretStr(raw)


def secret_value(secret: SecretStr | None) -> str | None:
    """The text of a secret, for the one call that needs it (a driver's login, a URL)."""
    return None if secret is None else secret.get_secret_value()


# --- the settings every service shares ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        servers = env_value(env, "KAFKA_BOOTSTRAP_SERVERS") or cls.bootstrap_servers
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


# CASSANDRA_CONSISTENCY's choices: the levels that make sense within one data centre.
CONSISTENCY_LEVELS = ("one", "two", "three", "quorum", "all", "local_one", "local_quorum")


@dataclass(frozen=True, kw_only=True)
class CassandraSettings:
    """Where Cassandra is and who we are there; the password is a :class:`SecretStr`.

    ``consistency`` (CASSANDRA_CONSISTENCY): the level of every read and write of our services,
    e.g. ``LOCAL_QUORUM`` on the cluster topology (two of three replicas: one node may be down,
    and a read still sees every acknowledged write); unset keeps the clients' defaults (the
    Python driver's LOCAL_ONE; the Spark connector's LOCAL_QUORUM writes, LOCAL_ONE reads),
    which on one node all mean that node."""

    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "market"
    username: str | None = None
    password: SecretStr | None = None
    local_dc: str = "datacenter1"
    consistency: str | None = None

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
        keyspace = env_value(env, "CASSANDRA_KEYSPACE") or cls.keyspace
        if not keyspace.replace("_", "").isalnum() or not keyspace[0].isalpha():
            raise SettingsError(
                f"CASSANDRA_KEYSPACE={keyspace!r}: use letters, digits and _ starting with a letter"
            )
        consistency = env_value(env, "CASSANDRA_CONSISTENCY")
        return cls(
            hosts=list_setting(env, "CASSANDRA_HOSTS", cls.hosts),
            port=port_setting(env, "CASSANDRA_PORT", cls.port),
            keyspace=keyspace,
            username=username,
            password=None if password is None else SecretStr(password),
            consistency=consistency
            and choice_setting(env, "CASSANDRA_CONSISTENCY", "", CONSISTENCY_LEVELS).upper(),
        )


def _role_credentials(
    env: Mapping[str, str], file_values: Mapping[str, str], prefix: str
) -> tuple[str | None, str | None]:
    return (
        env_value(env, f"{prefix}USERNAME") or file_values.get(f"{prefix}USERNAME") or None,
        env_value(env, f"{prefix}PASSWORD") or file_values.get(f"{prefix}PASSWORD") or None,
    )


REPO_ROOT = Path(__file__).resolve().parent.parent


def jars_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where Maven-resolved jars are cached, one folder per engine (kafka, cassandra, spark).

    Outside STATE_DIR on purpose: ``make clean`` wipes state but never forces a re-download.
    """
    env = os.environ if env is None else env
    return Path(env_value(env, "JARS_DIR") or REPO_ROOT / ".cache" / "jars").resolve()
