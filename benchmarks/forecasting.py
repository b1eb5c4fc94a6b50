"""Walk-forward folds of every forecaster on real 1-minute bars, and the same on simulated GBM.

Usage::

    # one fold (of --folds, spread evenly over the file) of every symbol; one JSON per fold
    .venv/bin/python benchmarks/forecasting.py real --folds 4 --fold 0 \\
        --csv ../shared/data/binance_1m_4sym_20250301_20250401.csv.gz
    # simulated zero-drift GBM minute bars (one series per seed), same protocol
    .venv/bin/python benchmarks/forecasting.py sim --series 4
    # pool the JSON files written so far into the tables of docs/forecasting.md
    .venv/bin/python benchmarks/forecasting.py report

Fold ``i`` of ``K`` ends at the ``(i + 1) / K`` point of each symbol's bars: its test window is the
last ``--test`` before that point, the calibration window the ``--calib`` before the test window and
the training window the ``--train`` before that, 60 minutes apart
(:func:`gbm_analysis.learned.walk_forward_split`); nothing after the fold's end is read. Every model
is issued at the same times (every ``--every`` minutes on the clock in the test window) and scored
on the same outcomes by :func:`gbm_analysis.learned.score_log_quantiles`; the GBM family with
``--paths`` paths and its 6-hour lookback on the 1-minute bars
(:func:`gbm_analysis.leaderboard.family_quantiles`). Nothing is logged to MLflow.

Results: ``benchmarks/results/forecasting/{real,sim}_fold*.json``; ``report`` pools the folds (band
coverage and the RMSE weighted by each fold's forecasts, CRPS averaged the same way) and prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gbm_analysis.config import parse_duration  # noqa: E402


def _minutes_arg(text: str) -> int:
    seconds = parse_duration(text, name="window")
    if seconds % 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not whole minutes")
    return seconds // 60


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("real", "sim"):
        p = sub.add_parser(kind)
        if kind == "real":
            p.add_argument("--csv", required=True)
            p.add_argument("--symbols", default="", help="comma-separated, default every symbol")
            p.add_argument("--folds", type=int, default=4)
            p.add_argument("--fold", type=int, default=0)
        else:
            p.add_argument("--series", type=int, default=4)
            p.set_defaults(folds=1, fold=0)
        p.add_argument("--train", type=_minutes_arg, default=4 * 1440)
        p.add_argument("--calib", type=_minutes_arg, default=1440)
        p.add_argument("--test", type=_minutes_arg, default=2 * 1440)
        p.add_argument("--every", type=int, default=15, help="minutes between issue times")
        p.add_argument("--paths", type=int, default=1_000, help="GBM family paths per forecast")
        p.add_argument("--models", default="mlp,xgb,prophet")
        p.add_argument("--mlp-max-iter", type=int, default=50)
        p.add_argument("--xgb-rounds", type=int, default=60)
        p.add_argument("--prophet-samples", type=int, default=100)
    sub.add_parser("report")
    return parser


# The arguments are read before numpy, pandas and the model libraries load (seconds of CPU), so
# --help and a wrong flag answer at once.
if __name__ == "__main__":
    ARGS = parser().parse_args()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gbm_analysis import mlp, prophet_model, xgb  # noqa: E402
from gbm_analysis.leaderboard import FAMILY_MODELS, family_quantiles  # noqa: E402
from gbm_analysis.learned import (  # noqa: E402
    N_STEPS,
    outcomes,
    prepare_minutes,
    score_log_quantiles,
)
from gbm_analysis.training import TrainSettings, score_positions, train_symbol  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "forecasting"
MODELS = ("gbm", "ewma_t", "hist_sim", "mlp", "xgb", "prophet")
TABLE_STEPS = (1, 5, 15, 30, 60)
SIM_SIGMA_BPS = 8.0  # per minute, about BTC's in March 2025
SIM_START = 1_740_787_200  # 2025-03-01 00:00 UTC


def simulated_minutes(n: int, seed: int, sigma_bps: float = SIM_SIGMA_BPS) -> pd.DataFrame:
    """1-minute OHLCV bars of a zero-drift GBM (exact log steps); high/low straddle open/close."""
    rng = np.random.default_rng(seed)
    sigma = sigma_bps / 1e4
    close = 100.0 * np.exp(np.cumsum(rng.standard_normal(n) * sigma - 0.5 * sigma**2))
    prev = np.append(100.0, close[:-1])
    wiggle = np.abs(rng.standard_normal(n)) * sigma / 2
    return pd.DataFrame(
        {
            "t": SIM_START + 60 * np.arange(n),
            "open": prev,
            "high": np.maximum(prev, close) * (1 + wiggle),
            "low": np.minimum(prev, close) * (1 - wiggle),
            "close": close,
            "volume": rng.gamma(2.0, 5.0, n),
        }
    )


def fold_end(n: int, fold: int, folds: int) -> int:
    """Rows of the fold's data: the first ``(fold + 1) / folds`` of ``n`` (whole rows).

    >>> [fold_end(44_640, i, 4) for i in range(4)]
    [11160, 22320, 33480, 44640]
    """
    return (n * (fold + 1)) // folds


def score_fold(
    symbol: str, bars: pd.DataFrame, settings: TrainSettings, *, n_paths: int
) -> list[dict[str, Any]]:
    """Every model's scores on one symbol's data (the fold's bars only)."""
    rows: list[dict[str, Any]] = []
    learned = train_symbol(symbol, bars, settings)
    for o in learned:
        if not o.ok or o.scores is None:
            logging.warning("%s %s: %s %s", symbol, o.model, o.status, o.message)
            continue
        rows.append(
            {
                "symbol": symbol,
                "model": o.model,
                "test_start": o.windows["test_start"],
                "test_end": o.windows["test_end"],
                "train_seconds": o.train_seconds,
                "predict_seconds": o.predict_seconds,
                "scores": _scores_dict(o.scores),
            }
        )
    minutes = prepare_minutes(bars)
    split = settings.split(len(minutes), first=xgb.FIRST)
    positions = score_positions(minutes, split.test, settings.score_every_minutes)
    y = outcomes(minutes, positions)
    t = minutes["t"].to_numpy(dtype=np.int64)
    for model in FAMILY_MODELS:
        started = time.perf_counter()
        q = family_quantiles(minutes, positions, model, n_paths=n_paths)
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "symbol": symbol,
                "model": model,
                "test_start": int(t[split.test[0]]),
                "test_end": int(t[split.test[-1]] + 60),
                "train_seconds": 0.0,
                "predict_seconds": elapsed / max(positions.size, 1),
                "scores": _scores_dict(score_log_quantiles(y, q)),
            }
        )
    return rows


