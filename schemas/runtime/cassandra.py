"""A thin cassandra-driver session factory shared by services and tests, and the driver's
errors in one tuple."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from schemas.settings import CassandraSettings, secret_value

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session


@functools.cache
def driver_errors() -> tuple[type[Exception], ...]:
    """Everything cassandra-driver raises for an unreachable, refusing or failing cluster or
    request: ``DriverException`` (timeouts, unavailable replicas, refused queries) and
    ``NoHostAvailable``, which is not one. A function, so the driver is imported only when it
    is needed (the collector may run without Cassandra).

    >>> [cls.__name__ for cls in driver_errors()]
    ['DriverException', 'NoHostAvailable']
    """
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable

    return (DriverException, NoHostAvailable)


def connect(
    settings: CassandraSettings,
    *,
    username: str | None = None,
    password: str | None = None,
    keyspace: str | None = None,
    connect_timeout: float = 10.0,
    request_timeout: float = 30.0,
) -> tuple[Cluster, Session]:
    """Open a session; the caller shuts the cluster down. Credentials default to ``settings``."""
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    user = username if username is not None else settings.username
    secret = password if password is not None else secret_value(settings.password)
    auth = PlainTextAuthProvider(user, secret) if user else None
    cluster = Cluster(
        list(settings.hosts),
        port=settings.port,
        auth_provider=auth,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=settings.local_dc),
                request_timeout=request_timeout,
                # CASSANDRA_CONSISTENCY, else the driver's own default.
                consistency_level=ConsistencyLevel.name_to_value[
                    settings.consistency or "LOCAL_ONE"
                ],
            )
        },
        protocol_version=5,
        connect_timeout=connect_timeout,
    )
    try:
        session = cluster.connect(keyspace)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, session
