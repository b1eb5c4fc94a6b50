"""Cassandra roles of the stack and what each may do, converged on every ``up`` and ``migrate``.

=================  ==========================================  ===============================
role               who logs in with it                         on each migrated keyspace
=================  ==========================================  ===============================
``market_admin``   ``python -m infra`` only (superuser)        everything
``market_migrator`` ``python -m infra migrate``                 CREATE, ALTER, DROP, SELECT, MODIFY
``market_app``     collector gap store, stream processor,      SELECT, MODIFY
                   forecast job and backtest
``market_reader``  the API, Streamlit, Trino (so Superset)     SELECT
=================  ==========================================  ===============================

Nothing is granted on ``ALL KEYSPACES``: on a shared cluster the other applications' keyspaces stay
out of reach, Trino's unauthenticated port included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

DEFAULT_SUPERUSER = "cassandra"

MIGRATOR_PERMISSIONS = frozenset({"CREATE", "ALTER", "DROP", "SELECT", "MODIFY"})
WRITER_PERMISSIONS = frozenset({"SELECT", "MODIFY"})
READER_PERMISSIONS = frozenset({"SELECT"})


def cql_literal(value: str) -> str:
    return value.replace("'", "''")


def disable_default_superuser(session: Any, role: str = DEFAULT_SUPERUSER) -> bool:
    """Take login and superuser away from ``role`` if it still has either; True when it had.
    Run on every start, not just the first: a crash between creating the admin role and this
    step would otherwise leave ``cassandra``/``cassandra`` usable."""
    row = next(
        iter(
            session.execute(
                "SELECT can_login, is_superuser FROM system_auth.roles WHERE role = %s", (role,)
            )
        ),
        None,
    )
    if row is None or not (row.can_login or row.is_superuser):
        return False
    # No new password here: Cassandra 5 refuses a password change within 5 s of the last one,
    # and a role that cannot log in has no use for one.
    session.execute(f"ALTER ROLE {role} WITH SUPERUSER = false AND LOGIN = false")
    logger.warning("disabled the default superuser %r", role)
    return True


def create_login_role(session: Any, role: str, password: str) -> None:
    session.execute(
        f"CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = '{cql_literal(password)}' "
        "AND LOGIN = true"
    )


def grant_keyspace(session: Any, keyspace: str, wanted: Mapping[str, frozenset[str]]) -> None:
    """Give each role exactly ``wanted[role]`` on ``keyspace``: nothing more on it or its tables,
    nothing at all on ALL KEYSPACES. Grants come before revocations, so a running writer never
    loses a permission it keeps (the old single role had ALL PERMISSIONS; narrowed in place)."""
    ks_resource = f"<keyspace {keyspace}>"
    for role, permissions in wanted.items():
        for permission in sorted(permissions):
            session.execute(f"GRANT {permission} ON KEYSPACE {keyspace} TO {role}")
        for row in session.execute(f"LIST ALL PERMISSIONS OF {role} NORECURSIVE"):
            resource, permission = row.resource, row.permission
            if resource == ks_resource and permission not in permissions:
                session.execute(f"REVOKE {permission} ON KEYSPACE {keyspace} FROM {role}")
            elif resource == "<all keyspaces>":
                session.execute(f"REVOKE {permission} ON ALL KEYSPACES FROM {role}")
            elif resource.startswith(f"<table {keyspace}.") and permission not in permissions:
                # A table's creator gets ALL on it (AUTHORIZE included) from Cassandra itself.
                table = resource[len("<table ") : -1]
                session.execute(f"REVOKE {permission} ON TABLE {table} FROM {role}")


def retry_unauthorized(fn: Callable[[], T], timeout: float) -> T:
    """``fn()``, retried while Cassandra answers Unauthorized for at most ``timeout`` seconds:
    each node caches a role's permissions (``permissions_validity``, 2 s), so a fresh grant can
    take that long to count."""
    from cassandra import Unauthorized

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Unauthorized:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
