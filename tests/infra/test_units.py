"""Infra logic that needs no running service."""

from __future__ import annotations

import doctest
import socket
from pathlib import Path
from typing import Any

import pytest

from infra import migrations, process
from infra.config import InfraConfig
from infra.demo import DemoSettings
from infra.errors import JavaNotFoundError
from infra.java import find_java17
from infra.migrations import MigrationError, apply_migrations
from schemas.settings import SettingsError

TEMURIN = Path("/usr/lib/jvm/temurin-25-jdk-amd64")


def test_migration_docstrings() -> None:
    assert doctest.testmod(migrations).failed == 0


class FakeRow:
    def __init__(self, version: str, checksum: str) -> None:
        self.version, self.checksum = version, checksum


class FakeSession:
    """Records statements; remembers schema_migrations inserts like Cassandra would."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.rows: dict[str, str] = {}
        self.keyspace: str | None = None

    def set_keyspace(self, keyspace: str) -> None:
        self.keyspace = keyspace

    def execute(self, statement: str, params: Any = None, timeout: float | None = None) -> Any:
        self.statements.append(statement)
        if statement.startswith("SELECT version"):
            return [FakeRow(v, c) for v, c in self.rows.items()]
        if statement.startswith("INSERT INTO schema_migrations"):
            self.rows[params[0]] = params[1]
        return []


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


def test_each_migration_applies_once_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "002_b.cql", "CREATE TABLE b (k int PRIMARY KEY);")
    write(tmp_path, "001_a.cql", "-- first\nCREATE TABLE a (k int PRIMARY KEY);\nCREATE TABLE c "
                                 "(k int PRIMARY KEY);")
    session = FakeSession()
    assert apply_migrations(session, "ks", "app", tmp_path) == ["001_a.cql", "002_b.cql"]
    creates = [s for s in session.statements if s.startswith("CREATE TABLE ") and "schema" not in s]
    assert creates == ["CREATE TABLE a (k int PRIMARY KEY)", "CREATE TABLE c (k int PRIMARY KEY)",
                       "CREATE TABLE b (k int PRIMARY KEY)"]
    assert any(s == "GRANT ALL PERMISSIONS ON KEYSPACE ks TO app" for s in session.statements)
    session.statements.clear()
    assert apply_migrations(session, "ks", "app", tmp_path) == []
    assert not [s for s in session.statements if s.startswith("CREATE TABLE a")]


def test_editing_an_applied_migration_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "001_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    session = FakeSession()
    apply_migrations(session, "ks", None, tmp_path)
    write(tmp_path, "001_a.cql", "CREATE TABLE a (k bigint PRIMARY KEY);")
    with pytest.raises(MigrationError, match="001_a.cql changed after it was applied"):
        apply_migrations(session, "ks", None, tmp_path)


def test_bad_keyspace_name_is_refused() -> None:
    with pytest.raises(MigrationError, match="keyspace 'a;b'"):
        apply_migrations(FakeSession(), "a;b", None)


def test_java17_home_without_java_is_named(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match=f"JAVA17_HOME={tmp_path} has no bin/java"):
        find_java17(str(tmp_path))


@pytest.mark.skipif(not TEMURIN.exists(), reason="no Temurin 25 JDK on this machine")
def test_java17_home_with_wrong_version_is_named() -> None:
    with pytest.raises(JavaNotFoundError, match="is Java 25; Cassandra 5.0 needs Java 17"):
        find_java17(str(TEMURIN))


def test_port_checks_see_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert process.port_in_use(port)
        assert not process.port_bindable(port)
    assert process.port_bindable(port)


def test_read_pid_ignores_stale_and_foreign_pids(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    pid_file.write_text("999999999")
    assert process.read_pid(pid_file, "kafka.Kafka") is None
    import os

    pid_file.write_text(str(os.getpid()))
    assert process.read_pid(pid_file, "kafka.Kafka") is None  # alive, but not Kafka
    assert process.read_pid(pid_file, "python") == os.getpid()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_START_TIMEOUT": "soon"}, "KAFKA_START_TIMEOUT='soon' is not a number"),
        ({"CASSANDRA_START_TIMEOUT": "-1"}, "CASSANDRA_START_TIMEOUT='-1' must be a finite"),
        ({"KAFKA_CONTROLLER_PORT": "0"}, "KAFKA_CONTROLLER_PORT='0' is outside 1..65535"),
    ],
)
def test_bad_infra_settings_name_variable_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        InfraConfig.from_env(env)


def test_infra_timeouts_are_read() -> None:
    config = InfraConfig.from_env({"KAFKA_START_TIMEOUT": "30", "CASSANDRA_START_TIMEOUT": "90.5"})
    assert (config.kafka_start_timeout, config.cassandra_start_timeout) == (30.0, 90.5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEMO_SECONDS": "10"}, "DEMO_SECONDS='10' must be a finite number >= 30"),
        ({"DEMO_RATE": "fast"}, "DEMO_RATE='fast' is not a number"),
        ({"FEED_PORT": "http"}, "FEED_PORT='http' is not a port number"),
    ],
)
def test_bad_demo_settings_name_variable_and_value(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        DemoSettings.from_env()
    assert str(info.value) == message
