"""The cluster topology for the tests that need it (``make test-cluster``): brought up once per
session with ``python -m infra up --topology cluster`` under STATE_DIR (``.state-cluster`` from
the Makefile), and stopped again at the end if this session started it (KEEP_STACK=1 keeps it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.cluster import ClusterTrino, cluster_services
from infra.config import InfraConfig
from infra.topology import ClusterPlan
from schemas.settings import CassandraSettings, KafkaSettings, state_dir
from tests.conftest import Stack, infra_cli, run_infra

# What the cluster topology needs beyond what is in use (its JVMs' heaps and off-heap, the
# executors and the driver): below this, starting it would push the host into swap or OOM.
MIN_AVAILABLE_GIB = 10


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def cluster_env() -> dict[str, str]:
    return {**os.environ, "STATE_DIR": str(state_dir()), "STACK_TOPOLOGY": "cluster"}


def failover_processes(plan: ClusterPlan) -> list[str]:
    """The cluster's processes the failover test uses: all but Trino, which it never queries
    (it reads Cassandra directly). Trino's JVM is the largest of the cluster and its start
    takes most CPU, on the same two cores as test-stack when ``make test`` runs both."""
    every = cluster_services(InfraConfig.from_env(cluster_env()), plan)
    return [name for name, process in every.items() if not isinstance(process, ClusterTrino)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Stack]:
    """The running cluster topology (without Trino when this session starts it:
    :func:`failover_processes`); the session's environment points our services at it (``python
    -m infra env``) while it runs."""
    env = cluster_env()
    was_running = infra_cli("status", env=env).returncode == 0
    if not was_running and available_gib() < MIN_AVAILABLE_GIB:
        pytest.skip(f"the cluster topology needs {MIN_AVAILABLE_GIB} GiB available")
    plan = ClusterPlan.from_env(env)
    run_infra("up", *failover_processes(plan), env=env, timeout=1200)
    saved = dict(os.environ)
    os.environ.update({**plan.client_env(), "STATE_DIR": env["STATE_DIR"]})
    try:
        yield Stack(
            kafka=KafkaSettings(bootstrap_servers=plan.bootstrap_servers),
            cassandra=CassandraSettings.from_env(),
            state_dir=state_dir(),
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if not was_running and os.environ.get("KEEP_STACK") != "1":
            run_infra("down", env=env)
