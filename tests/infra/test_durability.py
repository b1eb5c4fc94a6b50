"""STACK_DURABILITY: what each mode asks of Cassandra and Kafka, and that the running engines
were started with what the setting says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.cassandra import COMMITLOG_SYNC, CassandraService
from infra.config import InfraConfig
from infra.kafka import LOG_FLUSH, KafkaService
from infra.service import render
from schemas.settings import SettingsError
from tests.conftest import Stack

# The single-node stack's own values for the templates' other placeholders.
CONFIG = InfraConfig.from_env({"STATE_DIR": "/nonexistent"})


def rendered_yaml(mode: str) -> str:
    return render(
        "cassandra.yaml",
        **CassandraService(CONFIG).template_values(),
        data_dir="/d",
        commitlog_sync=COMMITLOG_SYNC[mode],
    )


def test_strict_mode_syncs_before_acknowledging() -> None:
    assert "commitlog_sync: group\n" in rendered_yaml("strict")
    assert "commitlog_sync: periodic\n" in rendered_yaml("relaxed")
    strict_kafka = render(
        "kafka-server.properties",
        **KafkaService(CONFIG).template_values(),
        data_dir="/d",
        log_flush=LOG_FLUSH["strict"],
    )
    assert "\nlog.flush.interval.messages=1" in strict_kafka
    for text in (strict_kafka, rendered_yaml("strict")):
        settings = [line for line in text.splitlines() if not line.startswith("#")]
        assert not [line for line in settings if "${" in line]


def test_the_mode_is_read_and_checked(tmp_path: Path) -> None:
    env = {**os.environ, "STATE_DIR": str(tmp_path)}
    assert InfraConfig.from_env(env).durability == "relaxed"
    assert InfraConfig.from_env({**env, "STACK_DURABILITY": "STRICT"}).durability == "strict"
    with pytest.raises(SettingsError, match="STACK_DURABILITY='fsync': allowed values"):
        InfraConfig.from_env({**env, "STACK_DURABILITY": "fsync"})


@pytest.mark.integration
def test_the_running_engines_use_the_configured_mode(stack: Stack) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    config = InfraConfig.from_env()
    cluster, session = CassandraService(config).admin_session()
    try:
        row = session.execute(
            "SELECT value FROM system_views.settings " "WHERE name = 'commitlog_sync'"
        ).one()
    finally:
        cluster.shutdown()
    assert row.value == {"relaxed": "periodic", "strict": "group"}[config.durability]

    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers})
    (future,) = admin.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "1")]).values()
    flush = future.result(timeout=30)["log.flush.interval.messages"].value
    assert flush == {"relaxed": str(2**63 - 1), "strict": "1"}[config.durability]
