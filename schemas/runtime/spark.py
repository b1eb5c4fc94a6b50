"""SparkSession construction shared by the streaming and batch jobs, and their one way to read
and write a Cassandra table through the connector.

The connector jars (Kafka source, Avro, Cassandra) are resolved by ``make install`` into
``$JARS_DIR/spark`` and passed as local files, so starting a job needs no network.

Time zones: every session computes in UTC (``spark.sql.session.timeZone``), so ``day``, windows
and ``toPandas``/pandas UDF timestamps do not depend on the host. ``DataFrame.collect()`` is the
exception: PySpark 3.5 hands timestamps out as naive datetimes in the Python process's local zone,
and cassandra-driver reads a naive datetime as UTC; :func:`collected_utc` converts them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.settings import CassandraSettings, SettingsError, jars_dir, secret_value

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The Spark Cassandra connector's data source.
CASSANDRA_FORMAT = "org.apache.spark.sql.cassandra"


def collected_utc(value: datetime) -> datetime:
    """A timestamp from ``DataFrame.collect()`` as a naive UTC datetime (what cassandra-driver
    and :class:`stream_processor.rollups.Bar` expect).

    PySpark 3.5 builds collected timestamps with ``datetime.fromtimestamp``: naive, in the local
    zone of the Python process (``TZ``), whatever the session's zone. ``astimezone`` reads a naive
    datetime as local time, fold included, so the instant survives a daylight-saving change; an
    aware datetime is converted as it is.
    """
    return value.astimezone(UTC).replace(tzinfo=None)


def connector_jars(env: Mapping[str, str] | None = None) -> list[Path]:
    folder = jars_dir(env) / "spark"
    jars = sorted(folder.glob("*.jar"))
    if not jars:
        raise SettingsError(
            f"Spark connector jars not found in {folder}; run `make install` to resolve them"
        )
    return jars


def spark_conf(
    cassandra: CassandraSettings, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Spark settings for the connectors; Spark redacts keys containing 'password' in UI/logs."""
    env = os.environ if env is None else env
    conf = {
        "spark.jars": ",".join(str(j) for j in connector_jars(env)),
        "spark.sql.extensions": "com.datastax.spark.connector.CassandraSparkExtensions",
        "spark.cassandra.connection.host": ",".join(cassandra.hosts),
        "spark.cassandra.connection.port": str(cassandra.port),
        "spark.cassandra.connection.localDC": cassandra.local_dc,
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.host": env.get("SPARK_DRIVER_HOST", "127.0.0.1"),
        "spark.driver.bindAddress": env.get("SPARK_DRIVER_HOST", "127.0.0.1"),
        "spark.sql.shuffle.partitions": env.get("SPARK_SHUFFLE_PARTITIONS", "2"),
        "spark.ui.enabled": env.get("SPARK_UI_ENABLED", "false"),
        "spark.driver.memory": env.get("SPARK_DRIVER_MEMORY", "1g"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Unlogged batches of up to 32 KiB per Cassandra partition instead of the connector's
        # 1 KiB: 1.6x the rows/s into `trades` here (benchmarks), and below Cassandra's
        # batch-size warning threshold (infra/conf/cassandra.yaml).
        "spark.cassandra.output.batch.size.bytes": env.get("SPARK_CASSANDRA_BATCH_BYTES", "32768"),
    }
    if cassandra.consistency:  # CASSANDRA_CONSISTENCY: the connector's reads and writes alike
        conf["spark.cassandra.output.consistency.level"] = cassandra.consistency
        conf["spark.cassandra.input.consistency.level"] = cassandra.consistency
    if cassandra.username:
        conf["spark.cassandra.auth.username"] = cassandra.username
        conf["spark.cassandra.auth.password"] = secret_value(cassandra.password) or ""
    return conf


def build_session(
    app_name: str,
    cassandra: CassandraSettings,
    *,
    master: str | None = None,
    extra_conf: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> SparkSession:
    """Get or create a session. ``master`` defaults to SPARK_MASTER or local[2]; under
    spark-submit the submitted master wins because getOrCreate reuses its context."""
    from pyspark.sql import SparkSession

    environ: Mapping[str, str] = os.environ if env is None else env
    # Python workers must run this interpreter (the project venv), not whatever `python3` is on
    # PATH; the first session of a process fixes it for every later one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not os.environ.get("SPARK_SUBMIT_MODE"):
        default_master = environ.get("SPARK_MASTER", "local[2]")
        builder = builder.master(master or default_master)
    for key, value in {**spark_conf(cassandra, environ), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(environ.get("SPARK_LOG_LEVEL", "WARN"))
    return session


def read_cassandra(spark: SparkSession, keyspace: str, table: str) -> DataFrame:
    """``keyspace.table`` as a frame; filters on its partition key (and clustering range) that
    follow are pushed down to Cassandra by the connector."""
    return spark.read.format(CASSANDRA_FORMAT).options(keyspace=keyspace, table=table).load()


def write_cassandra(frame: DataFrame, keyspace: str, table: str) -> None:
    """Append ``frame`` to ``keyspace.table`` through the connector: upserts by primary key, so
    writing the same rows twice leaves the table unchanged."""
    frame.write.format(CASSANDRA_FORMAT).options(keyspace=keyspace, table=table).mode(
        "append"
    ).save()
