"""The cluster topology's configuration, generated without starting anything: ports, quorum
voters, seeds, tokens, replication, the Spark submit command, and that the single-node stack's
files are what they were."""

from __future__ import annotations

import doctest
import zipfile
from pathlib import Path

import pytest
import yaml

from infra import topology as topology_module
from infra.__main__ import parser, services
from infra.cassandra import CassandraService
from infra.cluster import (
    CassandraNodeService,
    ClusterCassandra,
    KafkaNodeService,
    cluster_config,
    cluster_services,
)
from infra.config import InfraConfig
from infra.kafka import KafkaService, topic_configs
from infra.migrations import create_keyspace
from infra.service import render
from infra.spark_submit import build_py_files, submit_argv, submit_env
from infra.topology import (
    ClusterPlan,
    balanced_tokens,
    keyspace_replication,
    record_topology,
    topology,
)
from infra.trino import catalog_properties
from schemas.settings import CassandraSettings, SettingsError

SINGLE_NODE_PORTS = {9092, 9093, 9042, 7000, 8080, 8088, 8501}


def config(tmp_path: Path) -> InfraConfig:
    return InfraConfig.from_env({"STATE_DIR": str(tmp_path)})


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def kafka_props(svc: KafkaService) -> dict[str, str]:
    return properties(
        render(
            "kafka-server.properties", **svc.template_values(), data_dir=svc.data_dir, log_flush=""
        )
    )


def cassandra_yaml(svc: CassandraService) -> dict[str, object]:
    text = render(
        "cassandra.yaml",
        **svc.template_values(),
        data_dir=svc.data_dir,
        commitlog_sync="commitlog_sync: periodic\ncommitlog_sync_period: 10000ms",
    )
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def test_topology_docstrings() -> None:
    assert doctest.testmod(topology_module).failed == 0


def test_ports_are_distinct_and_apart_from_the_single_node_stack(tmp_path: Path) -> None:
    plan = ClusterPlan.from_env({})
    bound = [
        (svc.bind_host, port)
        for svc in cluster_services(config(tmp_path), plan).values()
        for port in svc.ports.values()
    ]
    assert len(bound) == len(set(bound))
    on_first_address = {port for host, port in bound if host == "127.0.0.1"}
    assert not on_first_address & SINGLE_NODE_PORTS
    names = list(cluster_services(config(tmp_path), plan))
    assert names == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "cassandra-1",
        "cassandra-2",
        "cassandra-3",
        "trino",
        "spark-master",
        "spark-worker-1",
        "spark-worker-2",
    ]


