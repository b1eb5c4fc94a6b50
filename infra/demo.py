"""``python -m infra demo``: run the pipeline on the built-in offline feed and report."""

from __future__ import annotations

from infra.config import InfraConfig
from schemas.contracts import topic_specs
from schemas.settings import CassandraSettings


def run_demo(config: InfraConfig) -> None:
    cassandra = CassandraSettings.from_env()
    topics = topic_specs()
    print(f"""
Stack is up (state in {config.state_dir}):
  Kafka      127.0.0.1:{config.kafka_port}   topics {topics['trades'].name}, {topics['dlq'].name}
  Cassandra  127.0.0.1:{config.cassandra_port}   keyspace {cassandra.keyspace},
             user {cassandra.username}
             (password in {config.state_dir}/credentials.env)
Stop it with `make down`; wipe it with `make clean`.""")
