"""Infra logic that needs no running service."""

from __future__ import annotations

import dataclasses
import io
import logging
import socket
import tarfile
from pathlib import Path
from typing import Any

import pytest

from infra import java as java_module
from infra import migrations, process
from infra.config import InfraConfig
from infra.demo import DemoSettings
from infra.errors import InfraError, JavaNotFoundError
from infra.java import find_java17, find_java_at_least, java_major_version
from infra.migrations import MigrationError, apply_migrations
from infra.trino import unpack_server
from schemas.settings import SettingsError

TEMURIN = Path("/usr/lib/jvm/temurin-25-jdk-amd64")


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
    write(
        tmp_path,
        "001_a.cql",
        "-- first\nCREATE TABLE a (k int PRIMARY KEY);\nCREATE TABLE c " "(k int PRIMARY KEY);",
    )
    session = FakeSession()
    assert apply_migrations(session, "ks", tmp_path) == ["001_a.cql", "002_b.cql"]
    creates = [s for s in session.statements if s.startswith("CREATE TABLE ") and "schema" not in s]
    assert creates == [
        "CREATE TABLE a (k int PRIMARY KEY)",
        "CREATE TABLE c (k int PRIMARY KEY)",
        "CREATE TABLE b (k int PRIMARY KEY)",
    ]
    assert not [s for s in session.statements if s.startswith(("GRANT", "CREATE KEYSPACE"))]
    session.statements.clear()
    assert apply_migrations(session, "ks", tmp_path) == []
    assert not [s for s in session.statements if s.startswith("CREATE TABLE a")]


def test_editing_an_applied_migration_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "001_a.cql", "CREATE TABLE a (k int PRIMARY KEY);")
    session = FakeSession()
    apply_migrations(session, "ks", tmp_path)
    write(tmp_path, "001_a.cql", "CREATE TABLE a (k bigint PRIMARY KEY);")
    with pytest.raises(MigrationError, match="001_a.cql changed after it was applied"):
        apply_migrations(session, "ks", tmp_path)


def test_bad_keyspace_name_is_refused() -> None:
    with pytest.raises(MigrationError, match="keyspace 'a;b'"):
        apply_migrations(FakeSession(), "a;b")
    with pytest.raises(MigrationError, match="keyspace 'a;b'"):
        migrations.create_keyspace(FakeSession(), "a;b")


def test_java17_home_without_java_is_named(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match=f"JAVA17_HOME={tmp_path} has no bin/java"):
        find_java17(str(tmp_path))


@pytest.mark.skipif(not TEMURIN.exists(), reason="no Temurin 25 JDK on this machine")
def test_java17_home_with_wrong_version_is_named() -> None:
    with pytest.raises(JavaNotFoundError, match="is Java 25; Cassandra 5.0 needs Java 17"):
        find_java17(str(TEMURIN))


JAVA17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")


@pytest.mark.skipif(not JAVA17.exists(), reason="no OpenJDK 17 at the Debian path")
def test_trino_java_home_too_old_is_named() -> None:
    with pytest.raises(
        JavaNotFoundError, match="TRINO_JAVA_HOME=.* is Java 17; Trino 476 needs " "Java 24\\+"
    ):
        find_java_at_least(24, str(JAVA17), "TRINO_JAVA_HOME", "Trino 476")


def test_no_new_enough_java_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(java_module, "JVM_DIR", tmp_path)
    with pytest.raises(
        JavaNotFoundError,
        match=f"no Java 24\\+ found under {tmp_path} for " "Trino 476; .* or set TRINO_JAVA_HOME",
    ):
        find_java_at_least(24, None, "TRINO_JAVA_HOME", "Trino 476")


@pytest.mark.skipif(not TEMURIN.exists(), reason="no Temurin 25 JDK on this machine")
def test_newest_java_under_jvm_dir_is_found() -> None:
    java = find_java_at_least(24, None, "TRINO_JAVA_HOME", "Trino 476")
    assert java_major_version(java) >= 24


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    if link is None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        info.type, info.linkname = tarfile.LNKTYPE, link
        tar.addfile(info)


