"""``python -m infra up|down|status|logs|restart|clean|install|migrate|drop-keyspace|env|submit``.

Runs the real Kafka (KRaft), Cassandra and Trino on 127.0.0.1 with all state under STATE_DIR:
one node each (``--topology single``, the default), or three Kafka nodes, three Cassandra nodes,
Trino and a Spark standalone cluster on loopback (``--topology cluster``, ``infra.cluster``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.cassandra import APP_ROLE, MIGRATOR_ROLE, READER_ROLE, CassandraService
from infra.cluster import ClusterCassandra, cluster_config, cluster_services, cluster_up, stop_all
from infra.config import InfraConfig
from infra.errors import InfraError, TrinoQueryError, report
from infra.java import find_java17
from infra.kafka import KafkaService
from infra.maven import resolve_jars
from infra.migrations import (
    SYSTEM_KEYSPACES,
    apply_migrations,
    cql_identifier,
    create_keyspace,
    quote_identifier,
)
from infra.pipeline import STEP_MODULES, pipeline_steps
from infra.roles import (
    MIGRATOR_PERMISSIONS,
    READER_PERMISSIONS,
    WRITER_PERMISSIONS,
    create_login_role,
    grant_keyspace,
    retry_unauthorized,
)
from infra.service import ManagedProcess
from infra.streamlit import StreamlitService
from infra.superset import SupersetService
from infra.supervisor import Supervisor
from infra.topology import (
    TOPOLOGIES,
    ClusterPlan,
    keyspace_replication,
    record_topology,
    topology,
)
from infra.trino import TrinoService, run_query
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings, SettingsError

# ``up`` waits in this order: Trino reads Cassandra with the read-only role that Cassandra's
# start-up creates, Superset's import needs Trino, Streamlit reads Cassandra as that role too.
SERVICE_CLASSES = (KafkaService, CassandraService, TrinoService, SupersetService, StreamlitService)


def services(config: InfraConfig, topo: str = "single") -> dict[str, ManagedProcess]:
    if topo == "cluster":
        return cluster_services(config, ClusterPlan.from_env())
    return {cls.name: cls(config) for cls in SERVICE_CLASSES}


def topology_config(config: InfraConfig, topo: str) -> InfraConfig:
    """The settings the topology's processes run with (the cluster's ports and heaps)."""
    return cluster_config(config, ClusterPlan.from_env()) if topo == "cluster" else config


def say(message: str) -> None:
    print(f"infra: {message}", flush=True)


def cmd_install(config: InfraConfig, _: argparse.Namespace) -> None:
    find_java17(config.java17_home)
    for name in ("kafka", "cassandra", "spark"):
        path = resolve_jars(name, config.jars_dir)
        say(f"{name} jars ready in {path}")
    trino = TrinoService(config)
    trino.find_java()
    say(f"trino server ready in {trino.install()}")
    say(f"superset ready in {SupersetService(config).install()}")


def up(config: InfraConfig, names: Sequence[str] | None = None) -> None:
    all_services = services(config)
    if steps := [n for n in names or () if n not in all_services]:
        raise InfraError(f"{', '.join(steps)}: started by `make demo`, not by `up`")
    chosen = {n: all_services[n] for n in (names or all_services)}
    # Start every service first, then wait: the JVMs boot in parallel.
    started = {name: svc.start() for name, svc in chosen.items()}
    for name, svc in chosen.items():
        try:
            waited = svc.wait_ready(svc.start_timeout)
            svc.after_ready()
            if name == "cassandra":
                # Before the services that read the tables: Superset's import queries them.
                migrate(config, CassandraSettings.from_env().keyspace)
        except InfraError:
            # Leave nothing half-started behind: a later `up` starts from a clean slate.
            for other, other_svc in chosen.items():
                if started[other]:
                    other_svc.stop()
            Supervisor(config).shutdown()
            raise
        state = f"started in {waited:.0f} s" if started[name] else "already running"
        say(f"{name}: {state} (pid {svc.pid()}, port {next(iter(svc.ports.values()))})")


def migrate(config: InfraConfig, keyspace: str, topo: str = "single") -> None:
    """Create ``keyspace`` (one copy on the single node, three on the cluster topology) and
    grant each role its permissions on it (as the admin), then apply the pending files as the
    migration role."""
    cassandra = admin_cassandra(config, topo)
    roles = cassandra.role_credentials()
    cluster, session = cassandra.admin_session()
    try:
        create_keyspace(session, keyspace, keyspace_replication(topo))
        for user, password in roles.values():  # a stack started before a role existed
            create_login_role(session, user, password)
        grant_keyspace(
            session,
            keyspace,
            {
                roles[MIGRATOR_ROLE][0]: MIGRATOR_PERMISSIONS,
                roles[APP_ROLE][0]: WRITER_PERMISSIONS,
                roles[READER_ROLE][0]: READER_PERMISSIONS,
            },
        )
    finally:
        cluster.shutdown()
    user, password = roles[MIGRATOR_ROLE]
    cluster, session = connect(cassandra.settings(), username=user, password=password)
    try:
        # Cassandra caches permissions for up to 2 s: a grant made just now may not show yet.
        applied = retry_unauthorized(lambda: apply_migrations(session, keyspace), timeout=10)
    finally:
        cluster.shutdown()
    say(
        f"keyspace {keyspace}: "
        + (f"applied {', '.join(applied)}" if applied else "schema up to date")
    )


def chosen_topology(config: InfraConfig, args: argparse.Namespace) -> str:
    """``--topology``, else STACK_TOPOLOGY, else what ``up`` recorded in this STATE_DIR."""
    return topology(given=getattr(args, "topology", None))


def up_topology(config: InfraConfig, topo: str, names: Sequence[str] | None) -> None:
    recorded = topology(env={"STATE_DIR": str(config.state_dir)})
    holds_stack = (config.state_dir / "kafka").is_dir() or (config.state_dir / "kafka-1").is_dir()
    if holds_stack and recorded != topo:
        raise InfraError(
            f"STATE_DIR={config.state_dir} holds the {recorded} topology; give the {topo} "
            "topology its own STATE_DIR (e.g. STATE_DIR=.state-cluster)"
        )
    record_topology(config.state_dir, topo)
    if topo == "single":
        up(config, names)
        return
    keyspace = CassandraSettings.from_env().keyspace
    cluster_up(
        config,
        ClusterPlan.from_env(),
        list(names or ()),
        say,
        lambda: migrate(config, keyspace, "cluster"),
    )


def admin_cassandra(config: InfraConfig, topo: str) -> CassandraService:
    """The database the admin's commands (migrate, drop-keyspace) talk to: the single node, or
    the cluster's ring with every node a contact point."""
    if topo == "cluster":
        plan = ClusterPlan.from_env()
        return ClusterCassandra(cluster_config(config, plan), plan)
    return CassandraService(config)


