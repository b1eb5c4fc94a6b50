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
    int_setting,
    jars_dir,
    number_setting,
    port_setting,
    state_dir,
)

DURABILITY_MODES = ("relaxed", "strict")


@dataclass(frozen=True, kw_only=True)
class InfraConfig:
    state_dir: Path
    jars_dir: Path
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
    cassandra_port: int
    cassandra_storage_port: int
    cassandra_heap: str
    java17_home: str | None
    kafka_start_timeout: float
    cassandra_start_timeout: float
    trino_port: int = 8080
    trino_heap: str = "1G"
    trino_java_home: str | None = None
    trino_start_timeout: float = 180
    superset_port: int = 8088
    superset_start_timeout: float = 300
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
        return cls(
            state_dir=state_dir(env),
            jars_dir=jars_dir(env),
            kafka_port=kafka_port,
            kafka_controller_port=port_setting(env, "KAFKA_CONTROLLER_PORT", kafka_port + 1),
            kafka_heap=env.get("KAFKA_HEAP", "512m"),
            cassandra_port=CassandraSettings.from_env(env).port,
            cassandra_storage_port=port_setting(env, "CASSANDRA_STORAGE_PORT", 7000),
            cassandra_heap=env.get("CASSANDRA_HEAP", "1G"),
            java17_home=env.get("JAVA17_HOME") or None,
            kafka_start_timeout=number_setting(env, "KAFKA_START_TIMEOUT", 120, minimum=0),
            cassandra_start_timeout=number_setting(env, "CASSANDRA_START_TIMEOUT", 240, minimum=0),
            trino_port=port_setting(env, "TRINO_PORT", 8080),
            trino_heap=env.get("TRINO_HEAP", "1G"),
            trino_java_home=env.get("TRINO_JAVA_HOME") or None,
            trino_start_timeout=number_setting(env, "TRINO_START_TIMEOUT", 180, minimum=0),
            superset_port=port_setting(env, "SUPERSET_PORT", 8088),
            superset_start_timeout=number_setting(env, "SUPERSET_START_TIMEOUT", 300, minimum=0),
            # Beside the jar cache, outside STATE_DIR: `make clean` must not force a reinstall.
            superset_venv=Path(
                env.get("SUPERSET_VENV") or REPO_ROOT / ".cache" / "superset-venv"
            ).resolve(),
            superset_refresh_s=int_setting(env, "SUPERSET_REFRESH_S", 30, minimum=0),
            streamlit_port=port_setting(env, "STREAMLIT_PORT", 8501),
            durability=choice_setting(env, "STACK_DURABILITY", "relaxed", DURABILITY_MODES),
        )