def test_unpack_keeps_lib_and_chosen_plugins_with_links_into_dropped_ones(tmp_path: Path) -> None:
    tarball = tmp_path / "server.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        _add(tar, "srv-1/lib/core.jar", b"core")
        _add(tar, "srv-1/bin/launcher", b"#!")
        _add(tar, "srv-1/plugin/bigquery/shared.jar", b"shared")
        _add(tar, "srv-1/plugin/hive/hive.jar", b"hive")
        _add(tar, "srv-1/plugin/cassandra/driver.jar", b"driver")
        _add(tar, "srv-1/plugin/cassandra/shared.jar", link="srv-1/plugin/bigquery/shared.jar")
        _add(tar, "srv-1/plugin/cassandra/core.jar", link="srv-1/lib/core.jar")
    dest = tmp_path / "server"
    unpack_server(tarball, dest, plugins=("cassandra",))
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [
        "lib/core.jar",
        "plugin/cassandra/core.jar",
        "plugin/cassandra/driver.jar",
        "plugin/cassandra/shared.jar",
    ]
    assert (dest / "plugin/cassandra/shared.jar").read_bytes() == b"shared"
    assert not (tmp_path / "server.partial").exists()


def test_trino_settings_are_read() -> None:
    config = InfraConfig.from_env({"TRINO_PORT": "8181", "TRINO_HEAP": "768m"})
    assert (config.trino_port, config.trino_heap, config.trino_start_timeout) == (8181, "768m", 180)
    with pytest.raises(SettingsError, match="TRINO_PORT='http' is not a port number"):
        InfraConfig.from_env({"TRINO_PORT": "http"})


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
        ({"KAFKA_START_TIMEOUT": "soon"}, "KAFKA_START_TIMEOUT='soon': expected a duration"),
        ({"CASSANDRA_START_TIMEOUT": "-1"}, "CASSANDRA_START_TIMEOUT='-1': expected a duration"),
        ({"KAFKA_CONTROLLER_PORT": "0"}, "KAFKA_CONTROLLER_PORT='0' is outside 1..65535"),
    ],
)
def test_bad_infra_settings_name_variable_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        InfraConfig.from_env(env)


def test_infra_timeouts_are_read() -> None:
    config = InfraConfig.from_env({"KAFKA_START_TIMEOUT": "30", "CASSANDRA_START_TIMEOUT": "90.5"})
    assert (config.kafka_start_timeout, config.cassandra_start_timeout) == (30.0, 90.5)
    config = InfraConfig.from_env({"TRINO_START_TIMEOUT": "3m", "KAFKA_HEAP": "768M"})
    assert (config.trino_start_timeout, config.kafka_heap) == (180.0, "768m")


def test_infra_defaults_are_declared_once(tmp_path: Path) -> None:
    config = InfraConfig.from_env({"STATE_DIR": str(tmp_path)})
    declared = InfraConfig(
        state_dir=config.state_dir,
        jars_dir=config.jars_dir,
        kafka_port=config.kafka_port,
        kafka_controller_port=config.kafka_port + 1,
    )
    assert config == dataclasses.replace(declared, superset_venv=config.superset_venv)


def test_bad_heaps_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="^CASSANDRA_HEAP='lots': expected a size like"):
        InfraConfig.from_env({"CASSANDRA_HEAP": "lots"})


def test_demo_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert DemoSettings.from_env({}) == DemoSettings()
    assert DemoSettings.from_env({"DEMO_DURATION": "2m"}).seconds == 120.0
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        assert DemoSettings.from_env({"DEMO_SECONDS": "60"}).seconds == 60.0
    assert "DEMO_SECONDS is deprecated, set DEMO_DURATION instead" in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEMO_DURATION": "10"}, "DEMO_DURATION='10' must be at least 30 s"),
        (
            {"DEMO_DURATION": "a while"},
            "DEMO_DURATION='a while': expected a duration like "
            "'10 seconds', '500 ms', '5m' or '6h'",
        ),
        ({"DEMO_SECONDS": "10"}, "DEMO_SECONDS='10' must be at least 30 s"),  # the old name
        (
            {"DEMO_SECONDS": "60", "DEMO_DURATION": "2m"},
            "DEMO_DURATION='2m' and DEMO_SECONDS='60' are both set: DEMO_SECONDS is the old "
            "name of DEMO_DURATION; unset it",
        ),
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