def cmd_up(config: InfraConfig, args: argparse.Namespace) -> None:
    topo = chosen_topology(config, args)
    up_topology(config, topo, args.services)
    if topo == "cluster":
        say(
            "cluster is up; `python -m infra status` shows every node, "
            '`eval "$(python -m infra env)"` points our services at it'
        )
    else:
        say("stack is up; `make status` shows health, `make down` stops it")


def cmd_down(config: InfraConfig, args: argparse.Namespace) -> None:
    topo = chosen_topology(config, args)
    # The demo's pipeline first: it writes to the engines below.
    for name, step in reversed(list(pipeline_steps(config).items())):
        if (not args.services or name in args.services) and step.stop():
            say(f"{name}: stopped")
    chosen = [
        svc
        for name, svc in services(config, topo).items()
        if not args.services or name in args.services
    ]
    if topo == "cluster":
        stop_all(chosen, say)
    else:
        for svc in reversed(chosen):
            say(f"{svc.name}: {'stopped' if svc.stop() else 'not running'}")
    Supervisor(config).shutdown()


def cmd_restart(config: InfraConfig, args: argparse.Namespace) -> None:
    cmd_down(config, args)
    up_topology(config, chosen_topology(config, args), args.services)


def cmd_status(config: InfraConfig, args: argparse.Namespace) -> None:
    healthy = True
    topo = chosen_topology(config, args)
    print(f"{'service':<16} {'pid':>8}  {'port':>5}  {'supervisord':<12} health")
    for name, svc in services(config, topo).items():
        pid = svc.pid()
        ok = pid is not None and svc.answers()
        healthy &= ok
        health = "healthy" if ok else ("starting/unresponsive" if pid else "stopped")
        port = next(iter(svc.ports.values()))
        print(f"{name:<16} {pid or '-':>8}  {port:>5}  {supervised_state(svc, pid):<12} {health}")
    for name, step in pipeline_steps(config).items():
        if not step.was_started:
            continue
        pid = step.pid()
        healthy &= pid is not None
        health = "running" if pid else f"exited, see {step.stdout_log}"
        print(f"{name:<16} {pid or '-':>8}  {'':>5}  {supervised_state(step, pid):<12} {health}")
    print(f"state: {config.state_dir}" + (" (cluster topology)" if topo == "cluster" else ""))
    if not healthy:
        raise SystemExit(1)


