"""``python -m infra demo``: the whole pipeline on the built-in offline feed, no token, no internet.

offline feed (simulator) -> collector -> Kafka -> stream processor -> Cassandra -> GBM forecast ->
backtest. Each step runs as its own process, exactly as a user would start it; their logs go to
``$STATE_DIR/demo/``. Progress is printed every few seconds.

Once every trade the demo counted is in Cassandra and the forecast is scored, the feed, collector
and stream processor keep running, with the hourly forecaster beside them, so the dashboards stay
live until ``make down``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from infra.config import InfraConfig
from infra.demo_counts import (
    TIME_COLUMNS,
    count_since,
    days_between,
    kafka_end_offsets,
    produced_since,
    window_floor,
)
from infra.errors import DemoError, InfraError
from infra.pipeline import PipelineProcess, pipeline_steps
from infra.process import port_bindable
from infra.trino import CATALOG, run_query
from schemas.contracts import TABLE_AGG_1M, TABLE_AGG_5S, TABLE_TRADES
from schemas.runtime.cassandra import connect
from schemas.settings import (
    CassandraSettings,
    KafkaSettings,
    SettingsError,
    env_value,
    number_setting,
    parse_duration_ms,
    port_setting,
    seconds_setting,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    seconds: float = 150
    feed_port: int = 8765
    rate: float = 200
    forecast_every: str = "1h"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DemoSettings:
        env = os.environ if env is None else env
        return cls(
            seconds=seconds_setting(env, "DEMO_DURATION", cls.seconds, minimum_s=30),
            feed_port=port_setting(env, "FEED_PORT", cls.feed_port),
            rate=number_setting(env, "DEMO_RATE", cls.rate, minimum=1),
            forecast_every=forecast_interval(
                env_value(env, "DEMO_FORECAST_EVERY") or cls.forecast_every
            ),
        )


def forecast_interval(raw: str) -> str:
    """The forecaster's ``--every``, checked here so a typo fails before anything starts.

    >>> forecast_interval("15m")
    '15m'
    """
    parse_duration_ms("DEMO_FORECAST_EVERY", raw)
    return raw


class Processes:
    """The demo's steps: long-running ones as pipeline processes that outlive the demo, one-off
    jobs (forecast, backtest) run to completion. Logs under ``$STATE_DIR/demo/``."""

    def __init__(self, config: InfraConfig, env: dict[str, str]) -> None:
        self.config = config
        self.env = env
        self.log_dir = config.state_dir / "demo"
        self.steps: dict[str, PipelineProcess] = {}
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], ports: dict[str, int] | None = None) -> None:
        step = PipelineProcess(self.config, name, args, self.env, ports)
        if not step.start():
            raise DemoError(f"{name} is already running (pid {step.pid()}); `make down` first")
        self.steps[name] = step

    def run(self, name: str, argv: list[str]) -> int:
        with open(self.log(name), "wb") as log:
            return subprocess.run(
                [sys.executable, *argv],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            ).returncode

    def check_alive(self, *names: str) -> None:
        for name in names:
            if self.steps[name].pid() is None:
                raise DemoError(f"{name} exited; see {self.log(name)}")

    def stop(self, name: str) -> None:
        step = self.steps.pop(name, None)
        if step is not None:
            step.stop()

    def stop_all(self) -> None:
        for name in reversed(list(self.steps)):
            self.stop(name)

    def log(self, name: str) -> Path:
        step = self.steps.get(name)
        return step.stdout_log if step else self.log_dir / f"{name}.log"

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def run_demo(config: InfraConfig) -> None:
    demo = DemoSettings.from_env()
    running = [n for n, step in pipeline_steps(config).items() if step.pid() is not None]
    if running:
        raise SettingsError(
            f"the pipeline is already running ({', '.join(running)}); " "`make down` stops it"
        )
    if not port_bindable(demo.feed_port):
        raise SettingsError(f"FEED_PORT={demo.feed_port} is already in use; set another")
    kafka = KafkaSettings.from_env()
    cassandra = CassandraSettings.from_env()
    env = {
        **os.environ,
        "FINNHUB_WS_URL": f"ws://127.0.0.1:{demo.feed_port}",
        "PYTHONUNBUFFERED": "1",
        # Demo-sized forecasts: minutes of bars, 5-second steps, so the backtest can score them.
        "GBM_LOOKBACK": env_value(os.environ, "GBM_LOOKBACK") or "30m",
        "GBM_STEP": env_value(os.environ, "GBM_STEP") or "5s",
        "GBM_STEPS": env_value(os.environ, "GBM_STEPS") or "12",
        "GBM_MIN_BARS": env_value(os.environ, "GBM_MIN_BARS") or "8",
        "GBM_PATHS": env_value(os.environ, "GBM_PATHS") or "2000",
    }
    procs = Processes(config, env)
    run = DemoRun(kafka.bootstrap_servers)
    print(
        f"demo: running for {demo.seconds:.0f} s at ~{demo.rate:.0f} trades/s; logs in "
        f"{procs.log_dir}",
        flush=True,
    )
    try:
        procs.start(
            "feed",
            ["--simulate", "--port", str(demo.feed_port), "--rate", str(demo.rate)],
            {"feed": demo.feed_port},
        )
        procs.start("stream_processor", [])
        time.sleep(3)
        procs.start("collector", [])
        _watch(procs, demo, run, cassandra, env)
        summary = _summary(run, cassandra, config)
        # Counted and scored: from here on the market stays live for the dashboards.
        procs.start("collector", [])
        procs.start("forecaster", ["run", "--every", demo.forecast_every])
    except (InfraError, KeyboardInterrupt) as exc:
        print(f"demo: stopped: {exc}", file=sys.stderr)
        for name in list(procs.steps):
            print(f"--- last lines of {procs.log(name)}\n{procs.tail(name)}", file=sys.stderr)
        procs.stop_all()
        raise SystemExit(1) from None
    except BaseException:
        procs.stop_all()
        raise
    print(summary + live_note(config, demo.forecast_every), flush=True)


def _watch(
    procs: Processes,
    demo: DemoSettings,
    run: DemoRun,
    cassandra: CassandraSettings,
    env: dict[str, str],
) -> None:
    started = time.monotonic()
    # Forecast once every symbol has this many closed bars behind the as-of point, then keep
    # streaming until every horizon step of that forecast is realised (plus the watermark).
    bars_needed = int(env["GBM_MIN_BARS"]) + 8
    horizon_s = 5 * int(env["GBM_STEPS"]) + 30
    stop_after = demo.seconds
    forecast_done = False
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        while not forecast_done or time.monotonic() - started < stop_after:
            if time.monotonic() - started > stop_after + 600:
                raise DemoError(
                    f"fewer than {bars_needed} new 5-second bars per symbol "
                    "after 10 minutes; see the stream_processor log"
                )
            procs.check_alive("feed", "stream_processor", "collector")
            elapsed = time.monotonic() - started
            counts = run.produced()
            fresh_bars = count_since(session, TABLE_AGG_5S, run.started)
            minute_bars = count_since(session, TABLE_AGG_1M, run.started)
            print(
                f"demo: t={elapsed:4.0f}s  kafka trades={counts['trades']:,}  "
                f"dlq={counts['dlq']:,}  5s bars={sum(fresh_bars.values()):,}  "
                f"1m bars={sum(minute_bars.values()):,}",
                flush=True,
            )
            if not forecast_done and fresh_bars and min(fresh_bars.values()) >= bars_needed:
                # As of 30 s ago, so that the bars it uses have closed under the watermark.
                argv = ["-m", "gbm_analysis", "run", "--once", "--as-of=-30s"]
                print(
                    f"demo: forecasting from the bars so far: python {' '.join(argv)}", flush=True
                )
                code = procs.run("gbm_run", argv)
                if code != 0:
                    raise DemoError(f"gbm run exited {code}:\n{procs.tail('gbm_run')}")
                print(procs.tail("gbm_run", 1), flush=True)
                forecast_done = True
                stop_after = max(stop_after, time.monotonic() - started + horizon_s)
            time.sleep(10)
        procs.check_alive("collector")
        procs.stop("collector")
        print(
            "demo: collector stopped (SIGTERM, flushed); letting the stream processor catch up",
            flush=True,
        )
        produced = run.produced()["trades"]
        deadline = time.monotonic() + 120
        while (stored := sum(count_since(session, TABLE_TRADES, run.started).values())) < produced:
            procs.check_alive("stream_processor")
            if time.monotonic() > deadline:
                raise DemoError(f"only {stored:,} of {produced:,} trades reached Cassandra")
            time.sleep(3)
        time.sleep(6)  # the bar queries trigger every 5 s; let them write their last update
        print("demo: scoring the forecast: python -m gbm_analysis backtest", flush=True)
        code = procs.run("gbm_backtest", ["-m", "gbm_analysis", "backtest"])
        report = procs.tail("gbm_backtest", 40).splitlines()
        print("\n".join(line for line in report if " INFO " not in line), flush=True)
        if code != 0:
            raise DemoError(f"gbm backtest exited {code}")
    finally:
        cluster.shutdown()


def _summary(run: DemoRun, cassandra: CassandraSettings, config: InfraConfig) -> str:
    """This run's counts at the moment every trade it produced is stored (collector stopped)."""
    counts = run.produced()
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        written = {t: count_since(session, t, run.started) for t in TIME_COLUMNS}
    finally:
        cluster.shutdown()
    tables = {t: sum(per_symbol.values()) for t, per_symbol in written.items()}
    span = (run.started, datetime.now(UTC))
    # The same counts through SQL, the way dashboards read them: partition keys and time bound.
    via_trino = {
        t: run_query(
            config.trino_port, trino_count_sql(cassandra.keyspace, t, written[t], span)
        ).rows[0][0]
        for t in (TABLE_TRADES, TABLE_AGG_5S, TABLE_AGG_1M, "gbm_forecasts")
    }
    return summary_text(config, cassandra, counts, tables, via_trino)


