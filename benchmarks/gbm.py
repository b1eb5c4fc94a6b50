"""GBM benchmark: vectorised simulation against per-path loops, and the whole hourly job.

Usage::

    .venv/bin/python benchmarks/gbm.py [--symbols 50] [--paths 10000] [--steps 60] [--skip-job]

1. Simulation throughput at equal work (``--paths`` x ``--steps`` path-steps): the
   vectorised :func:`gbm_analysis.model.simulate_paths`; a per-path Python loop calling numpy once
   per path; a pure-Python loop (one ``random.gauss`` per path-step); the naive loop that draws
   one numpy scalar per path-step (what the reference job's single ``np.random.normal()`` becomes
   when it is put in a loop).
2. The whole job: ``--symbols`` symbols with six hours of 5-second bars each in a scratch keyspace
   (created with ``python -m infra migrate`` and dropped afterwards), one
   :func:`gbm_analysis.job.run_forecasts` per engine (``local``: the driver and numpy threads in
   this process; ``spark``: local[2], the connector and ``applyInPandas``) with the three models,
   timed from the read of the bars to the last write (the Spark session start is reported
   separately), twice each; then ``python -m gbm_analysis run --once`` per engine, timed from
   process start to exit. Needs the stack (``python -m infra up``). ``--skip-spark``: the local
   engine only. ``--keep-keyspace`` keeps the scratch keyspace and its bars, and ``--keyspace
   NAME`` runs the job again on the bars of a kept one, as of their end, without writing any
   (drop it afterwards with ``python -m infra drop-keyspace NAME``).
3. The learned forecasters (``--learned-models``, default ``mlp,xgb,prophet``): per symbol
   (``--learned-symbols`` simulated GBM series of ``--learned-minutes`` 1-minute bars), the
   walk-forward training time of each model (fit on the training window, calibration included)
   and its inference time per forecast (all 60 steps, 99 quantiles, issued every 15 minutes in
   the test window), wall clock and CPU time, in this process, one thread (``--skip-learned``
   leaves it out). ``--mlp-max-iter`` and ``--xgb-rounds`` shrink the training budget.

``--skip-simulation`` leaves out parts 1 and the one-core numpy timing of all models.

Prints a table and writes ``benchmarks/results/gbm.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    infra,
    process_tree_cpu_s,
    service_pid,
    write_results,
)
from gbm_analysis.config import GbmSettings  # noqa: E402
from gbm_analysis.forecast import forecast_symbol  # noqa: E402
from gbm_analysis.model import SECONDS_PER_YEAR, simulate_paths  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gbm.json"
S0, MU, DT = 100.0, 0.0, 60.0
SIGMA = 0.6 / math.sqrt(SECONDS_PER_YEAR)


def _best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_simulation(n_paths: int, n_steps: int) -> list[dict[str, Any]]:
    work = n_paths * n_steps

    def vectorised() -> None:
        simulate_paths(S0, MU, SIGMA, DT, n_steps, n_paths, np.random.default_rng(1))

    def numpy_per_path() -> None:
        rng = np.random.default_rng(1)
        out = np.empty((n_paths, n_steps))
        drift, vol = (MU - SIGMA**2 / 2) * DT, SIGMA * math.sqrt(DT)
        for p in range(n_paths):
            out[p] = S0 * np.exp(np.cumsum(drift + vol * rng.standard_normal(n_steps)))

    def pure_python() -> None:
        rnd = random.Random(1)
        drift, vol = (MU - SIGMA**2 / 2) * DT, SIGMA * math.sqrt(DT)
        out = []
        for _ in range(n_paths):
            s, path = S0, []
            for _ in range(n_steps):
                s *= math.exp(drift + vol * rnd.gauss(0.0, 1.0))
                path.append(s)
            out.append(path)

    def numpy_scalars() -> None:
        rng = np.random.default_rng(1)
        out = np.empty((n_paths, n_steps))
        drift, vol = (MU - SIGMA**2 / 2) * DT, SIGMA * math.sqrt(DT)
        for p in range(n_paths):
            s = S0
            for k in range(n_steps):
                s = s * np.exp(drift + vol * rng.standard_normal())
                out[p, k] = s

    rows: list[dict[str, Any]] = []
    print(f"simulation: {n_paths:,} paths x {n_steps} steps = {work:,} path-steps each", flush=True)
    for name, fn, repeat in (
        ("vectorised (numpy, step rows)", vectorised, 7),
        ("per-path loop (numpy per path)", numpy_per_path, 3),
        ("per-path loop (pure Python)", pure_python, 1),
        ("per-path loop (numpy scalars)", numpy_scalars, 1),
    ):
        seconds = _best(fn, repeat)
        rows.append({"method": name, "seconds": seconds, "path_steps_per_s": work / seconds})
        print(f"  {name:<32} {seconds:8.4f} s", flush=True)
    base = rows[0]["path_steps_per_s"]
    for row in rows:
        row["speedup_of_vectorised"] = base / row["path_steps_per_s"]
    return rows


def bench_forecast_numpy(n_symbols: int, settings: GbmSettings) -> dict[str, Any]:
    """The per-symbol work without Spark or Cassandra, on one core."""
    n = settings.lookback_seconds // settings.bar_seconds
    t = np.arange(n) * float(settings.bar_seconds)
    rng = np.random.default_rng(0)
    bars = [
        100 * np.exp(np.cumsum(SIGMA * math.sqrt(5) * rng.standard_normal(n)))
        for _ in range(n_symbols)
    ]
    t0, cpu = time.perf_counter(), time.process_time()
    for i, closes in enumerate(bars):
        forecast_symbol(f"S{i}", t, closes, settings, run_seed=1)
    seconds = time.perf_counter() - t0
    return {
        "symbols": n_symbols,
        "bars_per_symbol": n,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
    }


def bench_learned(
    n_symbols: int,
    n_minutes: int,
    models: tuple[str, ...],
    *,
    mlp_max_iter: int,
    xgb_rounds: int,
) -> list[dict[str, Any]]:
    """Training and inference time of each learned model per symbol, wall clock and this
    process's CPU time (on a shared machine the wall clock also counts waiting for a core)."""
    import pandas as pd

    from gbm_analysis import mlp, prophet_model, xgb
    from gbm_analysis.learned import N_STEPS, prepare_minutes, walk_forward_split
    from gbm_analysis.training import score_positions

    # the newest fifth tests, the fifth before it calibrates, the rest trains (walk-forward)
    test = calib = n_minutes // 5
    train = n_minutes - test - calib - 3 * N_STEPS
    fitters: dict[str, tuple[Any, Any, int]] = {
        "mlp": (mlp, mlp.MlpParams(max_iter=mlp_max_iter), mlp.LOOKBACK),
        "xgb": (xgb, xgb.XgbParams(n_estimators=xgb_rounds), xgb.FIRST),
        "prophet": (prophet_model, prophet_model.ProphetParams(train_days=train / 1440), xgb.FIRST),
    }
    sigma = 8e-4  # per minute, about BTC's
    rows: list[dict[str, Any]] = []
    for k in range(n_symbols):
        rng = np.random.default_rng(100 + k)
        close = 100 * np.exp(np.cumsum(sigma * rng.standard_normal(n_minutes)))
        prev = np.append(100.0, close[:-1])
        wiggle = np.abs(rng.standard_normal(n_minutes)) * sigma / 2
        minutes = prepare_minutes(
            pd.DataFrame(
                {
                    "t": 1_740_787_200 + 60 * np.arange(n_minutes),
                    "open": prev,
                    "high": np.maximum(prev, close) * (1 + wiggle),
                    "low": np.minimum(prev, close) * (1 - wiggle),
                    "close": close,
                    "volume": rng.gamma(2.0, 5.0, n_minutes),
                }
            )
        )
        for model in models:
            module, params, first = fitters[model]
            split = walk_forward_split(
                len(minutes), first=first, calib=calib, test=test, purge=N_STEPS, train=train
            )
            wall, cpu = time.perf_counter(), time.process_time()
            fitted = module.fit(minutes, split, params)
            train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
            positions = score_positions(minutes, split.test, 15)
            wall, cpu = time.perf_counter(), time.process_time()
            fitted.predict(minutes, positions)
            n = max(positions.size, 1)
            row = {
                "symbol": f"SIM:{k}",
                "model": model,
                "train_minutes": int(split.train.size),
                "train_s": train_wall,
                "train_cpu_s": train_cpu,
                "forecasts_timed": int(positions.size),
                "predict_ms_per_forecast": 1e3 * (time.perf_counter() - wall) / n,
                "predict_cpu_ms_per_forecast": 1e3 * (time.process_time() - cpu) / n,
            }
            rows.append(row)
            print(
                f"  {row['symbol']} {model:<8} train {train_wall:7.2f} s ({train_cpu:6.2f} s "
                f"CPU), inference {row['predict_ms_per_forecast']:7.2f} ms "
                f"({row['predict_cpu_ms_per_forecast']:6.2f} ms CPU) per forecast",
                flush=True,
            )
    return rows