def _scores_dict(scores: Any) -> dict[str, Any]:
    return {
        k: ([None if not math.isfinite(x) else float(x) for x in v] if hasattr(v, "tolist") else v)
        for k, v in asdict(scores).items()
    }


def _settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        train_minutes=args.train,
        calib_minutes=args.calib,
        test_minutes=args.test,
        score_every_minutes=args.every,
        baselines=False,
        models=tuple(m for m in args.models.split(",") if m in ("mlp", "xgb", "prophet")),
        mlp=mlp.MlpParams(max_iter=args.mlp_max_iter),
        xgb=xgb.XgbParams(n_estimators=args.xgb_rounds),
        prophet=prophet_model.ProphetParams(
            train_days=args.train / 1440, uncertainty_samples=args.prophet_samples
        ),
    )


def run(args: argparse.Namespace) -> Path:
    settings = _settings(args)
    if args.kind == "real":
        frame = pd.read_csv(args.csv)
        if "t_ms" in frame.columns:
            frame["t"] = frame["t_ms"] // 1000
        symbols = sorted(set(frame["symbol"]))
        if args.symbols:
            symbols = [s for s in symbols if s in args.symbols.split(",")]
        series = {
            s: frame[frame["symbol"] == s].sort_values("t").reset_index(drop=True) for s in symbols
        }
    else:
        n = settings.history_minutes + 120
        series = {f"SIM:{k}": simulated_minutes(n, seed=1_000 + k) for k in range(args.series)}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for symbol, bars in series.items():
        end = fold_end(len(bars), args.fold, args.folds) if args.kind == "real" else len(bars)
        t0 = time.perf_counter()
        rows.extend(score_fold(symbol, bars.iloc[:end], settings, n_paths=args.paths))
        print(f"{symbol}: fold {args.fold} scored in {time.perf_counter() - t0:.0f} s", flush=True)
    out = RESULTS / (f"real_fold{args.fold}.json" if args.kind == "real" else "sim_fold0.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "kind": args.kind,
                "fold": args.fold,
                "folds": args.folds,
                "settings": {
                    k: v for k, v in vars(args).items() if k not in ("func",) and v is not None
                },
                "seconds": time.perf_counter() - started,
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return out


def pool(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Pool each (symbol, model)'s folds per step: coverage, CRPS and RMSE weighted by forecasts.

    >>> a = {"n": 1, "coverage_50": [1.0], "coverage_90": [1.0], "crps_bps": [2.0],
    ...      "rmse_bps": [3.0], "rmse_rw_bps": [3.0], "directional": [1.0]}
    >>> b = {**a, "n": 3, "coverage_50": [0.0], "crps_bps": [6.0], "rmse_bps": [1.0]}
    >>> p = pool([{"symbol": "S", "model": "m", "scores": s} for s in (a, b)])
    >>> p[("S", "m")]["n"], p[("S", "m")]["coverage_50"][0], p[("S", "m")]["crps_bps"][0]
    (4, 0.25, 5.0)
    >>> round(p[("S", "m")]["rmse_bps"][0] ** 2, 6)
    3.0
    """
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        s = row["scores"]
        key = (row["symbol"], row["model"])
        a = acc.setdefault(key, {"n": 0, "folds": 0})
        a["n"] += s["n"]
        a["folds"] += 1
        for name in ("coverage_50", "coverage_90", "crps_bps", "directional"):
            v = np.array([np.nan if x is None else x for x in s[name]], dtype=np.float64)
            a[name] = a.get(name, 0.0) + s["n"] * v
        for name in ("rmse_bps", "rmse_rw_bps"):
            v = np.array([np.nan if x is None else x for x in s[name]], dtype=np.float64)
            a[name] = a.get(name, 0.0) + s["n"] * v**2
    for a in acc.values():
        for name in ("coverage_50", "coverage_90", "crps_bps", "directional"):
            a[name] = a[name] / a["n"]
        for name in ("rmse_bps", "rmse_rw_bps"):
            a[name] = np.sqrt(a[name] / a["n"])
    return acc


def _cells(values: np.ndarray, steps: Sequence[int], spec: str) -> str:
    return " ".join(
        "-" if not np.isfinite(values[s - 1]) else format(values[s - 1], spec) for s in steps
    )


def table(pooled: dict[tuple[str, str], dict[str, Any]], symbol: str, steps: Sequence[int]) -> str:
    at = "/".join(str(s) for s in steps)
    lines = [
        f"| model | folds | n | cov50 @{at} | cov90 @{at} | CRPS bps @{at} | "
        f"CRPS skill vs hist_sim @{at} | RMSE / RW @{at} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = pooled.get((symbol, "hist_sim"))
    for model in MODELS:
        p = pooled.get((symbol, model))
        if p is None:
            continue
        skill = 1 - p["crps_bps"] / base["crps_bps"] if base else np.full(N_STEPS, np.nan)
        lines.append(
            f"| {model} | {p['folds']} | {p['n']} | {_cells(p['coverage_50'], steps, '.2f')} | "
            f"{_cells(p['coverage_90'], steps, '.2f')} | {_cells(p['crps_bps'], steps, '.1f')} | "
            f"{_cells(skill, steps, '+.3f')} | "
            f"{_cells(p['rmse_bps'] / p['rmse_rw_bps'], steps, '.3f')} |"
        )
    return "\n".join(lines)


def fold_table(docs: Sequence[dict[str, Any]], steps: Sequence[int]) -> str:
    """Per model and fold: CRPS skill against hist_sim, the symbols pooled (forecast-weighted)."""
    at = "/".join(str(s) for s in steps)
    lines = [
        f"| model | {' | '.join(_fold_label(d) for d in docs)} |",
        "|---" * (len(docs) + 1) + "|",
    ]
    cells: dict[str, list[str]] = {}
    for d in docs:
        pooled = pool({**r, "symbol": "*"} for r in d["rows"])
        base = pooled.get(("*", "hist_sim"))
        for model in MODELS:
            p = pooled.get(("*", model))
            if p is None or base is None:
                cells.setdefault(model, []).append("-")
                continue
            skill = 1 - p["crps_bps"] / base["crps_bps"]
            cells.setdefault(model, []).append(_cells(skill, steps, "+.3f"))
    for model, row in cells.items():
        lines.append(f"| {model} | {' | '.join(row)} |")
    return f"skill @{at} min\n\n" + "\n".join(lines)


def _fold_label(doc: dict[str, Any]) -> str:
    starts = [r["test_start"] for r in doc["rows"]]
    ends = [r["test_end"] for r in doc["rows"]]
    first = datetime.fromtimestamp(min(starts), UTC)
    last = datetime.fromtimestamp(max(ends), UTC)
    return f"fold {doc['fold']}: {first:%m-%d %H:%M} to {last:%m-%d %H:%M}"


def report(args: argparse.Namespace) -> None:
    for kind in ("real", "sim"):
        files = sorted(RESULTS.glob(f"{kind}_fold*.json"))
        if not files:
            continue
        docs = [json.loads(f.read_text()) for f in files]
        rows = [r for d in docs for r in d["rows"]]
        print(f"## {kind}: {len(files)} file(s), folds {sorted(d['fold'] for d in docs)}")
        print(f"settings: {docs[0]['settings']}")
        pooled = pool(rows)
        symbols = sorted({s for s, _ in pooled})
        if kind == "sim":  # one table over every simulated series
            pooled = pool({**r, "symbol": "SIM"} for r in rows)
            symbols = ["SIM"]
        for symbol in symbols:
            print(f"\n#### {symbol}\n")
            print(table(pooled, symbol, TABLE_STEPS))
        if kind == "real":
            print("\n#### CRPS skill vs hist_sim per fold, all symbols pooled\n")
            print(fold_table(docs, TABLE_STEPS))
        times: dict[str, list[float]] = {}
        for r in rows:
            times.setdefault(r["model"], []).append(r["train_seconds"])
            times.setdefault(r["model"] + ":predict_ms", []).append(1e3 * r["predict_seconds"])
        print()
        for name, v in sorted(times.items()):
            print(f"{name}: {min(v):.1f}-{max(v):.1f}")
        print()


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    if args.kind == "report":
        report(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
