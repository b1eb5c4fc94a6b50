"""``python -m infra.bootstrap``: prepare a Kafka and a Cassandra run elsewhere (docker compose,
the Helm chart) for our services. Idempotent: run it on every deploy.

1. Kafka: the contract topics that are missing, with ``KAFKA_REPLICATION_FACTOR`` copies
   (``min.insync.replicas`` one less, when there are three or more).
2. Cassandra, as ``CASSANDRA_ADMIN_USERNAME``: on the first run that role does not exist yet, so it
   is created by the image's default superuser (``cassandra``/``cassandra``), whose login and
   superuser status are then taken away. Then the migrator, writer and reader login roles from
   their variables, the keyspace (``CASSANDRA_REPLICATION_FACTOR`` copies in ``datacenter1``),
   each role's grants on it, and the CQL migrations, applied as the migrator.

Every password comes from the environment (a Secret); a missing one is an error naming it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from infra.kafka import ensure_topics
from infra.migrations import SINGLE_NODE_REPLICATION, apply_migrations, create_keyspace
from infra.roles import (
    MIGRATOR_PERMISSIONS,
    READER_PERMISSIONS,
    WRITER_PERMISSIONS,
    cql_literal,
    create_login_role,
    disable_default_superuser,
    grant_keyspace,
    retry_unauthorized,
)
from schemas.runtime.cassandra import connect
from schemas.settings import (
    CassandraSettings,
    KafkaSettings,
    SettingsError,
    env_value,
    int_setting,
)

logger = logging.getLogger("infra.bootstrap")
T = TypeVar("T")
DEFAULT_SUPERUSER = ("cassandra", "cassandra")
# Default login names; each can be changed with its *_USERNAME variable.
ROLE_DEFAULTS = {
    "CASSANDRA_ADMIN_": "market_admin",
    "CASSANDRA_MIGRATOR_": "market_migrator",
    "CASSANDRA_": "market_app",
    "CASSANDRA_READER_": "market_reader",
}


@dataclass(frozen=True)
class Login:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class BootstrapSettings:
    cassandra: CassandraSettings
    kafka: KafkaSettings
    admin: Login
    migrator: Login
    writer: Login
    reader: Login
    cassandra_replication: int
    kafka_replication: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BootstrapSettings:
        env = os.environ if env is None else env
        logins = {prefix: _login(env, prefix, user) for prefix, user in ROLE_DEFAULTS.items()}
        return cls(
            cassandra=CassandraSettings.from_env(env),
            kafka=KafkaSettings.from_env(env),
            admin=logins["CASSANDRA_ADMIN_"],
            migrator=logins["CASSANDRA_MIGRATOR_"],
            writer=logins["CASSANDRA_"],
            reader=logins["CASSANDRA_READER_"],
            cassandra_replication=int_setting(env, "CASSANDRA_REPLICATION_FACTOR", 1, minimum=1),
            kafka_replication=int_setting(env, "KAFKA_REPLICATION_FACTOR", 1, minimum=1),
        )

    def keyspace_replication(self) -> str:
        """
        >>> s = BootstrapSettings.from_env({**{f"{p}PASSWORD": "x" for p in ROLE_DEFAULTS},
        ...     "CASSANDRA_REPLICATION_FACTOR": "3"})
        >>> s.keyspace_replication()
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
        """
        if self.cassandra_replication == 1:
            return SINGLE_NODE_REPLICATION
        dc = self.cassandra.local_dc
        return f"{{'class': 'NetworkTopologyStrategy', '{dc}': {self.cassandra_replication}}}"


def _login(env: Mapping[str, str], prefix: str, default_user: str) -> Login:
    password = env_value(env, f"{prefix}PASSWORD")
    if password is None:
        raise SettingsError(f"{prefix}PASSWORD is not set (take it from a Secret)")
    return Login(env_value(env, f"{prefix}USERNAME") or default_user, password)


def _retry(fn: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the engine may still be starting
            if time.monotonic() > deadline:
                raise
            logger.info("%s not ready (%s); retrying", what, type(exc).__name__)
            time.sleep(2)


def _admin_session(settings: BootstrapSettings, timeout: float) -> tuple[Any, Any]:
    """A session as the admin role, created first by the default superuser when missing."""
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    admin = settings.admin

    def as_admin() -> tuple[Any, Any]:
        return connect(settings.cassandra, username=admin.user, password=admin.password)

    try:
        return _retry(as_admin, 5, "Cassandra (as the admin)")
    except (NoHostAvailable, AuthenticationFailed):
        pass
    cluster, session = _retry(
        lambda: connect(
            settings.cassandra, username=DEFAULT_SUPERUSER[0], password=DEFAULT_SUPERUSER[1]
        ),
        timeout,
        "Cassandra (as the default superuser)",
    )
    try:
        session.execute(
            f"CREATE ROLE IF NOT EXISTS {admin.user} WITH PASSWORD = "
            f"'{cql_literal(admin.password)}' AND LOGIN = true AND SUPERUSER = true"
        )
        logger.info("created the admin role %s", admin.user)
    finally:
        cluster.shutdown()
    return _retry(as_admin, timeout, "Cassandra (as the new admin)")


def bootstrap(settings: BootstrapSettings, timeout: float = 300) -> list[str]:
    """Topics, roles, keyspace, grants, migrations; returns the migrations applied now."""
    rf = settings.kafka_replication
    created = _retry(
        lambda: ensure_topics(settings.kafka.bootstrap_servers, rf, rf - 1 if rf >= 3 else None),
        timeout,
        "Kafka",
    )
    logger.info("topics created: %s", ", ".join(created) or "none (all there)")
    keyspace = settings.cassandra.keyspace
    cluster, session = _admin_session(settings, timeout)
    try:
        if disable_default_superuser(session):
            logger.info("took away the default superuser's login")
        for login in (settings.migrator, settings.writer, settings.reader):
            create_login_role(session, login.user, login.password)
        create_keyspace(session, keyspace, settings.keyspace_replication())
        grant_keyspace(
            session,
            keyspace,
            {
                settings.migrator.user: MIGRATOR_PERMISSIONS,
                settings.writer.user: WRITER_PERMISSIONS,
                settings.reader.user: READER_PERMISSIONS,
            },
        )
    finally:
        cluster.shutdown()
    migrator = settings.migrator
    cluster, session = connect(
        settings.cassandra, username=migrator.user, password=migrator.password
    )
    try:
        # Cassandra caches permissions for up to 2 s: a grant made just now may not show yet.
        applied = retry_unauthorized(lambda: apply_migrations(session, keyspace), timeout=10)
    finally:
        cluster.shutdown()
    logger.info(
        "keyspace %s: %s", keyspace, f"applied {', '.join(applied)}" if applied else "up to date"
    )
    return applied


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m infra.bootstrap",
        description="Topics, Cassandra roles, keyspace, grants and migrations on a Kafka and a "
        "Cassandra run elsewhere (compose, Kubernetes); settings from the environment.",
    ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = BootstrapSettings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bootstrap(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