def _cli_run_once(keyspace: str, engine: str, as_of: datetime) -> tuple[float, float]:
    """``python -m gbm_analysis run --once`` as a user runs it: wall seconds from process start
    to exit, and the CPU seconds of the process and its reaped children (Spark's JVM, which
    pyspark does not wait for, is not among them: the figure is the Python side's only)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        subprocess.run(
            [sys.executable, "-m", "gbm_analysis", "run", "--once", "--as-of", as_of.isoformat()],
            cwd=ROOT,
            env={
                **os.environ,
                "CASSANDRA_KEYSPACE": keyspace,
                "GBM_ENGINE": engine,
                "GBM_SEED": "7",
                "LOG_LEVEL": "WARNING",
            },
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:  # say why, not only the exit status
        print(exc.stderr[-3000:], file=sys.stderr)
        raise
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _write_bars(
    session: Any, keyspace: str, n_symbols: int, settings: GbmSettings, as_of: datetime
) -> None:
    """Six hours (the lookback) of simulated 5-second bars ending at ``as_of`` per symbol."""
    from cassandra.concurrent import execute_concurrent
    from cassandra.query import BatchStatement, BatchType

    n = settings.lookback_seconds // settings.bar_seconds
    stmt = session.prepare(
        f"INSERT INTO {keyspace}.trades_agg_5s (symbol, day, window_start, window_end, close) "
        "VALUES (?,?,?,?,?)"
    )
    starts = [as_of - timedelta(seconds=settings.bar_seconds * (n - i)) for i in range(n)]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    per_batch = 64  # rows of one partition per unlogged batch: about 4 KB
    for k in range(n_symbols):
        closes = 100 * np.exp(np.cumsum(SIGMA * math.sqrt(5) * rng.standard_normal(n)))
        rows = [
            (f"BENCH:{k:03d}", ws.date(), ws, ws + timedelta(seconds=5), float(c))
            for ws, c in zip(starts, closes, strict=True)
        ]
        batches = []
        for lo in range(0, n, per_batch):
            batch, day = BatchStatement(batch_type=BatchType.UNLOGGED), rows[lo][1]
            for row in rows[lo : lo + per_batch]:
                if row[1] != day:  # one partition (symbol, day) per batch
                    batches.append(batch)
                    batch, day = BatchStatement(batch_type=BatchType.UNLOGGED), row[1]
                batch.add(stmt, row)
            batches.append(batch)
        execute_concurrent(session, [(b, ()) for b in batches], concurrency=16)
        print(f"  bars: {k + 1}/{n_symbols} symbols x {n} bars written", end="\r", flush=True)
    print(f"\n  bars written in {time.perf_counter() - t0:.1f} s", flush=True)


def _bars_end(session: Any, keyspace: str) -> datetime:
    """The end of the newest bar of ``BENCH:000`` in a keyspace an earlier run kept: the as-of
    time those bars were written for."""
    days = [
        r.day
        for r in session.execute(f"SELECT DISTINCT symbol, day FROM {keyspace}.trades_agg_5s")
        if r.symbol == "BENCH:000"
    ]
    ends = [
        row.window_end
        for day in days
        for row in session.execute(
            f"SELECT window_end FROM {keyspace}.trades_agg_5s WHERE symbol = %s AND day = %s "
            "ORDER BY window_start DESC LIMIT 1",
            ("BENCH:000", day),
        )
    ]
    if not ends:
        raise SystemExit(f"{keyspace} holds no BENCH:000 bars: run once with --keep-keyspace")
    return max(ends).replace(tzinfo=UTC)


def _cassandra_cpu_s() -> float:
    """CPU seconds Cassandra's process has used so far (0 when the stack's Cassandra is not
    found: a stack started elsewhere), so a run's share of it is a difference."""
    pid = service_pid("cassandra")
    return 0.0 if pid is None else process_tree_cpu_s(pid)