@dataclass
class DemoRun:
    """When this run started and the topics' end offsets then: what it produced is the growth."""

    bootstrap: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    offsets_at_start: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets_at_start = kafka_end_offsets(self.bootstrap)

    def produced(self) -> dict[str, int]:
        return produced_since(self.offsets_at_start, kafka_end_offsets(self.bootstrap))


def trino_count_sql(
    keyspace: str, table: str, symbols: Iterable[str], span: tuple[datetime, datetime]
) -> str:
    """A count of ``table``'s rows from the span's start, in the symbols' partitions of its days.

    >>> span = (datetime(2026, 11, 30, 3, 7, 42, 250000, tzinfo=UTC),
    ...         datetime(2026, 11, 30, 3, 9, tzinfo=UTC))
    >>> print(trino_count_sql("market", "trades", ["B'X", "AAPL"], span))
    ... # doctest: +NORMALIZE_WHITESPACE
    SELECT count(*) FROM market.trades WHERE symbol IN ('AAPL', 'B''X')
      AND day IN (DATE '2026-11-30') AND trade_ts >= TIMESTAMP '2026-11-30 03:07:42.250 UTC'
    """
    if not symbols:
        return "SELECT 0"
    column, width = TIME_COLUMNS[table]
    start = window_floor(span[0].astimezone(UTC), width)
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sorted(symbols))
    days = ", ".join(f"DATE '{d.isoformat()}'" for d in days_between(start, span[1]))
    stamp = start.strftime("%Y-%m-%d %H:%M:%S.") + f"{start.microsecond // 1000:03d} UTC"
    return (
        f"SELECT count(*) FROM {keyspace}.{table} WHERE symbol IN ({quoted}) "
        f"AND day IN ({days}) AND {column} >= TIMESTAMP '{stamp}'"
    )


