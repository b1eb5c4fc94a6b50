"""Apache Kafka 4.1 in KRaft mode (combined broker + controller) from Maven jars."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from infra.errors import ServiceStartError
from infra.service import Service, render
from schemas.contracts import topic_specs

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

# STACK_DURABILITY: with one broker there is no replica to survive a host crash, so "strict"
# fsyncs each append before the produce is acknowledged; "relaxed" leaves it to the OS.
LOG_FLUSH = {
    "relaxed": "",
    "strict": "log.flush.interval.messages=1",
}

logger = logging.getLogger(__name__)


class KafkaService(Service):
    name = "kafka"
    main_class = "kafka.Kafka"

    @property
    def ports(self) -> dict[str, int]:
        return {"client": self.config.kafka_port, "controller": self.config.kafka_controller_port}

    @property
    def start_timeout(self) -> float:
        return self.config.kafka_start_timeout

    @property
    def main_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.config.kafka_port}"

    def _log_props(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
        ]

    @property
    def cluster_id_file(self) -> Path:
        """Every node of one Kafka cluster is formatted with the same id."""
        return self.home / "cluster.id"

    def template_values(self) -> dict[str, object]:
        """The node's part of ``conf/kafka-server.properties``: here the one node of the
        single-node stack, a quorum of itself; ``infra.cluster`` gives each of three its own."""
        port, controller_port = self.config.kafka_port, self.config.kafka_controller_port
        return {
            "node_id": 1,
            "host": "127.0.0.1",
            "port": port,
            "controller_port": controller_port,
            "voters": f"1@127.0.0.1:{controller_port}",
            "internal_rf": 1,
            "internal_min_isr": 1,
            "replication": "",
        }

    def prepare(self, java: Path, lib: Path) -> None:
        props = self.home / "server.properties"
        props.write_text(
            render(
                "kafka-server.properties",
                **self.template_values(),
                data_dir=self.data_dir,
                log_flush=LOG_FLUSH[self.config.durability],
            )
        )
        (self.home / "log4j2.properties").write_text(render("kafka-log4j2.properties"))
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id_file = self.cluster_id_file
        tool = [
            str(java),
            "-Xmx256m",
            *self._log_props(),
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
        ]
        if not cluster_id_file.exists():
            cluster_id = subprocess.run(
                [*tool, "random-uuid"], capture_output=True, text=True, check=True
            ).stdout.strip()
            cluster_id_file.write_text(cluster_id)
        result = subprocess.run(
            [
                *tool,
                "format",
                "-t",
                cluster_id_file.read_text().strip(),
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceStartError(
                "kafka: formatting storage failed", result.stdout + result.stderr
            )

    def command(self, java: Path, lib: Path) -> list[str]:
        heap = self.config.kafka_heap
        return [
            str(java),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            "-XX:ActiveProcessorCount=2",
            *self._log_props(),
            "-cp",
            f"{lib}/*",
            self.main_class,
            str(self.home / "server.properties"),
        ]

    def _admin(self) -> KafkaAdminClient:
        from kafka.admin import KafkaAdminClient

        return KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=5000,
            client_id="infra",
        )

    def answers(self) -> bool:
        try:
            admin = self._admin()
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        try:
            admin.describe_cluster()
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            admin.close()

    def after_ready(self) -> None:
        ensure_topics(self.bootstrap)


def ensure_topics(
    bootstrap: str, replication_factor: int = 1, min_insync_replicas: int | None = None
) -> list[str]:
    """Create the contract topics that do not exist yet; returns the names created. On a cluster,
    with ``replication_factor`` copies of each partition and ``min_insync_replicas`` of them
    needed to acknowledge a producer's ``acks=all`` write."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id="infra"
    )
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=topic_configs(spec.retention_ms, min_insync_replicas),
            )
            for spec in topic_specs().values()
            if spec.name not in existing
        ]
        if wanted:
            admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        admin.close()


def topic_configs(retention_ms: int, min_insync_replicas: int | None) -> dict[str, str]:
    """
    >>> topic_configs(1000, 2)
    {'retention.ms': '1000', 'min.insync.replicas': '2'}
    """
    configs = {"retention.ms": str(retention_ms)}
    if min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(min_insync_replicas)
    return configs
