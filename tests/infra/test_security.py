"""Least privilege and secure defaults of the stack `python -m infra` runs (issue 12, 11-16)."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra import Unauthorized
from cassandra.cluster import NoHostAvailable

from infra.__main__ import services
from infra.cassandra import CassandraService
from infra.config import InfraConfig
from infra.errors import TrinoQueryError
from infra.migrations import migration_files
from infra.pipeline import pipeline_steps
from infra.roles import disable_default_superuser
from infra.superset import SupersetService
from infra.supervisor import Supervisor
from infra.trino import CATALOG, TrinoService, run_query
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings, load_credentials_file, state_dir
from tests.conftest import Stack, infra_cli

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
def private_keyspace(module_keyspace: CassandraSettings) -> str:
    """A migrated keyspace of this module alone, dropped after it."""
    return module_keyspace.keyspace


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
    with pytest.raises(TrinoQueryError, match="market_reader has no SELECT permission"):
        trino_select(f"SELECT * FROM {foreign_keyspace}.secrets")
    with pytest.raises(TrinoQueryError):
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


def stack_pids(state: Path) -> set[int]:
    """Every process of the stack and their children (gunicorn's workers, ...): supervisord,
    each service and each of the demo's pipeline steps that runs."""
    config = InfraConfig.from_env()
    roots = {svc.pid() for svc in services(config).values()}
    roots |= {step.pid() for step in pipeline_steps(config).values()}
    supervisord = state / "supervisor" / "supervisord.pid"
    if supervisord.exists():
        roots.add(int(supervisord.read_text().split()[0]))
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name is in parentheses and may hold spaces: split after it.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            parents[int(entry.name)] = int(fields[1])
    pids = {pid for pid in roots if pid is not None and pid in parents}
    while True:
        more = {pid for pid, parent in parents.items() if parent in pids} - pids
        if not more:
            return pids
        pids |= more


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def decode_address(hex_address: str) -> tuple[str, int]:
    """/proc/net address ``0100007F:1F90`` -> ('127.0.0.1', 8080); IPv6 in four 32-bit words."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words), int(port, 16)


def bound_sockets() -> dict[str, tuple[str, str, int]]:
    """inode -> (protocol, address, port) of every listening TCP and every bound UDP socket."""
    found = {}
    for proto, listening in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == listening:
                found[fields[9]] = (proto, *decode_address(fields[1]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_decode_proc_net_addresses() -> None:
    assert decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert decode_address("0000000000000000FFFF00000100007F:2384") == ("::ffff:127.0.0.1", 9092)
    assert decode_address("00000000000000000000000001000000:0050") == ("::1", 80)
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1")


def test_every_socket_the_stack_listens_on_is_on_loopback(stack: Stack) -> None:
    sockets = bound_sockets()
    listening = {}
    for pid in stack_pids(stack.state_dir):
        try:
            inodes = socket_inodes(pid)
        except OSError:  # exited meanwhile
            continue
        for inode in inodes & sockets.keys():
            listening[sockets[inode]] = pid
    config = InfraConfig.from_env()
    ports = {port for _, _, port in listening}
    expected = {
        config.cassandra_port,
        config.cassandra_storage_port,
        config.trino_port,
        config.superset_port,
        config.streamlit_port,
        stack.kafka.first_port,
    }
    assert expected <= ports, f"the stack's own ports were not found: {sorted(listening)}"
    exposed = {s: pid for s, pid in listening.items() if not is_loopback(s[1])}
    assert not exposed, f"listening beyond loopback (socket: pid): {exposed}"


def secret_files(state: Path) -> list[Path]:
    """Every file that holds a password, a key or password hashes."""
    config = InfraConfig.from_env()
    superset = SupersetService(config)
    return [
        state / "credentials.env",  # the generated passwords
        CassandraService(config).admin_file,
        TrinoService(config).etc / "catalog" / f"{CATALOG}.properties",  # the reader's password
        superset.secret_key_file,
        superset.data_dir / "superset.db",  # login password hashes, Flask sessions
        *sorted((state / "supervisor" / "programs").glob("*.json")),  # programs' environments
    ]


def test_secret_files_are_private(stack: Stack) -> None:
    files = secret_files(stack.state_dir)
    assert len(files) >= 6 and all(path.exists() for path in files), files
    loose = {
        str(p): oct(stat.S_IMODE(p.stat().st_mode))
        for p in files
        if stat.S_IMODE(p.stat().st_mode) != 0o600
    }
    assert not loose, f"secret files readable by others: {loose}"
    credentials = load_credentials_file(stack.state_dir / "credentials.env")
    assert {
        "CASSANDRA_PASSWORD",
        "CASSANDRA_READER_PASSWORD",
        "CASSANDRA_MIGRATOR_PASSWORD",
    } <= credentials.keys()


def can_log_in(user: str, password: str) -> bool:
    settings = CassandraSettings(port=InfraConfig.from_env().cassandra_port)
    try:
        cluster, _ = connect(settings, username=user, password=password, connect_timeout=5)
    except NoHostAvailable:  # the driver wraps AuthenticationFailed per host
        return False
    cluster.shutdown()
    return True


def test_a_default_superuser_left_enabled_is_disabled(stack: Stack) -> None:
    """The crash case on a role of this test's own (re-enabling the real ``cassandra`` role on
    the shared stack would open it for everyone meanwhile)."""
    role, password = f"sec_su_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    cluster, session = CassandraService(InfraConfig.from_env()).admin_session()
    try:
        session.execute(
            f"CREATE ROLE {role} WITH PASSWORD = '{password}' "
            "AND LOGIN = true AND SUPERUSER = true"
        )
        assert can_log_in(role, password)
        assert disable_default_superuser(session, role) is True
        row = session.execute(
            "SELECT can_login, is_superuser FROM system_auth.roles " "WHERE role = %s", (role,)
        ).one()
        assert (row.can_login, row.is_superuser) == (False, False)
        # Cassandra caches roles and credentials for 2 s each (roles_validity,
        # credentials_validity): the login is refused once those expire.
        deadline = time.monotonic() + 15
        while can_log_in(role, password):
            assert time.monotonic() < deadline, f"{role} can still log in"
            time.sleep(1)
        assert disable_default_superuser(session, role) is False  # nothing left to do
    finally:
        session.execute(f"DROP ROLE IF EXISTS {role}")
        cluster.shutdown()
    assert not can_log_in("cassandra", "cassandra")


def test_a_fresh_stack_bootstraps_the_roles_and_recovers_from_a_crashed_first_start(
    tmp_path: Path,
) -> None:
    """Cassandra alone in a new STATE_DIR on free ports: the first up creates the roles and the
    keyspace through the migration role; after the first start's crash window is reproduced
    (the default superuser enabled again, the admin already there), the next up disables it."""
    from tests.infra.test_stack import isolated_env

    env = isolated_env(tmp_path)
    config = InfraConfig.from_env(env)
    cassandra = CassandraService(config)
    try:
        first = infra_cli("up", "cassandra", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "keyspace market: applied 001_trades.cql" in first.stdout
        credentials = config.state_dir / "credentials.env"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        values = load_credentials_file(credentials)
        settings = CassandraSettings(port=config.cassandra_port)

        cluster, session = cassandra.admin_session()
        try:
            roles = {
                row.role: (row.can_login, row.is_superuser)
                for row in session.execute(
                    "SELECT role, can_login, is_superuser FROM system_auth.roles"
                )
            }
            assert roles == {
                "cassandra": (False, False),
                "market_admin": (True, True),
                "market_migrator": (True, False),
                "market_app": (True, False),
                "market_reader": (True, False),
            }
            session.execute("ALTER ROLE cassandra WITH LOGIN = true AND SUPERUSER = true")
        finally:
            cluster.shutdown()

        def default_login_works() -> bool:
            try:
                cluster, _ = connect(
                    settings, username="cassandra", password="cassandra", connect_timeout=5
                )
            except NoHostAvailable:
                return False
            cluster.shutdown()
            return True

        deadline = time.monotonic() + 15
        while not default_login_works():  # the roles cache lasts 2 s
            assert time.monotonic() < deadline
            time.sleep(1)
        again = infra_cli("up", "cassandra", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        deadline = time.monotonic() + 15
        while default_login_works():
            assert time.monotonic() < deadline, "cassandra/cassandra still logs in"
            time.sleep(1)

        writer = connect(
            settings,
            username=values["CASSANDRA_USERNAME"],
            password=values["CASSANDRA_PASSWORD"],
            keyspace="market",
        )
        try:
            writer[1].execute(
                "INSERT INTO collector_gaps (day, gap_start, collector_id) "
                "VALUES ('2026-01-01', 0, 'x')"
            )
            with pytest.raises(Unauthorized):
                writer[1].execute("DROP TABLE collector_gaps")
        finally:
            writer[0].shutdown()
    finally:
        cassandra.stop()
        Supervisor(config).shutdown()
