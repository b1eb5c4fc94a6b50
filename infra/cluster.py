"""The cluster topology on loopback (``python -m infra up --topology cluster``): three Kafka
KRaft nodes (each broker and controller; a static quorum of three), three Cassandra nodes on
127.0.0.1/.2/.3, Trino reading all three, and a Spark standalone master with its workers started
from PySpark's own distribution. Every process runs under the STATE_DIR's supervisord, like the
single-node stack; the plan (ports, seeds, tokens, replication) is ``infra.topology``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from infra import process
from infra.cassandra import CassandraService
from infra.config import InfraConfig
from infra.errors import InfraError
from infra.java import find_java17
from infra.kafka import KafkaService, ensure_topics
from infra.maven import resolve_jars
from infra.service import ManagedProcess
from infra.topology import LOCAL_DC, CassandraNode, ClusterPlan, KafkaNode, SparkWorker
from infra.trino import TrinoService
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings

# Cassandra's replicated system keyspaces: on a ring they default to one copy (system_auth: the
# roles, so a node down would lock out a third of the logins) or two; the cluster keeps three.
REPLICATED_SYSTEM_KEYSPACES = ("system_auth", "system_distributed", "system_traces")
# system_auth's tables, read at ALL once after its replication changes: a read at ALL repairs
# every replica, which copies the rows written while it had one copy to the new replicas
# (there is no nodetool here: the nodes run without JMX).
AUTH_TABLES = ("roles", "role_members", "role_permissions", "network_permissions")
SPARK_DAEMON_MEMORY = "256m"


def cluster_config(config: InfraConfig, plan: ClusterPlan) -> InfraConfig:
    """The stack's settings with the cluster's ports and per-node heaps."""
    first = plan.kafka[0]
    return dataclasses.replace(
        config,
        kafka_port=first.port,
        kafka_controller_port=first.controller_port,
        kafka_heap=plan.kafka_heap,
        cassandra_port=plan.cassandra_port,
        cassandra_storage_port=plan.cassandra_storage_port,
        cassandra_heap=plan.cassandra_heap,
        trino_port=plan.trino_port,
    )


class KafkaNodeService(KafkaService):
    """One Kafka node of the quorum of three."""

    def __init__(self, config: InfraConfig, plan: ClusterPlan, node: KafkaNode) -> None:
        self.name = node.name
        super().__init__(config)
        self.plan, self.node = plan, node

    @property
    def marker(self) -> str:
        return str(self.home / "server.properties")

    @property
    def ports(self) -> dict[str, int]:
        return {"client": self.node.port, "controller": self.node.controller_port}

    @property
    def bootstrap(self) -> str:
        return f"{self.node.host}:{self.node.port}"

    @property
    def cluster_id_file(self) -> Path:
        return self.config.state_dir / "kafka-cluster.id"

    def install(self) -> Path:
        return resolve_jars("kafka", self.config.jars_dir)

    def template_values(self) -> dict[str, object]:
        return self.plan.kafka_values(self.node)

    def after_ready(self) -> None:
        """Topics are created once the whole quorum answers (``cluster_up``)."""


class CassandraNodeService(CassandraService):
    """One Cassandra node of the ring, on its own loopback address."""

    def __init__(self, config: InfraConfig, plan: ClusterPlan, node: CassandraNode) -> None:
        self.name = node.name
        super().__init__(config)
        self.plan, self.node = plan, node
        self.bind_host = node.host

    @property
    def marker(self) -> str:
        return str(self.home / "conf" / "cassandra.yaml")

    @property
    def ports(self) -> dict[str, int]:
        return {"cql": self.plan.cassandra_port, "storage": self.plan.cassandra_storage_port}

    @property
    def admin_file(self) -> Path:
        # One admin for the ring, where the single-node stack keeps it.
        return self.config.state_dir / "cassandra" / "admin.env"

    @property
    def legacy_reader_file(self) -> Path:
        return self.config.state_dir / "cassandra" / "reader.env"

    def install(self) -> Path:
        return resolve_jars("cassandra", self.config.jars_dir)

    def settings(self) -> CassandraSettings:
        """This node only: ``answers`` must not be satisfied by another node of the ring."""
        return CassandraSettings(hosts=(self.node.host,), port=self.plan.cassandra_port)

    def template_values(self) -> dict[str, object]:
        return self.plan.cassandra_values(self.node)

    def answers(self) -> bool:
        """A login works, or the node got as far as authenticating the client. A node of a ring
        that was stopped whole and starts again one node at a time cannot log anyone in alone:
        the roles are read at LOCAL_QUORUM, two of system_auth's three copies. Waiting for a
        login there would wait forever for the nodes started after it."""
        return super().answers() or self.reaches_authentication()

    def reaches_authentication(self) -> bool:
        from cassandra import AuthenticationFailed
        from cassandra.cluster import NoHostAvailable

        user, password = self.admin_credentials()
        try:
            cluster, _ = connect(
                self.settings(), username=user, password=password, connect_timeout=3
            )
        except NoHostAvailable as exc:
            return any(isinstance(error, AuthenticationFailed) for error in exc.errors.values())
        except Exception:  # noqa: BLE001 - refused, timed out: not up yet
            return False
        cluster.shutdown()
        return True

    def after_ready(self) -> None:
        """Roles are created once every node answers (``cluster_up``)."""


class ClusterCassandra(CassandraService):
    """The ring as one database for the admin's work (roles, migrations): every node a contact
    point. Not a process: ``cluster_services`` runs the nodes."""

    def __init__(self, config: InfraConfig, plan: ClusterPlan) -> None:
        super().__init__(config)
        self.plan = plan

    def settings(self) -> CassandraSettings:
        return CassandraSettings(hosts=self.plan.cassandra_hosts, port=self.plan.cassandra_port)


class ClusterTrino(TrinoService):
    def __init__(self, config: InfraConfig, plan: ClusterPlan) -> None:
        super().__init__(config)
        self.contact_points = plan.cassandra_hosts
        self.consistency = "LOCAL_QUORUM"


class SparkDaemon(ManagedProcess):
    """A Spark standalone daemon run in the foreground with PySpark's ``spark-class``."""

    main_class: str

    def __init__(self, config: InfraConfig, plan: ClusterPlan) -> None:
        super().__init__(config)
        self.plan = plan

    @property
    def main_log(self) -> Path:
        return self.stdout_log

    @property
    def start_timeout(self) -> float:
        return 120

    def arguments(self) -> list[str]:
        raise NotImplementedError

    def launch(self) -> tuple[list[str], dict[str, str]]:
        java = find_java17(self.config.java17_home)
        env = {
            **os.environ,
            "JAVA_HOME": str(java.parent.parent),
            "SPARK_DAEMON_MEMORY": SPARK_DAEMON_MEMORY,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(self.log_dir),
            "PYSPARK_PYTHON": sys.executable,
            "MALLOC_ARENA_MAX": "4",
        }
        return [spark_bin("spark-class"), self.main_class, *self.arguments()], env

    def after_ready(self) -> None:
        pass

    def master_state(self) -> dict[str, Any] | None:
        """The master's JSON status page, or None when it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.plan.spark_master_ui_port}/json/"
            with urllib.request.urlopen(url, timeout=3) as response:
                state: dict[str, Any] = json.load(response)
                return state
        except (OSError, ValueError):
            return None


class SparkMaster(SparkDaemon):
    name = "spark-master"
    main_class = "org.apache.spark.deploy.master.Master"

    @property
    def marker(self) -> str:
        return self.main_class

    @property
    def ports(self) -> dict[str, int]:
        return {"master": self.plan.spark_master_port, "web UI": self.plan.spark_master_ui_port}

    def arguments(self) -> list[str]:
        return [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.plan.spark_master_port),
            # Its default, 8080, is Trino's.
            "--webui-port",
            str(self.plan.spark_master_ui_port),
        ]

    def answers(self) -> bool:
        state = self.master_state()
        return state is not None and state.get("status") == "ALIVE"


class SparkWorkerService(SparkDaemon):
    main_class = "org.apache.spark.deploy.worker.Worker"

    def __init__(self, config: InfraConfig, plan: ClusterPlan, worker: SparkWorker) -> None:
        self.name = worker.name
        super().__init__(config, plan)
        self.worker = worker

    @property
    def marker(self) -> str:
        return str(self.work_dir)

    @property
    def work_dir(self) -> Path:
        # Executors' folders; the default would be inside the installed pyspark package.
        return self.home / "work"

    @property
    def ports(self) -> dict[str, int]:
        return {"worker": self.worker.port, "web UI": self.worker.ui_port}

    def arguments(self) -> list[str]:
        return [
            self.plan.spark_master,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.worker.port),
            "--webui-port",
            str(self.worker.ui_port),
            "--cores",
            str(self.plan.spark_worker_cores),
            "--memory",
            self.plan.spark_worker_memory,
            "--work-dir",
            str(self.work_dir),
        ]

    def answers(self) -> bool:
        """Registered with the master and ALIVE there."""
        state = SparkMaster(self.config, self.plan).master_state()
        return state is not None and any(
            w.get("port") == self.worker.port and w.get("state") == "ALIVE"
            for w in state.get("workers", [])
        )


def spark_bin(name: str) -> str:
    """A script of the pip-installed PySpark (``spark-class``, ``spark-submit``), which the
    venv's ``bin`` holds next to this interpreter."""
    return str(
        process.venv_bin(
            name,
            lambda path: InfraError(
                f"{path} not found: is pyspark installed in this venv? (make install)"
            ),
        )
    )


