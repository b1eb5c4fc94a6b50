"""Dashboard benchmark: the dashboards' queries through Trino, and both dashboards in a browser.

Usage::

    .venv/bin/python benchmarks/dashboards.py [--repeat 20] [--loads 5] [--keep]
        [--skip-queries] [--skip-browser] [--only superset|streamlit] [--built-in-queries]

1. Data: 24 hours of 5-second bars (and their 1-minute and 1-hour rollups) for the collector's
   default symbols in a scratch keyspace ``bench_dash`` (``python -m infra migrate``), written as
   single-partition unlogged batches with the driver's concurrent execution; dropped at the end
   unless ``--keep``.
2. Queries: every chart query of the Superset "Market overview" dashboard as Superset sends it to
   Trino: rendered by ``GET /api/v1/chart/<id>/data/?type=query``, then formatted by Superset's
   own sqlglot step (in its venv), which rewrites literals Trino treats differently (see
   ``as_executed``). Those on bar tables run against the scratch
   keyspace, ``--repeat`` times through Trino's REST API (p50/p95, target <= 1 s), next to a CQL
   read of the same partitions with the same columns and time bound (the floor: what Trino has to
   fetch from Cassandra anyway). Every chart query also runs as it is on the live keyspace,
   rendered again just before (its relative time range resolved then). When
   Superset is not running, queries written here stand in (``--built-in-queries`` forces them);
   note that Trino turns ``day IN`` of consecutive days into a range, which the Cassandra
   connector cannot push down (a full scan; trinodb/trino#28624): the Superset datasets use one
   ``day =`` per UNION ALL branch instead.
3. Browser (headless chromium), on the live data: the Superset dashboard from navigation until
   every chart has been drawn once (target <= 3 s; the first chart is reported too, with how
   many chart-data answers came from Superset's results cache and the CPU seconds Chromium,
   Superset and Trino used during the load), and the
   Streamlit explorer's time to its fan chart in a fresh browser session (target <= 2 s),
   ``--loads`` times each.

Needs the stack with Superset and Streamlit (``python -m infra up``). Prints tables and writes
``benchmarks/results/dashboards.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    infra,
    process_tree_cpu_s,
    service_pid,
    write_results,
)
from collector.config import DEFAULT_SYMBOLS  # noqa: E402
from infra.config import InfraConfig  # noqa: E402
from infra.trino import run_query  # noqa: E402
from schemas.settings import CassandraSettings  # noqa: E402
from stream_processor.transforms import BAR_COLUMNS  # noqa: E402 - the bar tables' columns

RESULTS = ROOT / "benchmarks" / "results" / "dashboards.json"
KEYSPACE = "bench_dash"
LIVE_KEYSPACE = CassandraSettings.from_env().keyspace  # the one Superset's datasets read
BAR_S = 5
HOURS = 24
BAR_TABLES = ("trades_agg_5s", "trades_agg_1m", "trades_agg_1h")
BATCH_ROWS = 100
QUERY_TARGET_S, SUPERSET_TARGET_S, STREAMLIT_TARGET_S = 1.0, 3.0, 2.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- data ------------------------------------------------------------------------------------


def synthetic_bars(symbols: tuple[str, ...], end: datetime) -> dict[str, pd.DataFrame]:
    """24 h of 5-s OHLCV bars per symbol ending at ``end``, and their 1-m and 1-h rollups."""
    n = HOURS * 3600 // BAR_S
    starts = pd.date_range(end=end - timedelta(seconds=BAR_S), periods=n, freq=f"{BAR_S}s")
    rng = np.random.default_rng(7)
    frames = []
    for k, symbol in enumerate(symbols):
        close = (100.0 + 50 * k) * np.exp(np.cumsum(rng.normal(0, 3e-4, n)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0, 2e-4, n)) * close
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "window_start": starts,
                    "open": open_,
                    "close": close,
                    "high": np.maximum(open_, close) + spread,
                    "low": np.minimum(open_, close) - spread,
                    "volume": rng.gamma(2.0, 5.0, n),
                    "trade_count": rng.poisson(20, n) + 1,
                }
            )
        )
    bars_5s = pd.concat(frames, ignore_index=True)
    bars_5s["vwap"] = (bars_5s["open"] + bars_5s["close"]) / 2
    out = {"trades_agg_5s": _finish(bars_5s, timedelta(seconds=BAR_S))}
    for table, freq, width in (
        ("trades_agg_1m", "1min", timedelta(minutes=1)),
        ("trades_agg_1h", "1h", timedelta(hours=1)),
    ):
        bucket = bars_5s["window_start"].dt.floor(freq)
        notional = bars_5s["vwap"] * bars_5s["volume"]
        grouped = (
            bars_5s.assign(window_start=bucket, notional=notional)
            .groupby(["symbol", "window_start"], as_index=False)
            .agg(
                open=("open", "first"),
                high=("high", "max"),
                low=("low", "min"),
                close=("close", "last"),
                volume=("volume", "sum"),
                trade_count=("trade_count", "sum"),
                notional=("notional", "sum"),
            )
        )
        grouped["vwap"] = grouped.pop("notional") / grouped["volume"]
        out[table] = _finish(grouped, width)
    return out


def _finish(frame: pd.DataFrame, width: timedelta) -> pd.DataFrame:
    frame = frame.copy()
    frame["window_end"] = frame["window_start"] + width
    frame["first_trade_ts"] = frame["window_start"]
    frame["last_trade_ts"] = frame["window_end"] - pd.Timedelta(milliseconds=1)
    frame["day"] = frame["window_start"].dt.date
    return frame[list(BAR_COLUMNS)]


def write_bars(session: Any, keyspace: str, bars: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Unlogged batches of one partition's rows, many in flight: one round trip per 100 rows."""
    from cassandra.concurrent import execute_concurrent
    from cassandra.query import BatchStatement, BatchType

    written, t0 = 0, time.perf_counter()
    for table, frame in bars.items():
        stmt = session.prepare(
            f"INSERT INTO {keyspace}.{table} ({', '.join(BAR_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(BAR_COLUMNS))})"
        )
        batches = []
        for _, part in frame.groupby(["symbol", "day"], sort=False):
            rows = [
                (
                    r[0],
                    r[1],
                    r[2].to_pydatetime(),
                    r[3].to_pydatetime(),
                    *map(float, r[4:10]),
                    int(r[10]),
                    r[11].to_pydatetime(),
                    r[12].to_pydatetime(),
                )
                for r in part.itertuples(index=False, name=None)
            ]
            for i in range(0, len(rows), BATCH_ROWS):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for row in rows[i : i + BATCH_ROWS]:
                    batch.add(stmt, row)
                batches.append((batch, ()))
        execute_concurrent(session, batches, concurrency=16, raise_on_first_error=True)
        written += len(frame)
        print(f"  {table}: {len(frame):,} rows", flush=True)
    seconds = time.perf_counter() - t0
    return {"rows": written, "seconds": seconds, "rows_per_s": written / seconds}


