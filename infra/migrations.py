"""Versioned, idempotent CQL migrations: each file in schemas/cql applied once, in name order,
and recorded with its checksum in ``<keyspace>.schema_migrations``."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from infra.errors import MigrationError
from schemas.contracts import CQL_DIR

logger = logging.getLogger(__name__)

KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
# Cassandra's own keyspaces: no command of ours may drop or migrate them.
SYSTEM_KEYSPACES = frozenset(
    {
        "system",
        "system_auth",
        "system_schema",
        "system_distributed",
        "system_traces",
        "system_views",
        "system_virtual_schema",
        "system_cluster_metadata",
    }
)


def cql_identifier(text: str) -> str:
    """The keyspace name Cassandra resolves ``text`` to: an unquoted identifier is folded to lower
    case, a double-quoted one is taken as it is. Comparing names as typed let ``MARKET`` or
    ``"market"`` past a guard on ``market``.

    :raises MigrationError: when ``text`` is not a keyspace name (letters, digits, _; max 48).

    >>> cql_identifier("MARKET"), cql_identifier('"market"'), cql_identifier('"Market"')
    ('market', 'market', 'Market')
    """
    name = text.strip()
    quoted = len(name) >= 2 and name[0] == name[-1] == '"'
    name = name[1:-1] if quoted else name.lower()
    if not KEYSPACE_RE.match(name):
        raise MigrationError(f"keyspace {text!r}: use letters, digits and _ (max 48)")
    return name


def quote_identifier(name: str) -> str:
    """``name`` as a CQL identifier that keeps its case (``Market`` stays ``Market``)."""
    return '"' + name.replace('"', '""') + '"'


def split_statements(cql: str) -> list[str]:
    """Split a CQL file into statements. Our migration files keep ``;`` and ``--`` out of
    string literals, which keeps this split exact.

    >>> split_statements("-- a; comment\\nCREATE TABLE t (k int PRIMARY KEY);\\nINSERT INTO t (k) "
    ...                  "VALUES (1); -- tail")
    ['CREATE TABLE t (k int PRIMARY KEY)', 'INSERT INTO t (k) VALUES (1)']
    """
    text = "\n".join(line.split("--", 1)[0] for line in cql.splitlines())
    return [" ".join(part.split()) for part in text.split(";") if part.strip()]


def migration_files(folder: Path = CQL_DIR) -> list[Path]:
    return sorted(folder.glob("*.cql"))


SINGLE_NODE_REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def create_keyspace(
    session: Any, keyspace: str, replication: str = SINGLE_NODE_REPLICATION
) -> None:
    """Create ``keyspace`` if needed (as the admin: creating a keyspace needs CREATE on ALL
    KEYSPACES, which no application role holds), with ``replication``: one copy on the
    single-node stack, NetworkTopologyStrategy with three on the cluster topology
    (``infra.topology.keyspace_replication``)."""
    if not KEYSPACE_RE.match(keyspace):
        raise MigrationError(f"keyspace {keyspace!r}: use letters, digits and _ (max 48)")
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}", timeout=60
    )


def apply_migrations(session: Any, keyspace: str, folder: Path = CQL_DIR) -> list[str]:
    """Apply the pending files to ``keyspace`` (which exists), return the names applied now.
    ``session`` is the migration role's: DDL on the keyspace and nothing else."""
    if not KEYSPACE_RE.match(keyspace):
        raise MigrationError(f"keyspace {keyspace!r}: use letters, digits and _ (max 48)")
    session.set_keyspace(keyspace)
    session.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version text PRIMARY KEY, checksum text, applied_at timestamp)"
    )
    applied = {
        row.version: row.checksum
        for row in session.execute("SELECT version, checksum FROM schema_migrations")
    }
    done: list[str] = []
    for path in migration_files(folder):
        text = path.read_text(encoding="utf-8")
        checksum = hashlib.sha256(text.encode()).hexdigest()
        if path.name in applied:
            if applied[path.name] != checksum:
                raise MigrationError(
                    f"{path.name} changed after it was applied to {keyspace}; add a new "
                    "migration file instead of editing an applied one"
                )
            continue
        for statement in split_statements(text):
            session.execute(statement, timeout=60)
        session.execute(
            "INSERT INTO schema_migrations (version, checksum, applied_at) "
            "VALUES (%s, %s, toTimestamp(now()))",
            (path.name, checksum),
        )
        logger.info("applied %s to %s", path.name, keyspace)
        done.append(path.name)
    return done