def supervised_state(svc: ManagedProcess, pid: int | None) -> str:
    """supervisord's state (RUNNING, BACKOFF while it restarts one, FATAL when it gave up),
    or ``unmanaged`` for a process started before supervisord ran the stack."""
    program = svc.program()
    if program is None:
        return "unmanaged" if pid else "-"
    if program.state == "EXITED":
        return f"EXITED({program.exit_status})"
    return program.state


def cmd_logs(config: InfraConfig, args: argparse.Namespace) -> None:
    for name, svc in services(config, chosen_topology(config, args)).items():
        if args.services and name not in args.services:
            continue
        print(f"===== {name}")
        print(svc.last_log_lines(args.lines))


def cmd_clean(config: InfraConfig, args: argparse.Namespace) -> None:
    for step in pipeline_steps(config).values():
        step.stop()
    topo = chosen_topology(config, args)
    if topo == "cluster":
        stop_all(list(services(config, topo).values()), say)
    for svc in services(config).values():
        svc.stop()
    Supervisor(config).shutdown()
    if config.state_dir.exists():
        shutil.rmtree(config.state_dir)
    say(f"removed {config.state_dir} (cached jars in {config.jars_dir} kept)")


def cmd_serve(config: InfraConfig, args: argparse.Namespace) -> None:
    from infra.systemd import serve

    raise SystemExit(serve(services(config)[args.service]))


def cmd_units(config: InfraConfig, args: argparse.Namespace) -> None:
    from infra.systemd import render_units

    for path in render_units(config, args.dest, args.user):
        say(f"wrote {path}")
    say(
        f"install: sudo cp {args.dest}/tdp-* /etc/systemd/system/ && sudo systemctl "
        "daemon-reload && sudo systemctl enable --now tdp-collector tdp-stream-processor "
        "tdp-forecaster.timer tdp-superset tdp-streamlit"
    )


def cmd_demo(config: InfraConfig, _: argparse.Namespace) -> None:
    from infra.demo import run_demo

    run_demo(config)


def cmd_migrate(config: InfraConfig, args: argparse.Namespace) -> None:
    topo = chosen_topology(config, args)
    migrate(config, args.keyspace or CassandraSettings.from_env().keyspace, topo)


def cmd_env(config: InfraConfig, args: argparse.Namespace) -> None:
    """Shell ``export`` lines pointing our services at the cluster topology."""
    if chosen_topology(config, args) != "cluster":
        raise InfraError("`env` prints the cluster topology's settings: add --topology cluster")
    for key, value in ClusterPlan.from_env().client_env().items():
        print(f"export {key}={shlex.quote(value)}")
    print(f"export STATE_DIR={shlex.quote(str(config.state_dir))}")


def cmd_submit(config: InfraConfig, args: argparse.Namespace) -> None:
    """The stream processor (supervised, like the demo's steps) or a GBM command (in the
    foreground) as Spark applications on the cluster topology's standalone master."""
    from infra.spark_submit import SubmittedProcess, submit_argv, submit_env

    if chosen_topology(config, args) != "cluster":
        raise InfraError("`submit` runs a job on the cluster topology's Spark master")
    plan = ClusterPlan.from_env()
    extra = [a for a in args.args if a != "--"]
    if args.module == "stream_processor":
        step = SubmittedProcess(config, plan, "stream_processor", extra, total_cores=args.cores)
        step.start()
        waited = step.wait_ready(step.start_timeout)
        say(
            f"stream_processor: submitted to {plan.spark_master} in {waited:.0f} s "
            f"(pid {step.pid()}, log {step.stdout_log})"
        )
        return
    env = submit_env(config, plan, os.environ)
    argv = submit_argv(config, plan, args.module, extra, env=env, total_cores=args.cores)
    raise SystemExit(subprocess.run(argv, env=env).returncode)


def cmd_drop_keyspace(config: InfraConfig, args: argparse.Namespace) -> None:
    # Compare the names Cassandra resolves, not the text typed: MARKET and "market" are market.
    name = cql_identifier(args.keyspace)
    configured = cql_identifier(CassandraSettings.from_env().keyspace)
    if name == configured:
        raise InfraError(
            f"refusing to drop the configured keyspace {configured!r} (given as {args.keyspace!r})"
        )
    if name in SYSTEM_KEYSPACES:
        raise InfraError(f"refusing to drop Cassandra's own keyspace {name!r}")
    cassandra = admin_cassandra(config, chosen_topology(config, args))
    cluster, session = cassandra.admin_session()
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {quote_identifier(name)}", timeout=60)
    finally:
        cluster.shutdown()
    say(f"dropped keyspace {name}")