# --- the dashboard's queries -----------------------------------------------------------------


@dataclass
class DashboardQuery:
    name: str
    sql: str  # Trino SQL against the scratch keyspace
    table: str  # the bar table it reads
    columns: list[str]  # the columns it needs, for the CQL floor
    since: datetime | None  # its lower bound on window_start, if any
    symbols: list[str] | None = None  # the symbols it reads, when fewer than all


def built_in_queries(
    keyspace: str, symbols: tuple[str, ...], days: list[date], end: datetime
) -> list[DashboardQuery]:
    """What a market overview asks, written with both partition keys restricted."""
    where = (
        f"symbol IN ({', '.join(repr(s) for s in symbols)}) "
        f"AND day IN ({', '.join(f'DATE {str(d)!r}' for d in days)})"
    )

    def ts(t: datetime) -> str:
        return f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S} UTC'"

    day_ago, hour_ago = end - timedelta(hours=24), end - timedelta(hours=1)
    specs = [
        (
            "last price per symbol",
            "trades_agg_1m",
            ["symbol", "window_start", "close"],
            None,
            "SELECT symbol, max_by(close, window_start) AS last_price, max(window_start) AS at "
            f"FROM {keyspace}.trades_agg_1m WHERE {where} GROUP BY symbol",
        ),
        (
            "24 h change per symbol",
            "trades_agg_1h",
            ["symbol", "window_start", "open", "close"],
            day_ago,
            "SELECT symbol, (max_by(close, window_start) / min_by(open, window_start) - 1) * 100 "
            f"AS change_pct FROM {keyspace}.trades_agg_1h WHERE {where} "
            f"AND window_start >= {ts(day_ago)} GROUP BY symbol",
        ),
        (
            "1-m close, 24 h",
            "trades_agg_1m",
            ["symbol", "window_start", "close"],
            day_ago,
            f"SELECT window_start, symbol, close FROM {keyspace}.trades_agg_1m WHERE {where} "
            f"AND window_start >= {ts(day_ago)} ORDER BY window_start LIMIT 50000",
        ),
        (
            "hourly volume, 24 h",
            "trades_agg_1h",
            ["symbol", "window_start", "volume"],
            day_ago,
            f"SELECT window_start, symbol, sum(volume) AS volume FROM {keyspace}.trades_agg_1h "
            f"WHERE {where} AND window_start >= {ts(day_ago)} GROUP BY 1, 2 ORDER BY 1",
        ),
        (
            "5-s bars, last hour",
            "trades_agg_5s",
            ["symbol", "window_start", "close", "volume"],
            hour_ago,
            f"SELECT window_start, symbol, close, volume FROM {keyspace}.trades_agg_5s "
            f"WHERE {where} AND window_start >= {ts(hour_ago)} ORDER BY window_start LIMIT 50000",
        ),
        (
            "trades and volume, 24 h (5-s bars)",
            "trades_agg_5s",
            ["symbol", "trade_count", "volume"],
            None,
            "SELECT symbol, sum(trade_count) AS trades, sum(volume) AS volume "
            f"FROM {keyspace}.trades_agg_5s WHERE {where} GROUP BY symbol ORDER BY trades DESC",
        ),
    ]
    return [
        DashboardQuery(name, sql, table, cols, since) for name, table, cols, since, sql in specs
    ]


