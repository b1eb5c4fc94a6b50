"""The two topologies ``python -m infra`` runs: ``single`` (one Kafka, one Cassandra, local Spark;
the default) and ``cluster`` (three Kafka KRaft nodes, three Cassandra nodes, a Spark standalone
master with its workers, all on loopback).

Pure: the port plan, the per-node settings and the client settings, so that what the cluster's
configuration files say (quorum voters, seeds, tokens, replication) is tested without starting
anything. ``infra.cluster`` starts the nodes from this plan.

Port plan of the cluster topology (distinct from the single-node stack's, so both can run side
by side with different STATE_DIRs):

============================  ===========================================================
Kafka nodes 1, 2, 3           client 9192, 9194, 9196; controller 9193, 9195, 9197
Cassandra nodes 1, 2, 3       127.0.0.1, 127.0.0.2, 127.0.0.3: native 9142, storage 7100
Trino                         8180
Spark master                  7077 (web UI 8190)
Spark workers 1, 2            7178, 7179 (web UIs 8191, 8192)
============================  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.migrations import SINGLE_NODE_REPLICATION
from schemas.settings import SettingsError, choice_setting, env_value, int_setting, state_dir

TOPOLOGIES = ("single", "cluster")
# Written by ``up`` so that ``status``/``down`` on the same STATE_DIR know what runs there.
TOPOLOGY_FILE = "topology"

KAFKA_NODES = 3
CASSANDRA_NODES = 3
KAFKA_FIRST_PORT = 9192
CASSANDRA_PORT = 9142
CASSANDRA_STORAGE_PORT = 7100
TRINO_PORT = 8180
SPARK_MASTER_PORT = 7077
SPARK_MASTER_UI_PORT = 8190
SPARK_WORKER_FIRST_PORT = 7178
SPARK_WORKER_FIRST_UI_PORT = 8191
MAX_SPARK_WORKERS = 8
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
CLUSTER_NAME = "market-cluster"
LOCAL_DC = "datacenter1"  # SimpleSnitch's one data centre
# Smaller than the single node's: five JVMs more share the host (README, Running on a cluster).
CLUSTER_KAFKA_HEAP = "384m"
CLUSTER_CASSANDRA_HEAP = "640M"


def topology(env: Mapping[str, str] | None = None, given: str | None = None) -> str:
    """``given`` (the ``--topology`` option), else ``STACK_TOPOLOGY``, else what ``up`` recorded
    in STATE_DIR, else ``single``.

    >>> topology({"STACK_TOPOLOGY": "Cluster"}), topology({"STATE_DIR": "/nonexistent"})
    ('cluster', 'single')
    """
    env = os.environ if env is None else env
    if given:
        return choice_setting({"--topology": given}, "--topology", "single", TOPOLOGIES)
    if env_value(env, "STACK_TOPOLOGY"):
        return choice_setting(env, "STACK_TOPOLOGY", "single", TOPOLOGIES)
    try:
        recorded = (state_dir(env) / TOPOLOGY_FILE).read_text().strip()
    except OSError:
        return "single"
    return recorded if recorded in TOPOLOGIES else "single"


def record_topology(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TOPOLOGY_FILE).write_text(name + "\n")


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def name(self) -> str:
        return f"kafka-{self.node_id}"


@dataclass(frozen=True)
class CassandraNode:
    index: int
    host: str
    initial_token: int

    @property
    def name(self) -> str:
        return f"cassandra-{self.index}"


@dataclass(frozen=True)
class SparkWorker:
    index: int
    port: int
    ui_port: int

    @property
    def name(self) -> str:
        return f"spark-worker-{self.index}"


def balanced_tokens(nodes: int) -> list[int]:
    """One Murmur3 token per node, evenly spaced (what Cassandra's own test harness gives a new
    local cluster): node ``i`` owns an equal third of the ring for three nodes.

    >>> balanced_tokens(3)
    [-9223372036854775808, -3074457345618258603, 3074457345618258602]
    """
    return [i * (2**64 // nodes) - 2**63 for i in range(nodes)]


@dataclass(frozen=True, kw_only=True)
class ClusterPlan:
    kafka: tuple[KafkaNode, ...]
    cassandra: tuple[CassandraNode, ...]
    cassandra_port: int = CASSANDRA_PORT
    cassandra_storage_port: int = CASSANDRA_STORAGE_PORT
    trino_port: int = TRINO_PORT
    spark_master_port: int = SPARK_MASTER_PORT
    spark_master_ui_port: int = SPARK_MASTER_UI_PORT
    spark_workers: tuple[SparkWorker, ...] = ()
    spark_worker_cores: int = 2
    spark_worker_memory: str = "2g"
    spark_executor_memory: str = "768m"
    kafka_heap: str = CLUSTER_KAFKA_HEAP
    cassandra_heap: str = CLUSTER_CASSANDRA_HEAP
    replication_factor: int = REPLICATION_FACTOR
    min_insync_replicas: int = MIN_INSYNC_REPLICAS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClusterPlan:
        """The loopback plan; SPARK_WORKERS (default 2), SPARK_WORKER_CORES (2: what each worker
        offers, so the streaming job and a batch job each get an executor on every worker; the
        host's two cores are shared anyway), SPARK_WORKER_MEMORY (2g), SPARK_EXECUTOR_MEMORY
        (768m), and the nodes' heaps KAFKA_HEAP/CASSANDRA_HEAP (per node; smaller defaults than
        the single node's)."""
        env = os.environ if env is None else env
        workers = int_setting(env, "SPARK_WORKERS", 2, minimum=1)
        if workers > MAX_SPARK_WORKERS:
            raise SettingsError(f"SPARK_WORKERS={workers}: at most {MAX_SPARK_WORKERS}")
        tokens = balanced_tokens(CASSANDRA_NODES)
        return cls(
            kafka=tuple(
                KafkaNode(
                    node_id=i + 1,
                    host="127.0.0.1",
                    port=KAFKA_FIRST_PORT + 2 * i,
                    controller_port=KAFKA_FIRST_PORT + 2 * i + 1,
                )
                for i in range(KAFKA_NODES)
            ),
            cassandra=tuple(
                CassandraNode(index=i + 1, host=f"127.0.0.{i + 1}", initial_token=tokens[i])
                for i in range(CASSANDRA_NODES)
            ),
            spark_workers=tuple(
                SparkWorker(
                    index=i + 1,
                    port=SPARK_WORKER_FIRST_PORT + i,
                    ui_port=SPARK_WORKER_FIRST_UI_PORT + i,
                )
                for i in range(workers)
            ),
            spark_worker_cores=int_setting(env, "SPARK_WORKER_CORES", 2, minimum=1),
            spark_worker_memory=env_value(env, "SPARK_WORKER_MEMORY") or "2g",
            spark_executor_memory=env_value(env, "SPARK_EXECUTOR_MEMORY") or "768m",
            kafka_heap=env_value(env, "KAFKA_HEAP") or CLUSTER_KAFKA_HEAP,
            cassandra_heap=env_value(env, "CASSANDRA_HEAP") or CLUSTER_CASSANDRA_HEAP,
        )

    # --- Kafka ----------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{n.host}:{n.port}" for n in self.kafka)

    @property
    def quorum_voters(self) -> str:
        """``controller.quorum.voters``: a static quorum of every node (2 of 3 elect a leader)."""
        return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.kafka)

    def kafka_values(self, node: KafkaNode) -> dict[str, object]:
        """The placeholders of ``conf/kafka-server.properties`` for one node."""
        rf, isr = self.replication_factor, self.min_insync_replicas
        return {
            "node_id": node.node_id,
            "host": node.host,
            "port": node.port,
            "controller_port": node.controller_port,
            "voters": self.quorum_voters,
            "internal_rf": rf,
            "internal_min_isr": isr,
            "replication": f"default.replication.factor={rf}\nmin.insync.replicas={isr}",
        }

    # --- Cassandra ------------------------------------------------------------------------
    @property
    def cassandra_hosts(self) -> tuple[str, ...]:
        return tuple(n.host for n in self.cassandra)

    @property
    def seeds(self) -> str:
        """The first node is the seed (seeds never bootstrap; one is enough on one host)."""
        return f"{self.cassandra[0].host}:{self.cassandra_storage_port}"

    def cassandra_values(self, node: CassandraNode) -> dict[str, object]:
        """The placeholders of ``conf/cassandra.yaml`` for one node. ``auto_bootstrap: false``
        with explicit balanced tokens: a brand-new ring has nothing to stream. Hints on: a node
        that was down gets the writes it missed from its peers."""
        return {
            "cluster_name": CLUSTER_NAME,
            "initial_token": node.initial_token,
            "address": node.host,
            "seeds": self.seeds,
            "port": self.cassandra_port,
            "storage_port": self.cassandra_storage_port,
            "hinted_handoff": "true",
            "auto_bootstrap": "auto_bootstrap: false",
        }

    def keyspace_replication(self) -> str:
        return f"{{'class': 'NetworkTopologyStrategy', '{LOCAL_DC}': {self.replication_factor}}}"

    # --- Spark ----------------------------------------------------------------------------
    @property
    def spark_master(self) -> str:
        return f"spark://127.0.0.1:{self.spark_master_port}"

    # --- what clients are given -----------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """The settings our services need to use the cluster (``python -m infra env``)."""
        return {
            "STACK_TOPOLOGY": "cluster",
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "CASSANDRA_HOSTS": ",".join(self.cassandra_hosts),
            "CASSANDRA_PORT": str(self.cassandra_port),
            "CASSANDRA_CONSISTENCY": "LOCAL_QUORUM",
            "SPARK_MASTER": self.spark_master,
            "TRINO_PORT": str(self.trino_port),
        }


def keyspace_replication(name: str, env: Mapping[str, str] | None = None) -> str:
    """The replication map of a keyspace ``migrate`` creates under topology ``name``."""
    if name == "cluster":
        return ClusterPlan.from_env(env).keyspace_replication()
    return SINGLE_NODE_REPLICATION
