"""Our Spark jobs submitted to the standalone master of the cluster topology with
``spark-submit --master spark://…``, their dependencies shipped with the application:

* ``--py-files``: one zip of our packages (``schemas``, ``collector``, ``stream_processor``,
  ``gbm_analysis``, with their data files), built into ``$STATE_DIR/spark/pipeline.zip`` at each
  submit; Spark puts it first on the driver's and every executor's ``sys.path``;
* ``--jars``: the connector jars (Kafka source, Avro, Cassandra) from the jar cache;
* the application file: a two-line launcher that runs the package's ``__main__`` from the zip.

Python applications run in client mode on a standalone master (spark-submit refuses cluster
mode for them): the driver is the ``spark-submit`` process, the executors run on the workers.
The streaming job's checkpoints must be on a path every worker shares (the executors write the
bars' state store there): on one host a local folder is such a path; across hosts, HDFS, S3 or
an NFS mount.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from infra.config import InfraConfig
from infra.pipeline import PipelineProcess
from infra.topology import ClusterPlan
from schemas.runtime.spark import connector_jars
from schemas.settings import REPO_ROOT

PACKAGES = ("schemas", "collector", "stream_processor", "gbm_analysis")
# Modules spark-submit may run and their default cores over the whole cluster (one executor of
# spark.executor.cores=1 on each worker for the streaming job; a batch job as many).
APPLICATIONS = ("stream_processor", "gbm_analysis")
SKIPPED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache"})


def build_py_files(
    dest: Path, root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES
) -> Path:
    """Zip ``packages`` (code and data files such as Avro schemas and CQL) into ``dest``,
    written to a temporary name first so a running job never sees a partial zip."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in packages:
            for path in sorted((root / package).rglob("*")):
                rel = path.relative_to(root)
                if path.is_dir() or SKIPPED_PARTS & set(rel.parts) or path.suffix == ".pyc":
                    continue
                archive.write(path, rel.as_posix())
    partial.replace(dest)
    return dest


def launcher(folder: Path, module: str) -> Path:
    """The application file spark-submit runs: ``python -m <module>`` from the shipped zip."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run_{module}.py"
    path.write_text(
        "import runpy\n" f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n",
        encoding="utf-8",
    )
    return path


def submit_argv(
    config: InfraConfig,
    plan: ClusterPlan,
    module: str,
    args: list[str],
    *,
    env: Mapping[str, str],
    total_cores: int | None = None,
) -> list[str]:
    """The ``spark-submit`` command line for ``python -m <module> ARGS`` on the master."""
    from infra.cluster import spark_bin

    if module not in APPLICATIONS:
        raise ValueError(f"{module}: not one of {', '.join(APPLICATIONS)}")
    folder = config.state_dir / "spark"
    py_files = build_py_files(folder / "pipeline.zip")
    cores = total_cores or len(plan.spark_workers)
    return [
        spark_bin("spark-submit"),
        "--master",
        plan.spark_master,
        "--deploy-mode",
        "client",
        "--name",
        module,
        "--driver-memory",
        env.get("SPARK_DRIVER_MEMORY") or "1g",
        "--executor-memory",
        plan.spark_executor_memory,
        "--total-executor-cores",
        str(cores),
        "--conf",
        "spark.executor.cores=1",
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--jars",
        ",".join(str(jar) for jar in connector_jars(env)),
        "--py-files",
        str(py_files),
        str(launcher(folder / "apps", module)),
        *args,
    ]


def submit_env(config: InfraConfig, plan: ClusterPlan, env: Mapping[str, str]) -> dict[str, str]:
    """The driver's environment: the cluster's client settings (unless already set), the
    submitted master winning over SPARK_MASTER, and Java 17 for the spark-submit JVM."""
    from infra.java import find_java17

    java = find_java17(config.java17_home)
    return {
        **plan.client_env(),
        **env,
        "SPARK_SUBMIT_MODE": "1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "JAVA_HOME": str(java.parent.parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "STATE_DIR": str(config.state_dir),
        # Read from the shipped zip, the package cannot find the checkout's jar cache itself.
        "JARS_DIR": str(config.jars_dir),
    }


class SubmittedProcess(PipelineProcess):
    """A pipeline step (the stream processor) run as a Spark application on the master, under
    supervisord like the demo's steps (same name, so ``down`` and ``status`` see it)."""

    def __init__(
        self,
        config: InfraConfig,
        plan: ClusterPlan,
        name: str,
        args: list[str],
        env: Mapping[str, str] | None = None,
        total_cores: int | None = None,
    ) -> None:
        super().__init__(config, name, args, dict(os.environ if env is None else env))
        self.plan = plan
        self.total_cores = total_cores

    @property
    def marker(self) -> str:
        return "org.apache.spark.deploy.SparkSubmit"

    @property
    def start_timeout(self) -> float:
        return 60

    def launch(self) -> tuple[list[str], dict[str, str]]:
        env = submit_env(self.config, self.plan, self._env or {})
        argv = submit_argv(
            self.config,
            self.plan,
            self.module,
            list(self._args or []),
            env=env,
            total_cores=self.total_cores,
        )
        return argv, env