_TABLE_RE = re.compile(r'\bFROM\s+(?:"?\w+"?\.)*"?(\w+)"?', re.IGNORECASE)
_SYMBOLS_RE = re.compile(r"\bsymbol\s+IN\s*\(([^)]*)\)", re.IGNORECASE)
# The lower time bound Superset renders, e.g. window_start >= from_iso8601_timestamp('...').
_SINCE_RE = re.compile(r"window_start\"?\s*>=?\s*[^'\n]*'([0-9T:\-. ]+)", re.IGNORECASE)


def query_from_superset(name: str, sql: str, keyspace: str) -> DashboardQuery | None:
    """A chart's SQL as Superset renders it, pointed at ``keyspace``; None if it reads no bar
    table (forecast charts are left out: the scratch keyspace holds bars only)."""
    live = re.compile(rf'(?<!\w)"?{re.escape(LIVE_KEYSPACE)}"?\.', re.IGNORECASE)
    sql = live.sub(f"{keyspace}.", sql.strip().rstrip(";"))
    tables = [t.lower() for t in _TABLE_RE.findall(sql) if t.lower() != "virtual_table"]
    if not tables or tables[0] not in BAR_TABLES:
        return None
    words = set(re.findall(r"\w+", sql.lower()))
    since = _SINCE_RE.search(sql)
    lists = [{v.strip().strip("'") for v in m.split(",")} for m in _SYMBOLS_RE.findall(sql)]
    symbols = sorted(set.intersection(*lists)) if lists else None
    return DashboardQuery(
        name,
        sql,
        tables[0],
        [c for c in BAR_COLUMNS if c in words] or ["symbol", "window_start"],
        datetime.fromisoformat(since.group(1).strip()).replace(tzinfo=UTC) if since else None,
        symbols,
    )


class SupersetApi:
    """Just enough of Superset's REST API, with a JWT from the admin login."""

    def __init__(self, urls: Any, timeout: float = 120) -> None:
        self.base, self.timeout = urls.superset, timeout
        self.token: str | None = None
        self.token = self.call(
            "/api/v1/security/login",
            body={
                "username": urls.superset_user,
                "password": urls.superset_password.get_secret_value(),
                "provider": "db",
                "refresh": False,
            },
        )["access_token"]
        self.slug = urls.dashboard_slug

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        token = self.token
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=json.dumps(body).encode() if body else None,
            # No Content-Type on a GET: Superset then tries to parse the empty body and says 400.
            headers={
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if body else {}),
                **({"Authorization": f"Bearer {token}"} if token else {}),
            },
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.load(response)

    def charts(self) -> list[dict[str, Any]]:
        return self.call(f"/api/v1/dashboard/{self.slug}/charts")["result"]