def cluster_services(config: InfraConfig, plan: ClusterPlan) -> dict[str, ManagedProcess]:
    """Every process of the cluster topology, in start order."""
    cfg = cluster_config(config, plan)
    chosen: list[ManagedProcess] = [
        *(KafkaNodeService(cfg, plan, node) for node in plan.kafka),
        *(CassandraNodeService(cfg, plan, node) for node in plan.cassandra),
        ClusterTrino(cfg, plan),
        SparkMaster(cfg, plan),
        *(SparkWorkerService(cfg, plan, worker) for worker in plan.spark_workers),
    ]
    return {svc.name: svc for svc in chosen}


def _wait(svc: ManagedProcess) -> float:
    return svc.wait_ready(svc.start_timeout)


def cluster_up(
    config: InfraConfig,
    plan: ClusterPlan,
    names: list[str] | None,
    say: Any,
    migrate: Any,
) -> None:
    """Start the chosen processes (default: all) and wait for each. Kafka's three nodes boot
    together (a lone node waits for a quorum); Cassandra's one after the other, the seed first
    (2 cores: three JVMs booting at once starve gossip); then roles, system keyspaces'
    replication and the migrations once every node answers; then Trino and Spark."""
    every = cluster_services(config, plan)
    if unknown := [n for n in names or () if n not in every]:
        raise InfraError(
            f"{', '.join(unknown)}: not a process of the cluster topology ({', '.join(every)})"
        )
    chosen = {n: every[n] for n in (names or every)}

    started: dict[str, bool] = {}

    def start_and_wait(group: Sequence[ManagedProcess]) -> None:
        for svc in group:
            if svc.name not in started:
                started[svc.name] = svc.start()
        for svc in group:
            seconds = _wait(svc)
            state = f"started in {seconds:.0f} s" if started[svc.name] else "already running"
            port = next(iter(svc.ports.values()))
            say(f"{svc.name}: {state} (pid {svc.pid()}, {svc.bind_host}:{port})")

    try:
        kafka = [s for s in chosen.values() if isinstance(s, KafkaNodeService)]
        cassandra = [s for s in chosen.values() if isinstance(s, CassandraNodeService)]
        others = [s for s in chosen.values() if s not in kafka and s not in cassandra]
        master = [s for s in others if isinstance(s, SparkMaster)]
        # The master boots while Kafka does; the nodes one at a time after.
        for svc in (*kafka, *master):
            started[svc.name] = svc.start()
        start_and_wait(kafka)
        if kafka and all(s.answers() for s in every.values() if isinstance(s, KafkaNodeService)):
            created = ensure_topics(
                plan.bootstrap_servers, plan.replication_factor, plan.min_insync_replicas
            )
            if created:
                say(
                    f"topics {', '.join(created)}: replication factor {plan.replication_factor}, "
                    f"min.insync.replicas {plan.min_insync_replicas}"
                )
        for node in cassandra:
            start_and_wait([node])
        ring = [s for s in every.values() if isinstance(s, CassandraNodeService)]
        if cassandra and all(s.answers() for s in ring):
            bootstrap_cluster_auth(config, plan)
            migrate()
        start_and_wait(others)
    except InfraError:
        # Leave nothing half-started behind, as the single-node `up` does.
        stop_all([every[name] for name, fresh in started.items() if fresh], say)
        raise