def summary_text(
    config: InfraConfig,
    cassandra: CassandraSettings,
    counts: dict[str, int],
    tables: dict[str, int],
    via_trino: dict[str, int],
) -> str:
    """The demo's closing summary; every command it suggests is one a fresh clone has."""
    return (
        f"""
demo: done.
  Written by this run, counted in each store:
  Kafka      127.0.0.1:{config.kafka_port}  trades={counts['trades']:,}  dlq={counts['dlq']:,}
  Cassandra  127.0.0.1:{config.cassandra_port}  keyspace {cassandra.keyspace}: """
        + "  ".join(f"{t}={n:,}" for t, n in tables.items())
        + f"""
             user {cassandra.username}, password in {config.state_dir}/credentials.env
  Trino      http://127.0.0.1:{config.trino_port}  catalog {CATALOG} (read-only): """
        + "  ".join(f"{t}={n:,}" for t, n in via_trino.items())
        + f"""
             python -m infra sql 'SELECT * FROM {cassandra.keyspace}.trades_agg_1m LIMIT 5'"""
    )


def live_note(config: InfraConfig, forecast_every: str) -> str:
    """What the demo leaves running and where to look; printed after :func:`summary_text`."""
    dashboards = "\n".join(f"  {label:<10} {url}" for label, url in dashboard_urls(config).items())
    return f"""
{dashboards}
             Superset login: SUPERSET_ADMIN_USER / SUPERSET_ADMIN_PASSWORD
             in {config.state_dir}/credentials.env (unless set in the environment)
  Forecast API: python -m gbm_analysis serve   (then http://127.0.0.1:8000/docs)
  Still running, so the dashboards stay live: the offline feed, the collector, the stream
  processor, and a forecast every {forecast_every} (logs in {config.state_dir}/demo/).
  `make status` shows them, `make down` stops everything, `make clean` wipes the data."""


def dashboard_urls(config: InfraConfig) -> dict[str, str]:
    return {
        "Superset": f"http://127.0.0.1:{config.superset_port}/superset/dashboard/market-overview/",
        "Streamlit": f"http://127.0.0.1:{config.streamlit_port}/",
    }