def superset_chart_sql(urls: Any) -> list[tuple[str, str]]:
    """(chart name, SQL) of every chart on the dashboard, rendered by Superset itself."""
    api = SupersetApi(urls)
    out = []
    for chart in api.charts():
        data = api.call(f"/api/v1/chart/{chart['id']}/data/?type=query&format=json")
        for n, part in enumerate(data["result"]):
            suffix = f" #{n + 1}" if len(data["result"]) > 1 else ""
            out.append((f"{chart['slice_name']}{suffix}", part["query"]))
    return out


# Superset's own formatting step (superset.models.core.Database._execute_sql_with_mutation_and_
# logging), run on each statement before it goes to the database.
_FORMAT_IN_SUPERSET = """
import json, sys
from superset.sql.parse import SQLScript
sqls = json.load(sys.stdin)
print(json.dumps([";\\n".join(s.format() for s in SQLScript(q, "trino").statements) for q in sqls]))
"""


def as_executed(sqls: list[str], venv: Path) -> list[str]:
    """Each chart's SQL as Superset sends it to Trino. ``?type=query`` answers with the SQL before
    Superset's sqlglot pass, which rewrites e.g. ``TIMESTAMP '2026-11-30 08:01:00.000000'`` (a
    timestamp(6): Trino then casts the timestamp(3) clustering column and reads every trade of
    the day) into ``CAST('2026-11-30 08:01:00.000000' AS TIMESTAMP)``, a range Cassandra serves.
    Timing the unformatted text measured a query Superset never runs (20-23 s instead of
    0.3-0.4 s for "latest trades" at load 15-20)."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _FORMAT_IN_SUPERSET],
        input=json.dumps(sqls),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"formatting in Superset's venv failed: {result.stderr[-500:]}")
    formatted: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return formatted


def superset_chart_sql_as_executed(urls: Any, venv: Path) -> list[tuple[str, str]]:
    """(chart name, SQL as it reaches Trino) of every chart on the dashboard, rendered now."""
    rendered = superset_chart_sql(urls)
    executed = as_executed([sql for _, sql in rendered], venv)
    return [(name, sql) for (name, _), sql in zip(rendered, executed, strict=True)]


def time_superset_api(urls: Any, repeat: int) -> list[dict[str, Any]]:
    """Each chart's data through Superset's API, one request at a time and bypassing its cache:
    Trino's time plus Superset's own work per chart, without the browser."""
    api = SupersetApi(urls)
    out = []
    for chart in api.charts():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            api.call(f"/api/v1/chart/{chart['id']}/data/?force=true")
            times.append(time.perf_counter() - t0)
        out.append(
            {
                "name": chart["slice_name"],
                "p50_s": percentile(times, 50),
                "p95_s": percentile(times, 95),
            }
        )
        print(
            f"  {chart['slice_name'][:48]:<48} superset api p50 {out[-1]['p50_s']:.3f} s",
            flush=True,
        )
    return out


def time_trino(config: InfraConfig, query: DashboardQuery, repeat: int) -> dict[str, Any]:
    result = run_query(config.trino_port, query.sql, timeout=120)  # warm-up, and the row count
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run_query(config.trino_port, query.sql, timeout=120)
        times.append(time.perf_counter() - t0)
    return {
        "rows": len(result.rows),
        "p50_s": percentile(times, 50),
        "p95_s": percentile(times, 95),
        "max_s": max(times),
    }


def time_cql(
    session: Any,
    keyspace: str,
    query: DashboardQuery,
    symbols: tuple[str, ...],
    days: list[date],
    repeat: int,
) -> dict[str, Any]:
    """Read the query's partitions concurrently, with its columns and time bound."""
    from cassandra.concurrent import execute_concurrent_with_args

    bound = " AND window_start >= ?" if query.since else ""
    stmt = session.prepare(
        f"SELECT {', '.join(query.columns)} FROM {keyspace}.{query.table} "
        f"WHERE symbol = ? AND day = ?{bound}"
    )
    params = [
        (s, d, *([query.since] if query.since else []))
        for s in query.symbols or symbols
        for d in days
    ]

    def read() -> int:
        results = execute_concurrent_with_args(
            session, stmt, params, concurrency=16, results_generator=False
        )
        return sum(len(list(result)) for ok, result in results)

    rows = read()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        read()
        times.append(time.perf_counter() - t0)
    return {"rows": rows, "p50_s": percentile(times, 50), "p95_s": percentile(times, 95)}


