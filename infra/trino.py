"""Trino 476 on Java 24+ from the Maven Central server tarball, with a read-only Cassandra catalog.

Superset and ad-hoc SQL read the market tables through Trino as ``cassandra.<keyspace>.<table>``.
Only ``lib/`` and the Cassandra plugin are unpacked (about 100 MB of the 800 MB tarball).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.cassandra import CassandraService
from infra.errors import InstallError, ServiceStartError, TrinoQueryError
from infra.java import find_java_at_least
from infra.maven import pom_digest, run_maven
from infra.service import Service

TRINO_VERSION = "476"
TRINO_MIN_JAVA = 24
CATALOG = "cassandra"
PLUGINS = ("cassandra",)

# The server's own jvm.config, with a small explicit heap instead of a share of host memory.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:G1HeapRegionSize=32M",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:ReservedCodeCacheSize=150M",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-Dfile.encoding=UTF-8",
    "-XX:+EnableDynamicAgentLoading",
    "-XX:ActiveProcessorCount=2",
]


def unpack_server(tarball: Path, dest: Path, plugins: tuple[str, ...] = PLUGINS) -> None:
    """Unpack ``lib/`` and ``plugin/<name>/`` for ``plugins`` into ``dest``.

    The tarball stores a jar shared by several plugins once and hard-links the others to it, often
    from a plugin we do not keep; those targets are unpacked too and their folders removed after,
    which leaves the kept names pointing at the data.
    """
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(tarball, "r:gz") as tar:
        members = tar.getmembers()
        root = members[0].name.split("/")[0]
        keep = (f"{root}/lib/", *(f"{root}/plugin/{name}/" for name in plugins))
        kept = [m for m in members if m.name.startswith(keep)]
        link_targets = {m.linkname for m in kept if m.islnk()}
        chosen = [m for m in members if m.name.startswith(keep) or m.name in link_targets]
        tar.extractall(partial, members=chosen, filter="data")
    plugin_dir = partial / root / "plugin"
    for folder in plugin_dir.iterdir():
        if folder.name not in plugins:
            shutil.rmtree(folder)
    shutil.rmtree(dest, ignore_errors=True)
    (partial / root).rename(dest)
    partial.rmdir()


def catalog_properties(
    contact_points: tuple[str, ...], port: int, consistency: str, user: str, password: str
) -> str:
    """``etc/catalog/cassandra.properties``: every node as a contact point (the driver finds
    the others from any one, but starts only if one of these answers)."""
    return (
        "connector.name=cassandra\n"
        f"cassandra.contact-points={','.join(contact_points)}\n"
        f"cassandra.native-protocol-port={port}\n"
        "cassandra.load-policy.dc-aware.local-dc=datacenter1\n"
        f"cassandra.consistency-level={consistency}\n"
        "cassandra.security=PASSWORD\n"
        f"cassandra.username={user}\ncassandra.password={password}\n"
    )


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


def run_query(port: int, sql: str, *, user: str = "infra", timeout: float = 60) -> QueryResult:
    """Run ``sql`` over Trino's REST protocol, with ``cassandra`` as the default catalog; raises
    :class:`TrinoQueryError` with Trino's message when the query fails."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/statement",
        data=sql.encode(),
        method="POST",
        headers={"X-Trino-User": user, "X-Trino-Catalog": CATALOG},
    )
    columns: list[str] = []
    rows: list[list[Any]] = []
    while True:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            page = json.load(response)
        if "error" in page:
            raise TrinoQueryError(page["error"].get("message", "query failed"))
        columns = columns or [column["name"] for column in page.get("columns") or []]
        rows.extend(page.get("data") or [])
        if "nextUri" not in page:
            return QueryResult(columns, rows)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Trino query did not finish within {timeout:.0f} s: {sql}")
        request = urllib.request.Request(page["nextUri"], headers={"X-Trino-User": user})


class TrinoService(Service):
    name = "trino"
    main_class = "io.trino.server.TrinoServer"

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.config.trino_port}

    @property
    def start_timeout(self) -> float:
        return self.config.trino_start_timeout

    @property
    def main_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def etc(self) -> Path:
        return self.home / "etc"

    def find_java(self) -> Path:
        return find_java_at_least(
            TRINO_MIN_JAVA, self.config.trino_java_home, "TRINO_JAVA_HOME", f"Trino {TRINO_VERSION}"
        )

    def install(self) -> Path:
        root = self.config.jars_dir / "trino"
        server = root / f"trino-server-{TRINO_VERSION}"
        stamp = server / ".pom.sha256"
        digest = pom_digest("trino")
        if stamp.exists() and stamp.read_text().strip() == digest:
            return server
        download = root / "download"
        shutil.rmtree(download, ignore_errors=True)
        print(
            f"infra: resolving the Trino {TRINO_VERSION} server with Maven into {root} ...",
            flush=True,
        )
        run_maven("trino", download)
        tarballs = sorted(download.glob("trino-server-*.tar.gz"))
        if not tarballs:
            raise InstallError(f"Maven left no trino-server tarball in {download}")
        print(f"infra: unpacking lib/ and plugin/cassandra from {tarballs[0].name} ...", flush=True)
        unpack_server(tarballs[0], server)
        shutil.rmtree(download)
        stamp.write_text(digest)
        return server

    def prepare(self, java: Path, lib: Path) -> None:
        (self.etc / "catalog").mkdir(parents=True, exist_ok=True)
        port = self.config.trino_port
        (self.etc / "config.properties").write_text(
            # node.* would be etc/node.properties, which only bin/launcher reads.
            "node.environment=market\nnode.id=trino-1\n"
            "node.bind-ip=127.0.0.1\n"
            "node.internal-address=127.0.0.1\n"
            "coordinator=true\nnode-scheduler.include-coordinator=true\n"
            f"http-server.http.port={port}\ndiscovery.uri=http://127.0.0.1:{port}\n"
            f"log.path={self.main_log}\n"
            f"http-server.log.path={self.log_dir / 'http-request.log'}\n"
        )
        user, password = CassandraService(self.config).reader_credentials()
        catalog = self.etc / "catalog" / f"{CATALOG}.properties"
        catalog.touch(mode=0o600)
        catalog.write_text(
            catalog_properties(
                self.contact_points,
                self.config.cassandra_port,
                self.consistency,
                user,
                password,
            )
        )

    # The Cassandra nodes the catalog reads and at which consistency; the cluster topology's
    # Trino (infra.cluster) names all three and reads at LOCAL_QUORUM.
    contact_points: tuple[str, ...] = ("127.0.0.1",)
    consistency = "LOCAL_ONE"

    def command(self, java: Path, lib: Path) -> list[str]:
        heap = self.config.trino_heap
        return [
            str(java),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *JVM_FLAGS,
            f"-Dconfig={self.etc / 'config.properties'}",
            f"-Dcatalog.config-dir={self.etc / 'catalog'}",
            f"-Dplugin.dir={lib / 'plugin'}",
            "-cp",
            f"{lib / 'lib'}/*",
            self.main_class,
        ]

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.config.trino_port}/v1/info", timeout=3
            ) as response:
                return json.load(response).get("starting") is False
        except (OSError, ValueError):
            return False

    def after_ready(self) -> None:
        """One query through the Cassandra catalog, so a wrong password shows at start-up."""
        try:
            run_query(self.config.trino_port, f"SHOW SCHEMAS FROM {CATALOG}")
        except (OSError, TrinoQueryError, TimeoutError) as exc:
            raise ServiceStartError(
                f"trino: the {CATALOG} catalog cannot read Cassandra: {exc}",
                self.last_log_lines(),
            ) from None
