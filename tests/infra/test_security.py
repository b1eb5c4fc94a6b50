"""Least privilege and secure defaults of the stack `python -m infra` runs (issue 12, 11-16)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from infra.cassandra import CassandraService
from infra.config import InfraConfig
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


@pytest.fixture
def private_keyspace(stack: Stack) -> Iterator[str]:
    """A migrated keyspace of this test alone, dropped after it."""
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