# --- browser ---------------------------------------------------------------------------------


def time_browser(loads: int, only: str | None = None) -> dict[str, Any]:
    """Each page on its own: one that cannot be measured is reported, the other still runs.
    ``only`` (``superset`` or ``streamlit``) times that page alone."""
    from infra import browser as pages

    urls = pages.DashboardUrls.from_env()
    out: dict[str, Any] = {}
    loaders = (("superset", _superset_load), ("streamlit", _streamlit_load))
    with pages.launch() as browser:
        for key, one in [(k, f) for k, f in loaders if only in (None, k)]:
            try:
                runs = [one(browser, urls) for _ in range(loads)]
            except Exception as exc:  # noqa: BLE001 - report any failure of the page and go on
                out[key] = {"error": " ".join(str(exc).split())[:300]}
                print(f"  {key}: not measured: {out[key]['error']}", flush=True)
                continue
            times = [run["done_s"] for run in runs]
            out[key] = {
                "first_s": times[0],
                "p50_s": percentile(times, 50),
                "max_s": max(times),
                "first_chart_p50_s": percentile([r["first_chart_s"] for r in runs], 50),
                "loads": runs,
            }
            print(f"  {key}: first {times[0]:.2f} s, p50 {out[key]['p50_s']:.2f} s", flush=True)
            for n, run in enumerate(runs):
                if "cpu_s" in run:
                    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run["cpu_s"].items())
                    print(
                        f"    load {n + 1}: {run['done_s']:.2f} s (first chart "
                        f"{run['first_chart_s']:.2f} s), {run['from_cache']} of "
                        f"{run['chart_data_answers']} chart-data answers from the cache, "
                        f"CPU s: {cpu}",
                        flush=True,
                    )
    return out


def _cpu_now() -> dict[str, float]:
    """CPU seconds so far of Chromium (every process under this one: Playwright's driver and
    the browser), Superset (gunicorn and its workers) and Trino."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {"browser": process_tree_cpu_s(os.getpid()) - own.ru_utime - own.ru_stime}
    for name in ("superset", "trino"):
        if (pid := service_pid(name)) is not None:
            cpu[name] = process_tree_cpu_s(pid)
    return cpu


def _note_chart_data(response: Any, cached: list[bool]) -> None:
    """Whether each chart-data answer came from Superset's results cache (every query in it)."""
    if "/api/v1/chart/data" not in response.url or response.request.method != "POST":
        return
    try:
        results = response.json()["result"]
    except Exception:  # noqa: BLE001 - an error page or a non-JSON body: not counted
        return
    cached.append(all(result.get("is_cached") for result in results))


def _superset_load(browser: Any, urls: Any) -> dict[str, Any]:
    """A logged-in user opens the dashboard: from navigation to the first and to the last chart
    drawn (the welcome page's own requests are let finish first), with how many chart-data
    answers came from Superset's cache and the CPU seconds used meanwhile."""
    from infra.browser import VIEWPORT, open_dashboard, superset_login

    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    cached: list[bool] = []
    page.on("response", lambda response: _note_chart_data(response, cached))
    try:
        superset_login(page, urls)
        page.wait_for_load_state("networkidle")
        cached.clear()
        before = _cpu_now()
        cells = open_dashboard(page, urls, timeout_s=120)
        # Read before the context closes: its renderer's CPU leaves the process tree with it.
        after = _cpu_now()
        bad = [c.title for c in cells if c.error or c.empty or not c.rendered]
        if bad:
            raise RuntimeError(f"superset charts not drawn: {', '.join(bad)}")
        times = [c.settled_s or 0.0 for c in cells]
        return {
            "first_chart_s": min(times),
            "done_s": max(times),
            "charts": len(cells),
            "chart_data_answers": len(cached),
            "from_cache": sum(cached),
            "cpu_s": {k: round(after[k] - before[k], 2) for k in after if k in before},
        }
    finally:
        context.close()


