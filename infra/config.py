"""Infra settings from the environment; every port binds to 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from schemas.settings import (
    REPO_ROOT,
    CassandraSettings,
    KafkaSettings,
    choice_setting,
    env_value,
    jars_dir,
    jvm_size_setting,
    port_setting,
    seconds_setting,
    state_dir,
)

DURABILITY_MODES = ("relaxed", "strict")


@dataclass(frozen=True, kw_only=True)
class InfraConfig:
    state_dir: Path
    jars_dir: Path
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str = "512m"
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    cassandra_heap: str = "1G"
    java17_home: str | None = None
    kafka_start_timeout: float = 120
    cassandra_start_timeout: float = 240
    trino_port: int = 8080
    trino_heap: str = "1G"
    trino_java_home: str | None = None
    trino_start_timeout: float = 180
    superset_port: int = 8088
    superset_start_timeout: float = 300
    # Beside the jar cache, outside STATE_DIR: `make clean` must not force a reinstall.
    superset_venv: Path = REPO_ROOT / ".cache" / "superset-venv"
    superset_refresh_s: int = 30
    streamlit_port: int = 8501
    # "relaxed": Cassandra syncs its commitlog every 10 s and Kafka leaves flushing to the OS
    # (a host crash can lose what was acknowledged since); "strict": both fsync before they
    # acknowledge. See README, Durability.
    durability: str = "relaxed"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InfraConfig:
        env = os.environ if env is None else env
        kafka_port = KafkaSettings.from_env(env).first_port

        def seconds(name: str, default: float) -> float:
            return seconds_setting(env, name, default)

        return cls(
            state_dir=state_dir(env),
            jars_dir=jars_dir(env),
            kafka_port=kafka_port,
            kafka_controller_port=port_setting(env, "KAFKA_CONTROLLER_PORT", kafka_port + 1),
            kafka_heap=jvm_size_setting(env, "KAFKA_HEAP", cls.kafka_heap),
            cassandra_port=CassandraSettings.from_env(env).port,
            cassandra_storage_port=port_setting(
                env, "CASSANDRA_STORAGE_PORT", cls.cassandra_storage_port
            ),
            cassandra_heap=jvm_size_setting(env, "CASSANDRA_HEAP", cls.cassandra_heap),
            java17_home=env_value(env, "JAVA17_HOME"),
            kafka_start_timeout=seconds("KAFKA_START_TIMEOUT", cls.kafka_start_timeout),
            cassandra_start_timeout=seconds("CASSANDRA_START_TIMEOUT", cls.cassandra_start_timeout),
            trino_port=port_setting(env, "TRINO_PORT", cls.trino_port),
            trino_heap=jvm_size_setting(env, "TRINO_HEAP", cls.trino_heap),
            trino_java_home=env_value(env, "TRINO_JAVA_HOME"),
            trino_start_timeout=seconds("TRINO_START_TIMEOUT", cls.trino_start_timeout),
            superset_port=port_setting(env, "SUPERSET_PORT", cls.superset_port),
            superset_start_timeout=seconds("SUPERSET_START_TIMEOUT", cls.superset_start_timeout),
            superset_venv=Path(env_value(env, "SUPERSET_VENV") or cls.superset_venv).resolve(),
            # Superset's refresh frequency is whole seconds
            superset_refresh_s=round(seconds("SUPERSET_REFRESH", cls.superset_refresh_s)),
            streamlit_port=port_setting(env, "STREAMLIT_PORT", cls.streamlit_port),
            durability=choice_setting(env, "STACK_DURABILITY", cls.durability, DURABILITY_MODES),
        )
