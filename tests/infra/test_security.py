"""Least privilege and secure defaults of the stack `python -m infra` runs (issue 12, 11-16)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from cassandra import Unauthorized

from infra.cassandra import CassandraService
from infra.config import InfraConfig
from infra.migrations import migration_files
from infra.trino import run_query
from schemas.cassandra import connect
from schemas.settings import CassandraSettings, load_credentials_file, state_dir
from tests.conftest import Stack, infra_cli, run_infra

pytestmark = pytest.mark.integration


def keyspace_exists(name: str) -> bool:
    cluster, session = CassandraService(InfraConfig.from_env()).admin_session()
    try:
        row = session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (name,)
        ).one()
    finally:
        cluster.shutdown()
    return row is not None


@pytest.fixture(scope="module")
def private_keyspace(stack: Stack) -> Iterator[str]:
    """A migrated keyspace of this module alone, dropped after it."""
    name = f"sec_{uuid.uuid4().hex[:10]}"
    run_infra("migrate", "--keyspace", name)
    yield name
    run_infra("drop-keyspace", name)


@pytest.mark.parametrize("spelling", ["{ks}", "{KS}", '"{ks}"', "  {Ks} "])
def test_drop_keyspace_refuses_every_spelling_of_the_configured_keyspace(
    private_keyspace: str, spelling: str
) -> None:
    env = {**os.environ, "CASSANDRA_KEYSPACE": private_keyspace}
    name = spelling.format(
        ks=private_keyspace, KS=private_keyspace.upper(), Ks=private_keyspace.capitalize()
    )
    result = infra_cli("drop-keyspace", name, env=env)
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip() == (
        f"infra: error: refusing to drop the configured keyspace {private_keyspace!r} "
        f"(given as {name!r})"
    )
    assert keyspace_exists(private_keyspace)


def role_session(role: str, keyspace: str | None = None):  # type: ignore[no-untyped-def]
    """A session as one of the generated roles: ``writer``, ``reader`` or ``migrator``."""
    values = load_credentials_file(state_dir() / "credentials.env")
    prefix = {
        "writer": "CASSANDRA_",
        "reader": "CASSANDRA_READER_",
        "migrator": "CASSANDRA_MIGRATOR_",
    }[role]
    settings = CassandraSettings(port=InfraConfig.from_env().cassandra_port)
    return connect(
        settings,
        username=values[f"{prefix}USERNAME"],
        password=values[f"{prefix}PASSWORD"],
        keyspace=keyspace,
    )


def permissions(role: str) -> set[tuple[str, str]]:
    """(resource, permission) granted to ``role`` itself."""
    cluster, session = CassandraService(InfraConfig.from_env()).admin_session()
    try:
        rows = session.execute(f"LIST ALL PERMISSIONS OF {role} NORECURSIVE")
        return {(row.resource, row.permission) for row in rows}
    finally:
        cluster.shutdown()


@pytest.fixture
def foreign_keyspace(stack: Stack) -> Iterator[str]:
    """Another application's keyspace on the same cluster: created by the admin, never migrated."""
    name = f"other_{uuid.uuid4().hex[:10]}"
    cluster, session = CassandraService(InfraConfig.from_env()).admin_session()
    try:
        session.execute(
            f"CREATE KEYSPACE {name} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE {name}.secrets (k text PRIMARY KEY, v text)")
        session.execute(f"INSERT INTO {name}.secrets (k, v) VALUES ('api_key', 'hunter2')")
        yield name
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {name}")
        cluster.shutdown()


def cql_denied(role: str, statement: str, keyspace: str | None = None) -> bool:
    cluster, session = role_session(role, keyspace)
    try:
        session.execute(statement)
        return False
    except Unauthorized:
        return True
    finally:
        cluster.shutdown()


def test_reader_reads_migrated_keyspaces_only_through_cql(
    private_keyspace: str, foreign_keyspace: str
) -> None:
    assert not cql_denied("reader", f"SELECT * FROM {private_keyspace}.trades LIMIT 1")
    assert cql_denied("reader", f"SELECT * FROM {foreign_keyspace}.secrets")
    assert cql_denied("reader", "SELECT * FROM system_auth.roles")
    assert cql_denied(
        "reader",
        f"INSERT INTO {private_keyspace}.collector_gaps (day, gap_start, "
        "collector_id) VALUES ('2026-01-01', 0, 'x')",
    )
    assert ("<all keyspaces>", "SELECT") not in permissions("market_reader")


def trino_select(sql: str) -> list[list[object]]:
    return run_query(InfraConfig.from_env().trino_port, sql, timeout=120).rows


def test_trino_reads_migrated_keyspaces_only(private_keyspace: str, foreign_keyspace: str) -> None:
    deadline = time.monotonic() + 30
    while True:  # Trino learns of new keyspaces from debounced schema events
        schemas = {row[0] for row in trino_select("SHOW SCHEMAS")}
        if {private_keyspace, foreign_keyspace} <= schemas or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert trino_select(f"SELECT count(*) FROM {private_keyspace}.trades") == [[0]]
    with pytest.raises(RuntimeError, match="market_reader has no SELECT permission"):
        trino_select(f"SELECT * FROM {foreign_keyspace}.secrets")
    with pytest.raises(RuntimeError):
        trino_select("SELECT * FROM system_auth.roles")


def test_writer_writes_rows_but_cannot_change_the_schema(private_keyspace: str) -> None:
    ks = private_keyspace
    assert not cql_denied(
        "writer",
        f"INSERT INTO {ks}.collector_gaps (day, gap_start, "
        "collector_id) VALUES ('2026-01-01', 0, 'x')",
    )
    assert not cql_denied("writer", f"SELECT * FROM {ks}.collector_gaps")
    for ddl in (
        f"DROP TABLE {ks}.trades",
        f"ALTER TABLE {ks}.trades ADD extra text",
        f"CREATE TABLE {ks}.extra (k int PRIMARY KEY)",
        f"DROP KEYSPACE {ks}",
    ):
        assert cql_denied("writer", ddl), ddl
    granted = {p for resource, p in permissions("market_app") if resource == f"<keyspace {ks}>"}
    assert granted == {"SELECT", "MODIFY"}


def test_market_keyspace_roles_hold_exactly_their_permissions(stack: Stack) -> None:
    ks = f"<keyspace {stack.cassandra.keyspace}>"
    on_market = {
        role: {p for resource, p in permissions(role) if resource == ks}
        for role in ("market_app", "market_reader", "market_migrator")
    }
    assert on_market == {
        "market_app": {"SELECT", "MODIFY"},
        "market_reader": {"SELECT"},
        "market_migrator": {"CREATE", "ALTER", "DROP", "SELECT", "MODIFY"},
    }
    for role in on_market:
        assert not {r for r, _ in permissions(role) if r == "<all keyspaces>"}, role


def test_migrator_applies_the_migrations(private_keyspace: str) -> None:
    cluster, session = role_session("migrator", private_keyspace)
    try:
        versions = {row.version for row in session.execute("SELECT version FROM schema_migrations")}
    finally:
        cluster.shutdown()
    assert versions == {p.name for p in migration_files()}
    assert not cql_denied("migrator", f"CREATE TABLE {private_keyspace}.t (k int PRIMARY KEY)")