def test_kafka_nodes_form_one_quorum_of_three(tmp_path: Path) -> None:
    plan = ClusterPlan.from_env({})
    cfg = cluster_config(config(tmp_path), plan)
    props = [kafka_props(KafkaNodeService(cfg, plan, node)) for node in plan.kafka]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    voters = {p["controller.quorum.voters"] for p in props}
    assert voters == {"1@127.0.0.1:9193,2@127.0.0.1:9195,3@127.0.0.1:9197"}
    assert [p["listeners"] for p in props] == [
        f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}"
        for port in (9192, 9194, 9196)
    ]
    for p in props:
        assert p["process.roles"] == "broker,controller"
        assert p["default.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2"
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
    assert len({p["log.dirs"] for p in props}) == 3
    # One cluster id for the three nodes' storage format.
    ids = {KafkaNodeService(cfg, plan, node).cluster_id_file for node in plan.kafka}
    assert len(ids) == 1
    assert plan.bootstrap_servers == "127.0.0.1:9192,127.0.0.1:9194,127.0.0.1:9196"


def test_single_node_kafka_config_is_unchanged(tmp_path: Path) -> None:
    props = kafka_props(KafkaService(config(tmp_path)))
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert "default.replication.factor" not in props and "min.insync.replicas" not in props


def test_cassandra_nodes_share_a_seed_and_split_the_ring(tmp_path: Path) -> None:
    plan = ClusterPlan.from_env({})
    cfg = cluster_config(config(tmp_path), plan)
    nodes = [CassandraNodeService(cfg, plan, node) for node in plan.cassandra]
    yamls = [cassandra_yaml(node) for node in nodes]
    assert [y["listen_address"] for y in yamls] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert [y["rpc_address"] for y in yamls] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert [y["initial_token"] for y in yamls] == balanced_tokens(3)
    for y in yamls:
        assert y["cluster_name"] == "market-cluster"
        assert y["native_transport_port"] == 9142 and y["storage_port"] == 7100
        assert y["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:7100"  # type: ignore[index]
        assert y["auto_bootstrap"] is False
        assert y["hinted_handoff_enabled"] is True
        assert y["num_tokens"] == 1
    assert len({node.data_dir for node in nodes}) == 3
    assert len({node.marker for node in nodes}) == 3
    # One admin and one set of roles for the ring.
    assert {node.admin_file for node in nodes} == {CassandraService(cfg).admin_file}
    assert [node.bind_host for node in nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    # The ring's admin work uses every node; a node's health check only itself.
    assert ClusterCassandra(cfg, plan).settings().hosts == plan.cassandra_hosts
    assert nodes[1].settings().hosts == ("127.0.0.2",)


def test_tokens_are_evenly_spaced() -> None:
    tokens = balanced_tokens(3)
    gaps = {b - a for a, b in zip(tokens, [*tokens[1:], tokens[0] + 2**64], strict=True)}
    assert max(gaps) - min(gaps) <= 2
    assert -(2**63) <= min(tokens) and max(tokens) < 2**63


def test_single_node_cassandra_config_is_unchanged(tmp_path: Path) -> None:
    y = cassandra_yaml(CassandraService(config(tmp_path)))
    assert y["cluster_name"] == "market-local"
    assert y["initial_token"] == 0
    assert y["listen_address"] == y["rpc_address"] == "127.0.0.1"
    assert y["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:7000"  # type: ignore[index]
    assert y["hinted_handoff_enabled"] is False
    assert "auto_bootstrap" not in y


def test_keyspace_replication_follows_the_topology() -> None:
    assert keyspace_replication("cluster", {}) == (
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    )
    assert keyspace_replication("single", {}) == (
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )

    class Session:
        statements: list[str] = []

        def execute(self, statement: str, timeout: float = 0) -> None:
            self.statements.append(statement)

    session = Session()
    create_keyspace(session, "market", keyspace_replication("cluster", {}))
    assert session.statements == [
        "CREATE KEYSPACE IF NOT EXISTS market WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    ]


def test_topics_get_min_insync_replicas_only_when_asked() -> None:
    assert topic_configs(5, 2) == {"retention.ms": "5", "min.insync.replicas": "2"}
    assert topic_configs(5, None) == {"retention.ms": "5"}


def test_trino_reads_every_node(tmp_path: Path) -> None:
    plan = ClusterPlan.from_env({})
    text = catalog_properties(plan.cassandra_hosts, 9142, "LOCAL_QUORUM", "reader", "pw")
    props = properties(text)
    assert props["cassandra.contact-points"] == "127.0.0.1,127.0.0.2,127.0.0.3"
    assert props["cassandra.native-protocol-port"] == "9142"
    assert props["cassandra.consistency-level"] == "LOCAL_QUORUM"
    trino = cluster_services(config(tmp_path), plan)["trino"]
    assert trino.ports == {"http": 8180}


def test_the_topology_is_chosen_by_option_variable_or_state(tmp_path: Path) -> None:
    env = {"STATE_DIR": str(tmp_path)}
    assert topology(env) == "single"
    record_topology(tmp_path, "cluster")
    assert topology(env) == "cluster"
    assert topology({**env, "STACK_TOPOLOGY": "single"}) == "single"
    assert topology(env, given="single") == "single"
    with pytest.raises(SettingsError, match="STACK_TOPOLOGY"):
        topology({"STACK_TOPOLOGY": "mesh"})


def test_cluster_settings_and_the_cli(tmp_path: Path) -> None:
    plan = ClusterPlan.from_env({"SPARK_WORKERS": "1", "CASSANDRA_HEAP": "512M"})
    assert [w.name for w in plan.spark_workers] == ["spark-worker-1"]
    assert cluster_config(config(tmp_path), plan).cassandra_heap == "512M"
    assert ClusterPlan.from_env({}).cassandra_heap == "640M"
    with pytest.raises(SettingsError, match="SPARK_WORKERS"):
        ClusterPlan.from_env({"SPARK_WORKERS": "0"})
    env = ClusterPlan.from_env({}).client_env()
    assert env["CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
    assert env["CASSANDRA_HOSTS"] == "127.0.0.1,127.0.0.2,127.0.0.3"
    assert env["SPARK_MASTER"] == "spark://127.0.0.1:7077"
    args = parser().parse_args(["up", "--topology", "cluster", "cassandra-2"])
    assert (args.topology, args.services) == ("cluster", ["cassandra-2"])
    # The default topology is the single-node stack, untouched.
    assert list(services(config(tmp_path))) == [
        "kafka",
        "cassandra",
        "trino",
        "superset",
        "streamlit",
    ]


def test_the_py_files_zip_holds_code_and_data(tmp_path: Path) -> None:
    zipped = build_py_files(tmp_path / "pipeline.zip")
    names = set(zipfile.ZipFile(zipped).namelist())
    assert "stream_processor/__main__.py" in names
    assert "gbm_analysis/forecast.py" in names
    assert "schemas/avro/trade.avsc" in names
    assert any(n.startswith("schemas/cql/") and n.endswith(".cql") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_submit_command_ships_code_and_jars(tmp_path: Path) -> None:
    jars = tmp_path / "jars" / "spark"
    jars.mkdir(parents=True)
    for name in ("a.jar", "b.jar"):
        (jars / name).write_bytes(b"")
    cfg = InfraConfig.from_env({"STATE_DIR": str(tmp_path / "state"), "JARS_DIR": str(jars.parent)})
    plan = ClusterPlan.from_env({})
    env = {"JARS_DIR": str(jars.parent)}
    argv = submit_argv(cfg, plan, "stream_processor", ["--once"], env=env)
    opts = dict(zip(argv[1:-2:2], argv[2:-2:2], strict=False))
    assert opts["--master"] == "spark://127.0.0.1:7077"
    assert opts["--deploy-mode"] == "client"
    assert opts["--jars"] == f"{jars / 'a.jar'},{jars / 'b.jar'}"
    assert Path(opts["--py-files"]).exists()
    assert opts["--total-executor-cores"] == "2"
    app, last = argv[-2:]
    assert last == "--once"
    assert "runpy.run_module('stream_processor'" in Path(app).read_text()
    with pytest.raises(ValueError, match="collector"):
        submit_argv(cfg, plan, "collector", [], env=env)


def test_submit_env_points_at_the_cluster(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    plan = ClusterPlan.from_env({})
    env = submit_env(cfg, plan, {"CHECKPOINT_DIR": "/shared/cp"})
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == plan.bootstrap_servers
    assert env["CASSANDRA_CONSISTENCY"] == "LOCAL_QUORUM"
    assert env["SPARK_SUBMIT_MODE"] == "1"
    assert env["CHECKPOINT_DIR"] == "/shared/cp"


def test_consistency_is_a_setting_of_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.cluster import Cluster

    from schemas.runtime.cassandra import connect
    from schemas.runtime.spark import spark_conf

    settings = CassandraSettings.from_env(
        {"STATE_DIR": "/nonexistent", "CASSANDRA_CONSISTENCY": "local_quorum"}
    )
    assert settings.consistency == "LOCAL_QUORUM"
    assert CassandraSettings.from_env({"STATE_DIR": "/nonexistent"}).consistency is None
    with pytest.raises(SettingsError, match="CASSANDRA_CONSISTENCY='each'"):
        CassandraSettings.from_env({"STATE_DIR": "/x", "CASSANDRA_CONSISTENCY": "each"})

    monkeypatch.setattr(Cluster, "connect", lambda self, keyspace=None: "session")
    cluster, _ = connect(settings)
    assert cluster.profile_manager.default.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    cluster, _ = connect(CassandraSettings())
    assert cluster.profile_manager.default.consistency_level == ConsistencyLevel.LOCAL_ONE

    jars = {"JARS_DIR": str(Path(__file__).parent)}  # any folder: spark_conf lists its jars
    monkeypatch.setattr("schemas.runtime.spark.connector_jars", lambda env=None: [])
    conf = spark_conf(settings, jars)
    assert conf["spark.cassandra.output.consistency.level"] == "LOCAL_QUORUM"
    assert conf["spark.cassandra.input.consistency.level"] == "LOCAL_QUORUM"
    assert "spark.cassandra.output.consistency.level" not in spark_conf(CassandraSettings(), jars)


def test_the_zip_alone_loads_the_contracts(tmp_path: Path) -> None:
    """What an executor does: import our packages from the shipped zip, no checkout on the
    path (-I: no site-packages, where the editable install points at the checkout)."""
    import subprocess
    import sys

    zipped = build_py_files(tmp_path / "pipeline.zip")
    code = (
        f"import sys; sys.path.insert(0, {str(zipped)!r}); import schemas.contracts as c; "
        "print(c.__file__, c.topic_specs({})['trades'].name, c.load_avro_schema('trade')['name'])"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    path, topic, schema = result.stdout.split()
    assert path.startswith(str(zipped)) and (topic, schema) == ("trades", "Trade")


def test_a_restarting_node_answers_once_it_authenticates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ring stopped whole starts one node at a time: the first cannot log anyone in (roles
    are read at LOCAL_QUORUM), yet it is up, and the next node must start."""
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    from infra import cluster as cluster_module

    plan = ClusterPlan.from_env({})
    node = CassandraNodeService(cluster_config(config(tmp_path), plan), plan, plan.cassandra[0])
    node.admin_file.parent.mkdir(parents=True)
    node.admin_file.write_text("CASSANDRA_USERNAME=admin\nCASSANDRA_PASSWORD=pw\n")
    monkeypatch.setattr(CassandraService, "answers", lambda self: False)

    def refuse(error: Exception) -> None:
        def connect(*args: object, **kwargs: object) -> None:
            raise NoHostAvailable("no host", {"127.0.0.1:9142": error})

        monkeypatch.setattr(cluster_module, "connect", connect)

    refuse(AuthenticationFailed("Cannot achieve consistency level LOCAL_QUORUM"))
    assert node.answers()
    refuse(ConnectionRefusedError("refused"))
    assert not node.answers()