def test_cassandra_first_start_keeps_other_services_secrets(tmp_path: Path) -> None:
    from infra.cassandra import CassandraService
    from schemas.settings import load_credentials_file

    config = InfraConfig.from_env({"STATE_DIR": str(tmp_path)})
    shared = tmp_path / "credentials.env"
    shared.write_text("SUPERSET_ADMIN_USER=admin\nSUPERSET_ADMIN_PASSWORD=s3cret-value\n")
    service = CassandraService(config)
    service.home.mkdir(parents=True)
    service.prepare(Path("/nonexistent/java"), Path("/nonexistent/lib"))
    values = load_credentials_file(shared)
    assert values["SUPERSET_ADMIN_PASSWORD"] == "s3cret-value"
    assert values["CASSANDRA_PASSWORD"]
    assert shared.stat().st_mode & 0o777 == 0o600


def test_env_file_rewritten_in_place_becomes_private(tmp_path: Path) -> None:
    from infra.cassandra import write_env_file

    path = tmp_path / "credentials.env"
    path.write_text("A=1\n")
    path.chmod(0o644)
    write_env_file(path, {"A": "2"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert "A=2\n" in path.read_text()


class FakeService:
    """What ``up`` uses of a service; records what happens to it in ``calls``."""

    def __init__(self, name: str, calls: list[str], fails: bool = False) -> None:
        self.name, self.calls, self.fails = name, calls, fails
        self.ports = {"main": 1}
        self.start_timeout = 1.0

    def start(self) -> bool:
        return True

    def wait_ready(self, timeout: float) -> float:
        return 0.0

    def after_ready(self) -> None:
        if self.fails:
            raise InfraError(f"{self.name}: import failed")
        self.calls.append(f"ready {self.name}")

    def pid(self) -> int:
        return 1

    def stop(self) -> bool:
        self.calls.append(f"stop {self.name}")
        return True


def test_up_migrates_the_keyspace_before_the_services_that_read_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a fresh stack Superset's import queried ``market`` before it existed."""
    import infra.__main__ as cli

    calls: list[str] = []
    names = ("kafka", "cassandra", "trino", "superset", "streamlit")
    monkeypatch.setattr(cli, "services", lambda config: {n: FakeService(n, calls) for n in names})
    monkeypatch.setattr(cli, "migrate", lambda config, keyspace: calls.append("migrate"))
    cli.up(InfraConfig.from_env({"STATE_DIR": str(tmp_path)}))
    assert calls.index("migrate") == calls.index("ready cassandra") + 1
    assert calls.index("migrate") < calls.index("ready trino") < calls.index("ready superset")


def test_up_stops_what_it_started_when_a_service_fails_after_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import infra.__main__ as cli

    calls: list[str] = []
    monkeypatch.setattr(
        cli,
        "services",
        lambda config: {
            "kafka": FakeService("kafka", calls),
            "superset": FakeService("superset", calls, True),
        },
    )
    with pytest.raises(InfraError, match="superset: import failed"):
        cli.up(InfraConfig.from_env({"STATE_DIR": str(tmp_path)}))
    stopped = [c.removeprefix("stop ") for c in calls if c.startswith("stop ")]
    assert stopped == ["kafka", "superset"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("market", "market"),
        ("MARKET", "market"),
        ("Market", "market"),
        ('"market"', "market"),
        ('"Market"', "Market"),
        ("  test_1 ", "test_1"),
    ],
)
def test_cql_identifier_is_normalised_like_cassandra(text: str, expected: str) -> None:
    assert migrations.cql_identifier(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        '""',
        "1abc",
        "market; DROP KEYSPACE x",
        '"mar"ket"',
        "a-b",
        "x" * 49,
        '"a b"',
    ],
)
def test_cql_identifier_refuses_what_is_not_a_keyspace_name(text: str) -> None:
    with pytest.raises(MigrationError, match="keyspace"):
        migrations.cql_identifier(text)