def cmd_sql(config: InfraConfig, args: argparse.Namespace) -> None:
    """Print a query's result as an aligned table (the default catalog is ``cassandra``)."""
    config = topology_config(config, chosen_topology(config, args))
    try:
        result = run_query(config.trino_port, args.query, timeout=args.timeout)
    except TrinoQueryError as exc:
        raise InfraError(f"trino: {exc}") from None
    except OSError as exc:
        raise InfraError(
            f"trino: cannot reach 127.0.0.1:{config.trino_port} ({exc}); is the stack up?"
        ) from None
    table = [
        result.columns,
        *([("NULL" if v is None else str(v)) for v in row] for row in result.rows),
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(result.columns))]
    for n, row in enumerate(table):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))
    print(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")


CLUSTER_NAME_RE = re.compile(r"^(kafka-\d|cassandra-\d|spark-master|spark-worker-\d)$")


def service_name(value: str) -> str:
    # Names only: reading the settings here would turn a bad port into argparse's
    # "invalid service_name value" instead of the message that names the variable.
    names = [*(cls.name for cls in SERVICE_CLASSES), *STEP_MODULES]
    if value not in names and not CLUSTER_NAME_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"unknown service {value!r}; use one of {', '.join(names)}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    topo = argparse.ArgumentParser(add_help=False)
    topo.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        help="single (default) or cluster; else STACK_TOPOLOGY, else what `up` recorded in "
        "STATE_DIR",
    )
    for name, fn, help_text in (
        ("up", cmd_up, "install if needed, start, wait until healthy, migrate"),
        ("down", cmd_down, "stop gracefully, keep data"),
        ("restart", cmd_restart, "down then up"),
        ("logs", cmd_logs, "print the last log lines"),
    ):
        sp = sub.add_parser(name, help=help_text, parents=[topo])
        sp.add_argument(
            "services",
            nargs="*",
            type=service_name,
            metavar="SERVICE",
            help="any of the services `status` lists (default: all)",
        )
        if name == "logs":
            sp.add_argument("-n", "--lines", type=int, default=40)
        sp.set_defaults(fn=fn)
    sub.add_parser(
        "status", help="pid, port and health of each service", parents=[topo]
    ).set_defaults(fn=cmd_status)
    sub.add_parser("demo", help="run the pipeline on the offline feed").set_defaults(fn=cmd_demo)
    sub.add_parser("clean", help="stop and delete STATE_DIR", parents=[topo]).set_defaults(
        fn=cmd_clean
    )
    sub.add_parser(
        "env", help="export lines for our services to use the cluster topology", parents=[topo]
    ).set_defaults(fn=cmd_env)
    sp = sub.add_parser(
        "submit",
        help="run the stream processor or a GBM command on the cluster's Spark master",
        parents=[topo],
    )
    sp.add_argument("module", choices=("stream_processor", "gbm_analysis"))
    sp.add_argument("args", nargs=argparse.REMAINDER, help="the module's own arguments")
    sp.add_argument("--cores", type=int, help="total executor cores (default: one per worker)")
    sp.set_defaults(fn=cmd_submit)
    sub.add_parser("install", help="check Java, resolve all jars and Trino").set_defaults(
        fn=cmd_install
    )
    sp = sub.add_parser(
        "sql", help="run one SQL query through Trino and print the rows", parents=[topo]
    )
    sp.add_argument("query", help="e.g. 'SELECT * FROM market.trades_agg_1m LIMIT 5'")
    sp.add_argument("--timeout", type=float, default=120)
    sp.set_defaults(fn=cmd_sql)
    sp = sub.add_parser("serve", help="run one service in the foreground (for a systemd unit)")
    sp.add_argument("service", choices=[cls.name for cls in SERVICE_CLASSES])
    sp.set_defaults(fn=cmd_serve)
    sp = sub.add_parser("units", help="write systemd units for this checkout into a folder")
    sp.add_argument("--dest", type=Path, required=True)
    sp.add_argument("--user", help="the account the services run as (default: you)")
    sp.set_defaults(fn=cmd_units)
    sp = sub.add_parser(
        "migrate", help="apply pending CQL migrations to a keyspace", parents=[topo]
    )
    sp.add_argument("--keyspace")
    sp.set_defaults(fn=cmd_migrate)
    sp = sub.add_parser("drop-keyspace", help="drop a (test) keyspace", parents=[topo])
    sp.add_argument("keyspace")
    sp.set_defaults(fn=cmd_drop_keyspace)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    # The Cassandra driver logs connection refusals at WARNING while we poll for readiness.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    args = parser().parse_args(argv)
    try:
        config = InfraConfig.from_env()
        args.fn(config, args)
    except (InfraError, SettingsError) as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