def bench_job(
    n_symbols: int,
    settings: GbmSettings,
    *,
    spark_too: bool = True,
    keyspace: str | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """The job against ``n_symbols`` symbols' bars: in a new scratch keyspace (dropped at the
    end unless ``keep``), or in ``keyspace``, kept by an earlier run, whose bars are reused."""
    from gbm_analysis.io import GbmStore
    from gbm_analysis.job import run_forecasts
    from schemas.runtime.cassandra import connect
    from schemas.runtime.spark import build_session
    from schemas.settings import CassandraSettings

    reuse = keyspace is not None
    keyspace = keyspace or f"bench_gbm_{uuid.uuid4().hex[:6]}"
    if not reuse:
        print(f"job: creating scratch keyspace {keyspace}", flush=True)
        infra("migrate", "--keyspace", keyspace)
    cassandra = CassandraSettings.from_env({**os.environ, "CASSANDRA_KEYSPACE": keyspace})
    cluster, session = connect(cassandra)
    try:
        n = settings.lookback_seconds // settings.bar_seconds
        if reuse:
            as_of = _bars_end(session, keyspace)
            print(f"job: reusing the bars of {keyspace}, as of {as_of.isoformat()}", flush=True)
        else:
            as_of = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            _write_bars(session, keyspace, n_symbols, settings, as_of)

        store = GbmStore(session, keyspace)
        out: dict[str, Any] = {
            "symbols": n_symbols,
            "bars_per_symbol": n,
            "models": list(settings.models),
            "paths": settings.n_paths,
            "steps": settings.n_steps,
            "load_average_at_start": os.getloadavg()[0],
        }
        engines = ("local", "spark") if spark_too else ("local",)
        for engine in engines:
            spark = None
            if engine == "spark":
                t0 = time.perf_counter()
                spark = build_session("gbm_benchmark", cassandra)
                out["spark_session_start_s"] = time.perf_counter() - t0
            try:
                for attempt in range(2):  # the first run also warms Spark's Python workers
                    wall, cpu = time.perf_counter(), time.process_time()
                    cassandra_cpu = _cassandra_cpu_s()
                    result = run_forecasts(
                        spark,
                        store,
                        settings,
                        as_of=as_of,
                        issued_at=datetime.now(UTC),
                        seed=attempt,
                    )
                    key = f"{engine}_{('first', 'second')[attempt]}_run"
                    out[f"{key}_s"] = time.perf_counter() - wall
                    # this process only: Spark's JVM and Python workers are other processes
                    out[f"{key}_driver_cpu_s"] = time.process_time() - cpu
                    # what the same two cores spent storing the forecasts meanwhile
                    out[f"{key}_cassandra_cpu_s"] = _cassandra_cpu_s() - cassandra_cpu
                    print(
                        f"  {engine} run {attempt + 1}: {out[f'{key}_s']:.1f} s "
                        f"({out[f'{key}_driver_cpu_s']:.1f} s CPU in this process, "
                        f"{out[f'{key}_cassandra_cpu_s']:.1f} s in Cassandra's), "
                        f"{result.n_ok} forecasts ok",
                        flush=True,
                    )
            finally:
                if spark is not None:
                    spark.stop()
            out[f"{engine}_cli_s"], out[f"{engine}_cli_cpu_s"] = _cli_run_once(
                keyspace, engine, as_of
            )
            print(
                f"  python -m gbm_analysis run --once (GBM_ENGINE={engine}): "
                f"{out[f'{engine}_cli_s']:.1f} s process start to exit "
                f"({out[f'{engine}_cli_cpu_s']:.1f} s CPU of the Python process)",
                flush=True,
            )
        out["forecasts_ok"] = result.n_ok
        out["gbm_forecasts_rows_per_run"] = result.n_ok * settings.n_steps
        if spark_too:  # the names of the earlier results
            out["first_run_s"] = out["spark_first_run_s"]
            out["second_run_s"] = out["spark_second_run_s"]
        return out
    finally:
        cluster.shutdown()
        if keep or reuse:
            print(f"job: kept keyspace {keyspace} (drop it with python -m infra drop-keyspace)")
        else:
            infra("drop-keyspace", keyspace)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip-job", action="store_true", help="only the numpy benchmarks")
    parser.add_argument(
        "--skip-spark", action="store_true", help="time the job with the local engine only"
    )
    parser.add_argument("--skip-learned", action="store_true", help="no learned models")
    parser.add_argument(
        "--keep-keyspace", action="store_true", help="keep the scratch keyspace and its bars"
    )
    parser.add_argument(
        "--keyspace", help="reuse the bars of a keyspace an earlier --keep-keyspace run kept"
    )
    parser.add_argument(
        "--skip-simulation",
        action="store_true",
        help="leave out the simulation and one-core numpy benchmarks",
    )
    parser.add_argument("--learned-models", default="mlp,xgb,prophet")
    parser.add_argument("--learned-symbols", type=int, default=2)
    parser.add_argument("--learned-minutes", type=int, default=10_000)
    parser.add_argument("--mlp-max-iter", type=int, default=200)
    parser.add_argument("--xgb-rounds", type=int, default=150)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = GbmSettings(n_paths=args.paths, n_steps=args.steps)

    simulation: list[dict[str, Any]] = []
    per_symbol = None
    if not args.skip_simulation:
        simulation = bench_simulation(args.paths, args.steps)
        per_symbol = bench_forecast_numpy(args.symbols, settings)
        print(
            f"forecast without Spark: {per_symbol['seconds']:.2f} s "
            f"({per_symbol['cpu_seconds']:.2f} s CPU) for {args.symbols} symbols "
            "x 3 models on one core",
            flush=True,
        )
    job = (
        None
        if args.skip_job
        else bench_job(
            args.symbols,
            settings,
            spark_too=not args.skip_spark,
            keyspace=args.keyspace,
            keep=args.keep_keyspace,
        )
    )
    learned = None
    if not args.skip_learned:
        print(
            f"learned models: {args.learned_symbols} symbols x {args.learned_minutes:,} minutes",
            flush=True,
        )
        learned = bench_learned(
            args.learned_symbols,
            args.learned_minutes,
            tuple(m for m in args.learned_models.split(",") if m),
            mlp_max_iter=args.mlp_max_iter,
            xgb_rounds=args.xgb_rounds,
        )

    print("\n| measurement | value |\n|---|---|")
    for row in simulation:
        print(
            f"| {row['method']} | {row['path_steps_per_s'] / 1e6:,.2f} M path-steps/s "
            f"({row['speedup_of_vectorised']:,.1f}x slower than vectorised) |"
            if row["speedup_of_vectorised"] > 1.0001
            else f"| {row['method']} | {row['path_steps_per_s'] / 1e6:,.2f} M path-steps/s |"
        )
    if per_symbol:
        print(
            f"| 3 models x {args.symbols} symbols, numpy only, 1 core | "
            f"{per_symbol['seconds']:.2f} s ({per_symbol['cpu_seconds']:.2f} s CPU) |"
        )
    if job:
        for engine in ("local", "spark"):
            if f"{engine}_first_run_s" not in job:
                continue
            if engine == "spark":
                print(f"| Spark session start | {job['spark_session_start_s']:.1f} s |")
            for run in ("first", "second"):
                print(
                    f"| {engine}: read to last write, {run} run (target <= 5 s) | "
                    f"{job[f'{engine}_{run}_run_s']:.1f} s "
                    f"({job[f'{engine}_{run}_run_driver_cpu_s']:.1f} s CPU in this process, "
                    f"{job[f'{engine}_{run}_run_cassandra_cpu_s']:.1f} s in Cassandra's) |"
                )
            print(
                f"| {engine}: `run --once`, process start to exit (target <= 15 s) | "
                f"{job[f'{engine}_cli_s']:.1f} s ({job[f'{engine}_cli_cpu_s']:.1f} s CPU) |"
            )
    for row in learned or []:
        print(
            f"| {row['model']} on {row['symbol']}: training on {row['train_minutes']:,} min / "
            f"inference per forecast (wall; CPU) | {row['train_s']:.2f} s; "
            f"{row['train_cpu_s']:.2f} s / {row['predict_ms_per_forecast']:.2f} ms; "
            f"{row['predict_cpu_ms_per_forecast']:.2f} ms |"
        )
    write_results(
        RESULTS,
        {
            "simulation": simulation,
            "forecast_numpy": per_symbol,
            "job": job,
            "learned": learned,
            "learned_settings": None
            if learned is None
            else {
                "symbols": args.learned_symbols,
                "minutes": args.learned_minutes,
                "mlp_max_iter": args.mlp_max_iter,
                "xgb_rounds": args.xgb_rounds,
            },
        },
        numpy=np.__version__,
    )
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
