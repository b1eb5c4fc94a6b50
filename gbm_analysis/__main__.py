"""``python -m gbm_analysis``: hourly Monte Carlo forecasts, their backtest, and the API.

Usage::

    python -m gbm_analysis run --once [--as-of 2024-08-09T00:00:00Z] [--seed 42]
    python -m gbm_analysis run --every 1h          # the hourly schedule, aligned to the clock
    python -m gbm_analysis backtest                # score every stored forecast
    python -m gbm_analysis train [--bars-csv FILE] # fit mlp, xgb, prophet; log them to MLflow
    python -m gbm_analysis leaderboard             # every model's walk-forward scores, ranked
    python -m gbm_analysis calibration --bars-csv FILE  # coverage per horizon, walk-forward
    python -m gbm_analysis drift [--retrain]       # recent bars vs each model's training window
    python -m gbm_analysis serve                   # HTTP API on GBM_API_HOST:GBM_API_PORT

Under spark-submit (``SPARK_SUBMIT_MODE=1`` lets the submitted master win)::

    SPARK_SUBMIT_MODE=1 spark-submit --master local[2] --driver-memory 1g \\
        --jars "$(ls .cache/jars/spark/*.jar | paste -sd,)" gbm_analysis/__main__.py run --once

Exit codes: 0 success, 1 Cassandra or Spark failure, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING

from gbm_analysis.config import ApiSettings, GbmSettings, parse_duration
from gbm_analysis.exceptions import ConfigError, GbmError, StorageError
from schemas.settings import CassandraRole, CassandraSettings, SettingsError

if TYPE_CHECKING:
    from gbm_analysis.registry import Registry

logger = logging.getLogger("gbm_analysis")


def _parse_time(text: str, now: datetime) -> datetime:
    """``--as-of``: an ISO-8601 time, or ``-DURATION`` before now (``-2m``)."""
    if text.startswith("-"):
        return now - timedelta(seconds=parse_duration(text[1:], name="--as-of"))
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--as-of={text!r} is not an ISO-8601 time like 2024-08-09T00:00Z or -DURATION like -2m"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gbm_analysis", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="forecast every symbol with recent bars")
    when = run.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="one run, then exit")
    when.add_argument("--every", metavar="DURATION", help="repeat, e.g. 1h, aligned to the clock")
    run.add_argument(
        "--as-of",
        help="end of the lookback window: ISO-8601, or -DURATION before now (default now)",
    )
    run.add_argument("--seed", type=int, help="run seed (default GBM_SEED or random; stored)")
    sub.add_parser("backtest", help="score every stored forecast against realised prices")
    train = sub.add_parser(
        "train", help="train the learned models walk-forward per symbol and register them"
    )
    train.add_argument(
        "--bars-csv",
        metavar="FILE",
        help="train from a CSV of 1-minute bars in this process instead of Cassandra on Spark",
    )
    calibration = sub.add_parser(
        "calibration",
        help="walk-forward forecasts from a CSV of bars, coverage per horizon against the band",
    )
    calibration.add_argument(
        "--bars-csv", metavar="FILE", required=True, help="bars: symbol, t_ms (start), close"
    )
    calibration.add_argument(
        "--every", metavar="DURATION", default="1h", help="issue on this clock grid (1h)"
    )
    calibration.add_argument("--all-steps", action="store_true", help="print every step")
    sub.add_parser("leaderboard", help="print model_scores: every model per symbol and step")
    drift = sub.add_parser("drift", help="PSI and KS of recent bars vs each training window")
    drift.add_argument(
        "--retrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the symbols whose PSI crossed GBM_DRIFT_PSI again at once (the default); "
        "--no-retrain only checks",
    )
    sub.add_parser("serve", help="serve the latest forecast and backtest per symbol over HTTP")
    return parser


class _Stop:
    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second Ctrl+C kills
            raise KeyboardInterrupt
        self.requested = True
        logger.info("signal %d: stopping after the current run", signum)


def _registry_if_trained() -> Registry | None:
    """The MLflow registry of the learned models, or None before the first ``train``.

    The learned models' modules (pandas, scipy, xgboost, MLflow: seconds of imports) are loaded
    only when a registry exists, so the hourly run of the GBM family starts in about a second.
    The default location is ``TrainSettings``'s: ``$STATE_DIR/mlflow/mlflow.db``.
    """
    from pathlib import Path

    from schemas.settings import state_dir

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow'}/mlflow.db"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    from gbm_analysis.serving import registry_if_trained
    from gbm_analysis.training import TrainSettings

    trained = TrainSettings.from_env()
    return registry_if_trained(trained.tracking_uri, trained.artifact_root)


def _run(args: argparse.Namespace, settings: GbmSettings, cassandra: CassandraSettings) -> int:
    from gbm_analysis.io import GbmStore
    from gbm_analysis.job import run_forecasts
    from schemas.runtime.cassandra import connect

    interval = parse_duration(args.every, name="--every") if args.every else None
    as_of_text = args.as_of
    if as_of_text:
        _parse_time(as_of_text, datetime.now(UTC))  # fail before Spark starts
    base_seed = args.seed if args.seed is not None else settings.seed
    registry = None
    cluster, session = connect(cassandra)
    # under spark-submit the submitted session runs the job; otherwise GBM_ENGINE says
    use_spark = settings.engine == "spark" or bool(os.environ.get("SPARK_SUBMIT_MODE"))
    spark = None
    if use_spark:
        from schemas.runtime.spark import build_session

        spark = build_session("gbm_analysis", cassandra)
    stop = _Stop() if interval else None
    try:
        store = GbmStore(session, cassandra.keyspace)
        while True:
            issued_at = datetime.now(UTC)
            seed = base_seed if base_seed is not None else secrets.randbits(63)
            as_of = _parse_time(as_of_text, issued_at) if as_of_text else issued_at
            # Looked up again until it exists: a schedule started before the first `train`
            # picks the learned models up at its next run, not at its next restart.
            registry = registry or _registry_if_trained()
            result = run_forecasts(
                spark,
                store,
                settings,
                as_of=as_of,
                issued_at=issued_at,
                seed=seed,
                registry=registry,
            )
            skipped = len(result.statuses) - result.n_ok
            print(
                f"run {result.run_id}: seed {result.seed}, {result.n_ok} forecasts written, "
                f"{skipped} skipped (see gbm_forecast_runs.status), {result.duration_s:.1f}s"
            )
            if interval is None or (stop and stop.requested):
                return 0
            wait = interval - time.time() % interval
            logger.info("next run in %.0fs", wait)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not (stop and stop.requested):
                time.sleep(min(1.0, deadline - time.monotonic()))
            if stop and stop.requested:
                return 0
    finally:
        if spark is not None:
            from py4j.protocol import Py4JError

            try:
                spark.stop()
            except Py4JError as exc:  # Ctrl+C reaches the JVM too (same process group)
                logger.warning("spark had already stopped: %s", exc)
        cluster.shutdown()


def _backtest(settings: GbmSettings, cassandra: CassandraSettings) -> int:
    from gbm_analysis.evaluation import format_report, run_backtest
    from gbm_analysis.io import GbmStore, new_run_id
    from schemas.runtime.cassandra import connect

    cluster, session = connect(cassandra)
    try:
        now = datetime.now(UTC)
        backtest_id = new_run_id(now)
        forecasts, summary = run_backtest(
            GbmStore(session, cassandra.keyspace),
            bar_seconds=settings.bar_seconds,
            max_gap_seconds=settings.max_gap_seconds,
            evaluated_at=now,
            backtest_id=backtest_id,
            pending_max_seconds=settings.pending_max_seconds,
        )
        print(format_report(forecasts, summary))
        if not summary.empty:
            print(f"backtest {backtest_id}: {len(summary)} rows written to gbm_backtest")
        return 0
    finally:
        cluster.shutdown()


def _train(args: argparse.Namespace, cassandra: CassandraSettings) -> int:
    from gbm_analysis.registry import Registry
    from gbm_analysis.train_job import (
        format_results,
        read_bars_csv,
        train_from_frame,
        train_on_spark,
    )
    from gbm_analysis.training import TrainSettings

    settings = TrainSettings.from_env()
    if args.bars_csv and not os.path.isfile(args.bars_csv):
        raise ConfigError(f"--bars-csv={args.bars_csv!r} is not a file")
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    if args.bars_csv:
        results = train_from_frame(read_bars_csv(args.bars_csv), settings, registry)
    else:
        from gbm_analysis.io import GbmStore
        from schemas.runtime.cassandra import connect
        from schemas.runtime.spark import build_session

        cluster, session = connect(cassandra)
        spark = build_session("gbm_analysis_train", cassandra)
        try:
            results = train_on_spark(
                spark,
                GbmStore(session, cassandra.keyspace),
                settings,
                registry,
                now=datetime.now(UTC),
            )
        finally:
            spark.stop()
            cluster.shutdown()
    print(format_results(results) if results else "no symbol has 1-minute bars to train on")
    if args.bars_csv:  # nothing stored: print this training's leaderboard
        from gbm_analysis.leaderboard import format_leaderboard
        from gbm_analysis.train_job import score_table_rows

        print(format_leaderboard(score_table_rows(results, evaluated_at=datetime.now(UTC))))
    print(f"MLflow: mlflow ui --backend-store-uri {settings.tracking_uri}")
    return 0


def _calibration(args: argparse.Namespace, settings: GbmSettings) -> int:
    from gbm_analysis.calibration import (
        SUMMARY_STEPS,
        format_calibration,
        score_walk_forward,
        walk_forward_hits,
    )
    from gbm_analysis.train_job import read_bars_csv

    if not os.path.isfile(args.bars_csv):
        raise ConfigError(f"--bars-csv={args.bars_csv!r} is not a file")
    every = parse_duration(args.every, name="--every")
    hits = walk_forward_hits(
        read_bars_csv(args.bars_csv), settings, every_seconds=every, seed=settings.seed or 0
    )
    rows = score_walk_forward(hits)
    print(format_calibration(rows, steps=None if args.all_steps else SUMMARY_STEPS))
    return 0


def _leaderboard(cassandra: CassandraSettings) -> int:
    from gbm_analysis.io import GbmStore
    from gbm_analysis.leaderboard import format_leaderboard
    from gbm_analysis.train_job import read_scores
    from schemas.runtime.cassandra import connect

    cluster, session = connect(cassandra)
    try:
        print(format_leaderboard(read_scores(GbmStore(session, cassandra.keyspace))))
        return 0
    finally:
        cluster.shutdown()


def _drift(args: argparse.Namespace, cassandra: CassandraSettings) -> int:
    from gbm_analysis.drift import PSI_THRESHOLD
    from gbm_analysis.drift_job import DriftCheck, check_and_retrain, format_drift
    from gbm_analysis.io import GbmStore
    from gbm_analysis.serving import registry_if_trained
    from gbm_analysis.training import TrainSettings
    from schemas.runtime.cassandra import connect
    from schemas.settings import state_dir

    trained = TrainSettings.from_env()
    recent = parse_duration(os.environ.get("GBM_DRIFT_WINDOW") or "6h", name="GBM_DRIFT_WINDOW")
    raw = os.environ.get("GBM_DRIFT_PSI") or str(PSI_THRESHOLD)
    try:
        threshold = float(raw)
    except ValueError:
        raise ConfigError(f"GBM_DRIFT_PSI={raw!r} is not a number") from None
    if not threshold > 0:
        raise ConfigError(f"GBM_DRIFT_PSI={raw!r} must be positive")
    registry = registry_if_trained(trained.tracking_uri, trained.artifact_root)
    if registry is None:
        print("no MLflow registry yet: run `python -m gbm_analysis train` first")
        return 0
    now = datetime.now(UTC)
    printed: list[bool] = []

    def retrain(check: DriftCheck) -> None:
        print(format_drift(check.results))
        printed.append(True)
        print(f"retraining {', '.join(check.retrained)} (PSI >= {threshold:g})", flush=True)
        os.environ["GBM_SYMBOLS"] = ",".join(check.retrained)
        _train(argparse.Namespace(bars_csv=None), cassandra)

    cluster, session = connect(cassandra)
    try:
        store = GbmStore(session, cassandra.keyspace)
        symbols = trained.symbols or tuple(_registered_symbols(registry))
        check = check_and_retrain(
            store,
            registry,
            symbols,
            now=now,
            recent=timedelta(seconds=recent),
            threshold=threshold,
            textfile=state_dir() / "metrics" / "forecast_drift.prom",
            retrain=retrain if args.retrain else None,
        )
    finally:
        cluster.shutdown()
    if not printed:
        print(format_drift(check.results))
    return 0


def _registered_symbols(registry: object) -> list[str]:
    """Symbols with a registered learned model (their MLflow tag)."""
    client = registry.client  # type: ignore[attr-defined]
    symbols = set()
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name='{model.name}'"):
            run = client.get_run(version.run_id)
            if "symbol" in run.data.tags:
                symbols.add(run.data.tags["symbol"])
            break
    return sorted(symbols)


def _serve(cassandra: CassandraSettings) -> int:
    import uvicorn

    from gbm_analysis.api import create_app
    from gbm_analysis.io import GbmStore
    from schemas.runtime.cassandra import connect

    api = ApiSettings.from_env()
    cluster, session = connect(cassandra)
    try:
        app = create_app(
            GbmStore(session, cassandra.keyspace),
            cache_ttl_s=api.cache_ttl_s,
            reads_per_s=api.reads_per_s,
        )
        logger.info("serving on http://%s:%d (OpenAPI at /docs)", api.host, api.port)
        uvicorn.run(app, host=api.host, port=api.port, log_level="info")
        return 0
    finally:
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        settings = GbmSettings.from_env()
        # The API only reads: it gets the read-only role, the jobs the writers' role.
        role: CassandraRole = "reader" if args.command in ("serve", "leaderboard") else "writer"
        cassandra = CassandraSettings.from_env(role=role)
        if args.command == "run":
            return _run(args, settings, cassandra)
        if args.command == "backtest":
            return _backtest(settings, cassandra)
        if args.command == "train":
            return _train(args, cassandra)
        if args.command == "leaderboard":
            return _leaderboard(cassandra)
        if args.command == "calibration":
            return _calibration(args, settings)
        if args.command == "drift":
            return _drift(args, cassandra)
        return _serve(cassandra)
    except (ConfigError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StorageError, GbmError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the driver's NoHostAvailable etc.: one line, not a stack trace
        if type(exc).__module__.split(".")[0] not in {"cassandra", "py4j", "pyspark"}:
            raise
        logger.debug("failure", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
