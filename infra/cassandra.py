"""Apache Cassandra 5.0 on Java 17 from Maven jars, with password auth and generated roles."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from infra.roles import cql_literal, create_login_role, disable_default_superuser
from infra.service import Service, render
from schemas.runtime.cassandra import connect
from schemas.settings import CREDENTIALS_FILE_NAME, CassandraSettings, load_credentials_file

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Who may do what: infra/roles.py. The admin's secret stays in $STATE_DIR/cassandra/admin.env;
# the others are in credentials.env, each under its own variables.
# STACK_DURABILITY: "group" fsyncs the commitlog at most every 15 ms and acknowledges a write
# only once it is on disk; "periodic" acknowledges at once and fsyncs every 10 s.
COMMITLOG_SYNC = {
    "relaxed": "commitlog_sync: periodic\ncommitlog_sync_period: 10000ms",
    "strict": "commitlog_sync: group\ncommitlog_sync_group_window: 15ms",
}
ADMIN_ROLE = "market_admin"
MIGRATOR_ROLE = "market_migrator"
APP_ROLE = "market_app"
# Read-only login for the API and the dashboards (Trino, so Superset; Streamlit).
READER_ROLE = "market_reader"
ROLE_PREFIXES = {
    MIGRATOR_ROLE: "CASSANDRA_MIGRATOR_",
    APP_ROLE: "CASSANDRA_",
    READER_ROLE: "CASSANDRA_READER_",
}

# conf/jvm-server.options + conf/jvm17-server.options of Cassandra 5.0 (what bin/cassandra adds).
JVM17_FLAGS = [
    "-ea",
    "-da:net.openhft...",
    "-XX:+UseThreadPriorities",
    "-XX:+HeapDumpOnOutOfMemoryError",
    "-Xss256k",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
    "-Dchronicle.analytics.disable=true",
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-Djdk.attach.allowAttachSelf=true",
    *[
        f"--add-exports={m}=ALL-UNNAMED"
        for m in (
            "java.base/jdk.internal.misc",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.management/com.sun.jmx.remote.security",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.attach/sun.tools.attach",
            "jdk.compiler/com.sun.tools.javac.file",
        )
    ],
    *[
        f"--add-opens={m}=ALL-UNNAMED"
        for m in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "java.base/java.lang",
            "java.base/java.util",
            "java.base/java.nio",
            "java.base/java.nio.charset",
            "jdk.compiler/com.sun.tools.javac",
        )
    ],
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file
    with os.fdopen(fd, "w") as fh:
        fh.write("# generated on first start by `python -m infra up`; keep private\n")
        for key, value in values.items():
            fh.write(f"{key}={value}\n")


class CassandraService(Service):
    name = "cassandra"
    main_class = "org.apache.cassandra.service.CassandraDaemon"

    @property
    def ports(self) -> dict[str, int]:
        return {"cql": self.config.cassandra_port, "storage": self.config.cassandra_storage_port}

    @property
    def start_timeout(self) -> float:
        return self.config.cassandra_start_timeout

    @property
    def main_log(self) -> Path:
        return self.log_dir / "system.log"

    @property
    def credentials_file(self) -> Path:
        return self.config.state_dir / CREDENTIALS_FILE_NAME

    @property
    def admin_file(self) -> Path:
        return self.home / "admin.env"

    @property
    def legacy_reader_file(self) -> Path:
        # Where older versions kept the reader's secret; adopted into credentials.env.
        return self.home / "reader.env"

    def role_credentials(self) -> dict[str, tuple[str, str]]:
        """Each generated role's (user, password), created in credentials.env on first use (and
        for a state dir from before a role existed). Other services keep their secrets in the
        same file: merge, never truncate."""
        values = load_credentials_file(self.credentials_file)
        missing = {
            role: prefix
            for role, prefix in ROLE_PREFIXES.items()
            if not values.get(f"{prefix}PASSWORD")
        }
        if missing:
            legacy = load_credentials_file(self.legacy_reader_file)
            for role, prefix in missing.items():
                password = secrets.token_urlsafe(24)
                if role == READER_ROLE and legacy.get("CASSANDRA_PASSWORD"):
                    password = legacy["CASSANDRA_PASSWORD"]  # the role already has it
                values[f"{prefix}USERNAME"] = role
                values[f"{prefix}PASSWORD"] = password
            write_env_file(self.credentials_file, values)
        self.legacy_reader_file.unlink(missing_ok=True)
        return {
            role: (values[f"{prefix}USERNAME"], values[f"{prefix}PASSWORD"])
            for role, prefix in ROLE_PREFIXES.items()
        }

    def reader_credentials(self) -> tuple[str, str]:
        return self.role_credentials()[READER_ROLE]

    def settings(self) -> CassandraSettings:
        return CassandraSettings(hosts=("127.0.0.1",), port=self.config.cassandra_port)

    def template_values(self) -> dict[str, object]:
        """The node's part of ``conf/cassandra.yaml``: the single-node stack's one node, its own
        seed; ``infra.cluster`` gives each node of the cluster topology its address and token."""
        return {
            "cluster_name": "market-local",
            "initial_token": 0,
            "address": "127.0.0.1",
            "seeds": f"127.0.0.1:{self.config.cassandra_storage_port}",
            "port": self.config.cassandra_port,
            "storage_port": self.config.cassandra_storage_port,
            "hinted_handoff": "false",
            "auto_bootstrap": "",
        }

    def prepare(self, java: Path, lib: Path) -> None:
        (self.home / "conf").mkdir(exist_ok=True)
        (self.home / "conf" / "cassandra.yaml").write_text(
            render(
                "cassandra.yaml",
                **self.template_values(),
                data_dir=self.data_dir,
                commitlog_sync=COMMITLOG_SYNC[self.config.durability],
            )
        )
        (self.home / "conf" / "logback.xml").write_text(render("cassandra-logback.xml"))
        # Secrets exist before the first boot so a crash mid-bootstrap can resume with them.
        if not self.admin_file.exists():
            write_env_file(
                self.admin_file,
                {
                    "CASSANDRA_USERNAME": ADMIN_ROLE,
                    "CASSANDRA_PASSWORD": secrets.token_urlsafe(24),
                },
            )
        self.role_credentials()

    def command(self, java: Path, lib: Path) -> list[str]:
        heap = self.config.cassandra_heap
        jamm = sorted(lib.glob("jamm-*.jar"))[0]
        conf = self.home / "conf"
        return [
            str(java),
            *JVM17_FLAGS,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:ActiveProcessorCount=2",
            f"-javaagent:{jamm}",
            f"-Dlogback.configurationFile={conf / 'logback.xml'}",
            f"-Dcassandra.logdir={self.log_dir}",
            f"-Dcassandra.storagedir={self.data_dir}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
            f"-Dcassandra.triggers_dir={conf}",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp",
            f"{conf}:{lib}/*",
            self.main_class,
        ]

    def admin_credentials(self) -> tuple[str, str]:
        values = load_credentials_file(self.admin_file)
        return values["CASSANDRA_USERNAME"], values["CASSANDRA_PASSWORD"]

    def _try_query(self, user: str, password: str) -> bool:
        try:
            cluster, session = connect(
                self.settings(), username=user, password=password, connect_timeout=3
            )
        except Exception:  # noqa: BLE001 - refused, auth not ready, ...: all mean "not yet"
            return False
        try:
            session.execute("SELECT release_version FROM system.local")
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            cluster.shutdown()

    def answers(self) -> bool:
        user, password = self.admin_credentials()
        if self._try_query(user, password):
            return True
        # Before the first bootstrap only the default superuser exists.
        return self._try_query("cassandra", "cassandra")

    def after_ready(self) -> None:
        self.bootstrap_auth()

    def admin_session(self, keyspace: str | None = None) -> tuple[Cluster, Session]:
        user, password = self.admin_credentials()
        return connect(self.settings(), username=user, password=password, keyspace=keyspace)

    def bootstrap_auth(self, timeout: float = 60.0) -> None:
        """Create the admin role (as the default superuser, on first boot), disable the default
        superuser, create the migrator, writer and reader login roles. Idempotent; what each
        role may do is granted per keyspace by ``migrate``."""
        admin_user, admin_pw = self.admin_credentials()
        if not self._try_query(admin_user, admin_pw):
            cluster, session = _retry(
                lambda: connect(self.settings(), username="cassandra", password="cassandra"),
                timeout,
            )
            try:
                session.execute(
                    f"CREATE ROLE IF NOT EXISTS {admin_user} WITH PASSWORD = "
                    f"'{cql_literal(admin_pw)}' AND LOGIN = true AND SUPERUSER = true"
                )
            finally:
                cluster.shutdown()
        cluster, session = _retry(self.admin_session, timeout)
        try:
            # Checked on every start: a crash right after the admin role was created would
            # otherwise leave cassandra/cassandra enabled for good.
            disable_default_superuser(session)
            for user, password in self.role_credentials().values():
                create_login_role(session, user, password)
        finally:
            cluster.shutdown()


def _retry(fn: Callable[[], T], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