class FakeAuthSession:
    """What bootstrap_auth sees of Cassandra: the default superuser still enabled, as after a crash
    between creating the admin role and disabling the default one."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str, params: Any = None, timeout: float | None = None) -> Any:
        self.statements.append(statement)
        if "FROM system_auth.roles" in statement:
            return [type("Row", (), {"can_login": True, "is_superuser": True})()]
        return []


def test_bootstrap_disables_the_default_superuser_even_when_the_admin_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.cassandra import CassandraService

    service = CassandraService(InfraConfig.from_env({"STATE_DIR": str(tmp_path)}))
    service.home.mkdir(parents=True)
    service.prepare(Path("/nonexistent/java"), Path("/nonexistent/lib"))
    session = FakeAuthSession()
    cluster = type("Cluster", (), {"shutdown": lambda self: None})()
    monkeypatch.setattr(service, "_try_query", lambda user, password: True)  # admin logs in
    monkeypatch.setattr(service, "admin_session", lambda keyspace=None: (cluster, session))
    service.bootstrap_auth()
    disabled = [s for s in session.statements if s.startswith("ALTER ROLE cassandra ")]
    assert len(disabled) == 1
    assert "SUPERUSER = false" in disabled[0] and "LOGIN = false" in disabled[0]


def test_every_role_gets_a_generated_private_secret_in_credentials_env(tmp_path: Path) -> None:
    from infra.cassandra import CassandraService
    from schemas.settings import load_credentials_file

    service = CassandraService(InfraConfig.from_env({"STATE_DIR": str(tmp_path)}))
    service.home.mkdir(parents=True)
    service.prepare(Path("/nonexistent/java"), Path("/nonexistent/lib"))
    values = load_credentials_file(tmp_path / "credentials.env")
    assert (
        values["CASSANDRA_USERNAME"],
        values["CASSANDRA_READER_USERNAME"],
        values["CASSANDRA_MIGRATOR_USERNAME"],
    ) == ("market_app", "market_reader", "market_migrator")
    passwords = {
        values[k]
        for k in ("CASSANDRA_PASSWORD", "CASSANDRA_READER_PASSWORD", "CASSANDRA_MIGRATOR_PASSWORD")
    }
    assert len(passwords) == 3 and all(len(p) >= 24 for p in passwords)
    assert (tmp_path / "credentials.env").stat().st_mode & 0o777 == 0o600
    assert service.reader_credentials() == ("market_reader", values["CASSANDRA_READER_PASSWORD"])


def test_a_reader_secret_from_an_older_state_dir_is_kept(tmp_path: Path) -> None:
    from infra.cassandra import CassandraService, write_env_file

    service = CassandraService(InfraConfig.from_env({"STATE_DIR": str(tmp_path)}))
    write_env_file(
        service.home / "reader.env",
        {"CASSANDRA_USERNAME": "market_reader", "CASSANDRA_PASSWORD": "older-secret"},
    )
    assert service.reader_credentials() == ("market_reader", "older-secret")
    assert not (service.home / "reader.env").exists()


def test_each_component_reads_cassandra_with_its_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gbm_analysis.__main__ as gbm_main
    from collector.config import CollectorConfig
    from stream_processor.config import StreamSettings

    (tmp_path / "credentials.env").write_text(
        "CASSANDRA_USERNAME=market_app\nCASSANDRA_PASSWORD=w\n"
        "CASSANDRA_READER_USERNAME=market_reader\nCASSANDRA_READER_PASSWORD=r\n"
    )
    for name in (
        "CASSANDRA_USERNAME",
        "CASSANDRA_PASSWORD",
        "CASSANDRA_READER_USERNAME",
        "CASSANDRA_READER_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    used: dict[str, str | None] = {}

    def record(command: str):  # type: ignore[no-untyped-def]
        def fake(*args: Any) -> int:
            used[command] = next(a for a in args if hasattr(a, "keyspace")).username
            return 0

        return fake

    for command in ("serve", "run", "backtest"):
        monkeypatch.setattr(gbm_main, f"_{command}", record(command))
    for argv in (["serve"], ["run", "--once"], ["backtest"]):
        assert gbm_main.main(argv) == 0
    assert used == {"serve": "market_reader", "run": "market_app", "backtest": "market_app"}
    assert StreamSettings.from_env().cassandra.username == "market_app"
    collector = CollectorConfig.from_env(
        {"STATE_DIR": str(tmp_path), "FINNHUB_WS_URL": "ws://127.0.0.1:8765"}
    )
    assert collector.cassandra.username == "market_app"