def bootstrap_cluster_auth(config: InfraConfig, plan: ClusterPlan) -> None:
    """Three copies of the system keyspaces, then the roles (``CassandraService.bootstrap_auth``).
    Run with every node up; idempotent."""
    cfg = cluster_config(config, plan)
    ring = ClusterCassandra(cfg, plan)
    replication = f"{{'class': 'NetworkTopologyStrategy', '{LOCAL_DC}': {plan.replication_factor}}}"
    user, password = ring.admin_credentials()
    if not ring._try_query(user, password):
        user, password = "cassandra", "cassandra"  # the first start: the default superuser
    cluster, session = connect(ring.settings(), username=user, password=password)
    try:
        changed = False
        for keyspace in REPLICATED_SYSTEM_KEYSPACES:
            row = session.execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
                (keyspace,),
            ).one()
            if row is not None and row.replication.get(LOCAL_DC) == str(plan.replication_factor):
                continue
            session.execute(
                f"ALTER KEYSPACE {keyspace} WITH replication = {replication}", timeout=60
            )
            changed = True
        if changed:
            repair_auth(session)
    finally:
        cluster.shutdown()
    ring.bootstrap_auth()
    cluster, session = ring.admin_session()
    try:
        repair_auth(session)
    finally:
        cluster.shutdown()


def repair_auth(session: Any) -> None:
    """Read every system_auth table at ALL: blocking read repair copies each row to every
    replica (what ``nodetool repair system_auth`` would do after a replication change)."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    for table in AUTH_TABLES:
        statement = SimpleStatement(
            f"SELECT * FROM system_auth.{table}", consistency_level=ConsistencyLevel.ALL
        )
        list(session.execute(statement, timeout=60))


def stop_all(chosen: list[ManagedProcess], say: Any) -> None:
    """Stop in reverse start order; the nodes of one engine together (Kafka's last node would
    otherwise wait for a quorum that is gone)."""
    groups: list[list[ManagedProcess]] = []
    for svc in reversed(chosen):
        kind = type(svc)
        if groups and type(groups[-1][0]) is kind and kind is not ClusterTrino:
            groups[-1].append(svc)
        else:
            groups.append([svc])
    for group in groups:
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            results = list(pool.map(lambda s: s.stop(), group))
        for svc, stopped in zip(group, results, strict=True):
            say(f"{svc.name}: {'stopped' if stopped else 'not running'}")