def _streamlit_load(browser: Any, urls: Any) -> dict[str, Any]:
    """A new browser session opens the explorer: to its first chart, and to the end of the
    script run (every chart and table)."""
    from infra.browser import STREAMLIT_RUNNING, VIEWPORT, open_streamlit

    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        t0 = time.perf_counter()
        open_streamlit(page, urls)
        first = time.perf_counter() - t0
        page.wait_for_selector(STREAMLIT_RUNNING, state="detached", timeout=120_000)
        return {"first_chart_s": first, "done_s": first, "script_done_s": time.perf_counter() - t0}
    finally:
        context.close()


# --- main ------------------------------------------------------------------------------------


def bench_queries(config: InfraConfig, repeat: int, keep: bool, built_in: bool) -> dict[str, Any]:
    from infra.browser import DashboardUrls
    from schemas.runtime.cassandra import connect

    symbols = DEFAULT_SYMBOLS
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    days = sorted({(end - timedelta(hours=HOURS)).date(), end.date()})
    print(f"data: {HOURS} h of {BAR_S}-s bars x {len(symbols)} symbols into {KEYSPACE}", flush=True)
    infra("migrate", "--keyspace", KEYSPACE)
    cassandra = CassandraSettings.from_env({**os.environ, "CASSANDRA_KEYSPACE": KEYSPACE})
    cluster, session = connect(cassandra)
    try:
        # A rerun rewrites the same tables: start empty so the row counts stay 24 h.
        for table in BAR_TABLES:
            session.execute(f"TRUNCATE {KEYSPACE}.{table}", timeout=120)
        writes = write_bars(session, KEYSPACE, synthetic_bars(symbols, end))
        print(
            f"  {writes['rows']:,} rows in {writes['seconds']:.1f} s "
            f"({writes['rows_per_s']:,.0f} rows/s)",
            flush=True,
        )

        source, queries = "built-in", built_in_queries(KEYSPACE, symbols, days, end)
        rendered: list[tuple[str, str]] = []
        if not built_in:
            try:
                rendered = superset_chart_sql_as_executed(
                    DashboardUrls.from_env(), config.superset_venv
                )
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                print(f"queries: Superset unavailable ({exc}); using the built-in ones")
            found = [
                q
                for name, sql in rendered
                if (q := query_from_superset(name, sql, KEYSPACE)) is not None
            ]
            if found:
                source, queries = "superset", found
        print(f"queries ({source}) on {KEYSPACE}: {len(queries)} x {repeat} runs", flush=True)
        floor = time_trino(config, DashboardQuery("SELECT 1", "SELECT 1", "", [], None), repeat)
        rows = []
        for query in queries:
            trino = time_trino(config, query, repeat)
            cql = time_cql(session, KEYSPACE, query, symbols, days, repeat)
            rows.append(
                {
                    **asdict(query),
                    "since": str(query.since) if query.since else None,
                    "trino": trino,
                    "cql": cql,
                }
            )
            print(
                f"  {query.name[:48]:<48} trino p50 {trino['p50_s']:.3f} s  "
                f"cql p50 {cql['p50_s']:.3f} s",
                flush=True,
            )
    finally:
        cluster.shutdown()
        if not keep:
            infra("drop-keyspace", KEYSPACE)

    live = []
    if rendered:
        print(f"chart queries as they are, on the live {LIVE_KEYSPACE} keyspace:", flush=True)
        # Rendered again: "the last 2 minutes" of the first rendering is minutes old by now.
        for name, sql in superset_chart_sql_as_executed(
            DashboardUrls.from_env(), config.superset_venv
        ):
            sql = sql.strip().rstrip(";")
            timing = time_trino(config, DashboardQuery(name, sql, "", [], None), repeat)
            live.append({"name": name, "sql": sql, "trino": timing})
            print(f"  {name[:48]:<48} trino p50 {timing['p50_s']:.3f} s", flush=True)
    api: list[dict[str, Any]] = []
    if rendered:
        print("chart data through Superset's API, one at a time (force=true):", flush=True)
        api = time_superset_api(DashboardUrls.from_env(), max(3, repeat // 4))
    return {
        "data": {
            "keyspace": KEYSPACE,
            "symbols": list(symbols),
            "hours": HOURS,
            "bar_seconds": BAR_S,
            "write": writes,
        },
        "query_source": source,
        "trino_round_trip": floor,
        "queries": rows,
        "live_queries": live,
        "superset_api": api,
    }


def print_queries(result: dict[str, Any]) -> None:
    floor = result["trino_round_trip"]
    print(
        f"\n| query ({result['query_source']}, {HOURS} h of bars) | rows | Trino p50 s | "
        f"Trino p95 s | CQL floor p50 s | p95 <= {QUERY_TARGET_S:g} s |\n"
        "|---|---:|---:|---:|---:|:---:|"
    )
    print(
        f"| Trino round trip (SELECT 1) | 1 | {floor['p50_s']:.3f} | {floor['p95_s']:.3f} | - "
        "| - |"
    )
    for row in result["queries"]:
        t, c = row["trino"], row["cql"]
        print(
            f"| {row['name']} | {t['rows']:,} | {t['p50_s']:.3f} | {t['p95_s']:.3f} | "
            f"{c['p50_s']:.3f} ({c['rows']:,} rows) | "
            f"{'yes' if t['p95_s'] <= QUERY_TARGET_S else 'NO'} |"
        )
    if result["live_queries"]:
        print(
            f"\n| chart query, live {LIVE_KEYSPACE} keyspace | rows | Trino p50 s | Trino p95 s "
            f"| p95 <= {QUERY_TARGET_S:g} s |\n|---|---:|---:|---:|:---:|"
        )
        for row in result["live_queries"]:
            t = row["trino"]
            print(
                f"| {row['name']} | {t['rows']:,} | {t['p50_s']:.3f} | {t['p95_s']:.3f} | "
                f"{'yes' if t['p95_s'] <= QUERY_TARGET_S else 'NO'} |"
            )


def print_superset_api(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| chart, through Superset's API (one at a time, no cache) | p50 s | p95 s |\n"
        "|---|---:|---:|"
    )
    for row in rows:
        print(f"| {row['name']} | {row['p50_s']:.2f} | {row['p95_s']:.2f} |")
    print(
        f"| sum of the p50s (one worker serves the dashboard) | "
        f"{sum(r['p50_s'] for r in rows):.2f} | |"
    )


def print_browser(browser: dict[str, Any]) -> None:
    print(
        "\n| page | measured to | first load s | p50 s | max s | target |\n"
        "|---|---|---:|---:|---:|:---:|"
    )
    for key, label, until, target in (
        ("superset", "Superset Market overview", "every chart drawn", SUPERSET_TARGET_S),
        ("streamlit", "Streamlit explorer", "fan chart drawn", STREAMLIT_TARGET_S),
    ):
        if key not in browser:
            continue
        b = browser[key]
        if "error" in b:
            print(f"| {label} | {until} | - | - | - | not measured: {b['error'][:120]} |")
            continue
        met = "yes" if b["p50_s"] <= target else "NO"
        print(
            f"| {label} | {until} | {b['first_s']:.2f} | {b['p50_s']:.2f} | "
            f"{b['max_s']:.2f} | <= {target:g} s: {met} |"
        )
    if "error" not in browser.get("superset", {"error": "not timed"}):
        print(f"(Superset's first chart: p50 {browser['superset']['first_chart_p50_s']:.2f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query")
    parser.add_argument("--loads", type=int, default=5, help="page loads per dashboard")
    parser.add_argument("--keep", action="store_true", help=f"keep the {KEYSPACE} keyspace")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-browser", action="store_true")
    parser.add_argument(
        "--only",
        choices=("superset", "streamlit"),
        help="time this dashboard alone in the browser",
    )
    parser.add_argument(
        "--built-in-queries",
        action="store_true",
        help="use the queries written here even when Superset runs",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.ERROR)

    config = InfraConfig.from_env()
    load_before = os.getloadavg()
    queries = (
        None
        if args.skip_queries
        else bench_queries(config, args.repeat, args.keep, args.built_in_queries)
    )
    if not args.skip_browser:
        print(f"browser: {args.loads} loads of each dashboard", flush=True)
    browser = None if args.skip_browser else time_browser(args.loads, args.only)

    if queries:
        print_queries(queries)
        if queries.get("superset_api"):
            print_superset_api(queries["superset_api"])
    if browser:
        print_browser(browser)
    load_after = os.getloadavg()
    print(
        f"\nload average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    write_results(
        RESULTS,
        {"repeat": args.repeat, **(queries or {}), "browser": browser},
        load_avg_before=load_before,
        load_avg_after=load_after,
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
