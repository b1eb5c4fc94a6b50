"""Data behind the forecast explorer: a thin reader of the ``gbm_*`` and bar tables, and pure
functions that shape what it reads into chart-ready frames.

Every query is a prepared statement with bound values, and selects by partition key (plus a
clustering prefix or range), so it touches one ``(symbol, day)`` partition (``model_scores``: the
``walk_forward`` partition and the symbol's clustering prefix; ``model_drift``: the symbol's
partition); the only exception is the list of symbols, which reads the partition keys of
``gbm_forecast_runs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from cassandra import DriverException, RequestValidationException
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException

from schemas.contracts import TABLE_AGG_1M, TABLE_AGG_5S
from schemas.gbm_tables import (
    PATH_PRICES,
    PATH_PRICES_BEFORE_010,
    PERCENTILES,
    PERCENTILES_BEFORE_010,
    TABLE_GBM_BACKTEST,
    TABLE_GBM_FORECAST_RUNS,
    TABLE_GBM_FORECASTS,
    TABLE_GBM_PATHS,
    TABLE_GBM_RUNS,
    TABLE_MODEL_DRIFT,
    TABLE_MODEL_SCORES,
    stored_list,
)
from schemas.markets import annualisation_for

if TYPE_CHECKING:
    from gbm_analysis.backtest import BinomialBand

__all__ = [
    "CANDLE_TABLES",
    "CASSANDRA_ERRORS",
    "QUANTILES",
    "ForecastReader",
    "RunKey",
    "band_coverage",
    "coverage_frame",
    "describe_cassandra_error",
    "drift_status",
    "fan_frame",
    "histogram_frame",
    "leaderboard_skill",
    "leaderboard_table",
    "parameter_table",
    "paths_frame",
    "realised_closes",
    "run_keys",
    "run_label",
    "skill_history",
    "terminal_density",
]

QUANTILES = ("q05", "q25", "q50", "q75", "q95")
#: candle width shown to the user -> the bar table holding it
CANDLE_TABLES = {"5 s": TABLE_AGG_5S, "1 min": TABLE_AGG_1M}
#: what the driver raises when Cassandra is down, unreachable or refuses a query
CASSANDRA_ERRORS: tuple[type[Exception], ...] = (
    DriverException,
    NoHostAvailable,
    ConnectionException,
    OSError,
)

_BARS_COLUMNS = "window_start, window_end, open, high, low, close, volume"
# Values are always bound (``?``); ``{ks}`` is the keyspace, which CassandraSettings accepts only
# as letters, digits and ``_``. Qualified names, because Cassandra 5 warns about prepared
# statements on a session bound to a keyspace.
QUERIES = {
    "symbols": f"SELECT DISTINCT symbol, day FROM {{ks}}.{TABLE_GBM_FORECAST_RUNS}",
    "runs": f"SELECT * FROM {{ks}}.{TABLE_GBM_FORECAST_RUNS} WHERE symbol = ? AND day = ?",
    "complete runs": f"SELECT issued_at, run_id FROM {{ks}}.{TABLE_GBM_RUNS} WHERE day = ?",
    "forecasts": (
        "SELECT model, step, target_ts, horizon_s, as_of, last_price, mean, q05, q25, q50, q75, "
        f"q95, p_above, {PERCENTILES}, {PERCENTILES_BEFORE_010} FROM {{ks}}.{TABLE_GBM_FORECASTS} "
        "WHERE symbol = ? AND day = ? AND issued_at = ? AND run_id = ?"
    ),
    "paths": (
        f"SELECT model, path, as_of, step_seconds, {PATH_PRICES}, {PATH_PRICES_BEFORE_010} "
        f"FROM {{ks}}.{TABLE_GBM_PATHS} "
        "WHERE symbol = ? AND day = ? AND issued_at = ? AND run_id = ?"
    ),
    "backtest": f"SELECT * FROM {{ks}}.{TABLE_GBM_BACKTEST} WHERE symbol = ? AND day = ?",
    "scores": (
        "SELECT symbol, model, horizon, evaluated_at, model_version, n, coverage_50, coverage_90, "
        "kupiec_p_50, kupiec_p_90, crps_bps, rmse_ratio, directional, window_start, window_end "
        f"FROM {{ks}}.{TABLE_MODEL_SCORES} WHERE source = ? AND symbol = ?"
    ),
    # newest first (the clustering order); a check writes one row per model and feature
    "drift": f"SELECT * FROM {{ks}}.{TABLE_MODEL_DRIFT} WHERE symbol = ? LIMIT ?",
    **{
        f"bars {table}": (
            f"SELECT {_BARS_COLUMNS} FROM {{ks}}.{table} "
            "WHERE symbol = ? AND day = ? AND window_start >= ? AND window_start < ?"
        )
        for table in CANDLE_TABLES.values()
    },
}


@dataclass(frozen=True, order=True)
class RunKey:
    """One forecast run of one symbol: the clustering prefix of every ``gbm_*`` row it wrote."""

    issued_at: datetime
    run_id: str
    day: date


def utc(value: datetime) -> datetime:
    """The driver returns naive UTC datetimes; make them aware so they print and compare right."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def describe_cassandra_error(exc: BaseException, hosts: Sequence[str], port: int) -> str:
    """One line for the user: where we tried and what the driver said, without a trace.

    >>> describe_cassandra_error(ConnectionRefusedError(111, "Connection refused"),
    ...                          ["127.0.0.1"], 9)
    'Cassandra at 127.0.0.1:9 is not answering (ConnectionRefusedError: [Errno 111] Connection \
refused). Is the stack up? Start it with `make up`.'
    """
    if isinstance(exc, NoHostAvailable) and len(exc.args) > 1 and isinstance(exc.args[1], dict):
        causes = "; ".join(f"{host}: {err}" for host, err in exc.args[1].items())
        detail = f"{exc.args[0]}: {causes}" if causes else str(exc.args[0])
    else:
        detail = str(exc)
    detail = " ".join(detail.split())[:300]
    if isinstance(exc, RequestValidationException):
        return (
            f"Cassandra at {','.join(hosts)}:{port} refused the query ({type(exc).__name__}: "
            f"{detail}). Does the keyspace exist? `make up` creates and migrates it."
        )
    return (
        f"Cassandra at {','.join(hosts)}:{port} is not answering ({type(exc).__name__}: "
        f"{detail}). Is the stack up? Start it with `make up`."
    )


def run_keys(runs: pd.DataFrame) -> list[RunKey]:
    """The distinct runs in ``gbm_forecast_runs`` rows, newest first."""
    if runs.empty:
        return []
    keys = {
        RunKey(issued_at, run_id, day)
        for issued_at, run_id, day in zip(
            runs["issued_at"], runs["run_id"], runs["day"], strict=True
        )
    }
    return sorted(keys, reverse=True)


def run_label(run: RunKey, models: Iterable[str]) -> str:
    """
    >>> run_label(RunKey(datetime(2026, 1, 5, 12, 0, tzinfo=UTC), "r1", date(2026, 1, 5)),
    ...           ["gbm", "hist_sim"])
    '2026-01-05 12:00:00 UTC  (gbm, hist_sim)'
    """
    return f"{run.issued_at:%Y-%m-%d %H:%M:%S} UTC  ({', '.join(sorted(models))})"


def fan_frame(forecasts: pd.DataFrame) -> pd.DataFrame:
    """Quantile bands per model and time, with the anchor (``as_of``, last price) as step 0 so
    the fan opens at the last observed price.

    :param forecasts: rows of ``gbm_forecasts`` for one run (columns ``model, step, target_ts,
        as_of, last_price, mean, q05..q95, p_above``).
    """
    columns = ["model", "step", "time", "last_price", "mean", *QUANTILES, "p_above"]
    if forecasts.empty:
        return pd.DataFrame({c: [] for c in columns}).assign(
            time=pd.Series(dtype="datetime64[ns, UTC]")
        )
    anchors = (
        forecasts.sort_values("step")
        .groupby("model", as_index=False)
        .first()
        .assign(
            step=0, target_ts=lambda f: f["as_of"], mean=lambda f: f["last_price"], p_above=np.nan
        )
    )
    for q in QUANTILES:
        anchors[q] = anchors["last_price"]
    frame = pd.concat([anchors, forecasts], ignore_index=True)
    frame["time"] = pd.to_datetime(frame["target_ts"], utc=True)
    return frame.sort_values(["model", "step"], ignore_index=True)[columns]


def paths_frame(paths: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    """Long form of the sample paths: one row per (model, path, step), step 0 at ``as_of``.

    :param paths: rows of ``gbm_paths`` (``model, path, as_of, step_seconds, prices``) and
        ``last_price`` per model.
    :param limit: keep paths ``0 .. limit-1`` of each model
    """
    rows: list[tuple[str, int, int, pd.Timestamp, float]] = []
    columns = ("model", "path", "as_of", "step_seconds", "last_price", "prices")
    for model, path, issued, step_seconds, last_price, prices in zip(
        *(paths[c] for c in columns), strict=True
    ):
        if limit is not None and path >= limit:
            continue
        as_of = pd.Timestamp(issued)
        as_of = as_of.tz_localize("UTC") if as_of.tz is None else as_of.tz_convert("UTC")
        for step, price in enumerate([last_price, *prices]):
            rows.append(
                (model, path, step, as_of + timedelta(seconds=step * step_seconds), float(price))
            )
    return pd.DataFrame(rows, columns=["model", "path", "step", "time", "price"])


def parameter_table(runs: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Each model's fitted parameters as shown: sigma annualised by the convention of the
    symbol's market (252 d x 6.5 h for a stock, 365 d x 24 h for crypto), which a column names.

    It is computed from the stored per-second ``sigma``, so runs stored before the convention
    (their ``sigma_annualised`` is over calendar seconds) show the same figure as new ones.
    """
    convention = annualisation_for(symbol)
    table = runs[["model", "dof", "n_bars", "n_returns", "n_rejected"]].copy()
    table.insert(1, "sigma (annualised)", runs["sigma"].astype(float).map(convention.annualise))
    table.insert(2, "annualised over", convention.label)
    return table.reset_index(drop=True)


def histogram_frame(edges: Sequence[float], counts: Sequence[int]) -> pd.DataFrame:
    """Bars of the terminal-price histogram: share of paths per bin and its density (share per
    unit of price, so it is comparable with :func:`terminal_density`).

    >>> histogram_frame([1.0, 2.0, 4.0], [1, 3]).to_dict("list")
    {'lo': [1.0, 2.0], 'hi': [2.0, 4.0], 'paths': [1, 3], 'share': [0.25, 0.75], \
'density': [0.25, 0.375]}
    """
    if len(edges) != len(counts) + 1:
        raise ValueError(f"hist_edges has {len(edges)} values for {len(counts)} counts")
    total = sum(counts) or 1
    lo, hi = np.asarray(edges[:-1], dtype=float), np.asarray(edges[1:], dtype=float)
    share = np.asarray(counts, dtype=float) / total
    width = np.where(hi > lo, hi - lo, np.nan)
    return pd.DataFrame(
        {
            "lo": lo.tolist(),
            "hi": hi.tolist(),
            "paths": [int(c) for c in counts],
            "share": share.tolist(),
            "density": (share / width).tolist(),
        }
    )


def terminal_density(percentiles: Sequence[float], spacing: int = 5) -> pd.DataFrame:
    """Price density at the horizon from the stored percentiles 1..99: around percentile ``k``
    the density is ``2 * spacing / 100`` of probability over ``P(k+spacing) - P(k-spacing)``.

    >>> terminal_density([float(p) for p in range(1, 100)], spacing=5)["density"].round(6).unique()
    array([0.01])
    """
    p = np.asarray(percentiles, dtype=float)
    if p.size != 99:
        raise ValueError(f"percentiles has {p.size} values, expected 99 (1st..99th)")
    k = np.arange(spacing, 99 - spacing)
    width = p[k + spacing] - p[k - spacing]
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(width > 0, 2 * spacing / 100 / width, np.nan)
    return pd.DataFrame({"level": (k + 1) / 100, "price": p[k], "density": density})


def realised_closes(bars: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """``time, close`` of the bars that ended in ``(start, end]``, stamped at the bar end (the
    forecast's clock), oldest first."""
    if bars.empty:
        return pd.DataFrame(
            {"time": pd.Series(dtype="datetime64[ns, UTC]"), "close": pd.Series(dtype=float)}
        )
    frame = pd.DataFrame(
        {"time": pd.to_datetime(bars["window_end"], utc=True), "close": bars["close"].astype(float)}
    )
    frame = frame[(frame["time"] > pd.Timestamp(start)) & (frame["time"] <= pd.Timestamp(end))]
    return frame.sort_values("time", ignore_index=True)


def band_coverage(fan: pd.DataFrame, realised: pd.DataFrame) -> pd.DataFrame:
    """How often the realised price fell inside each model's 50% and 90% bands, over the
    forecast steps realised so far.

    :param fan: :func:`fan_frame` output.
    :param realised: ``time, close`` of the 5-second bars after ``as_of`` (bar end times).
    :returns: per model: ``steps`` realised, ``inside50`` and ``inside90`` shares.
    """
    steps = fan[fan["step"] > 0]
    if steps.empty or realised.empty:
        return pd.DataFrame(columns=["model", "steps", "inside50", "inside90"])
    ordered = realised.sort_values("time")
    # The price at a target time is the close of the last bar that ended by then.
    matched = pd.merge_asof(
        steps.sort_values("time"),
        ordered[["time", "close"]],
        on="time",
        direction="backward",
        tolerance=pd.Timedelta(seconds=30),
    ).dropna(subset=["close"])
    matched = matched[matched["time"] <= ordered["time"].iloc[-1]]
    out = []
    for model, group in matched.groupby("model"):
        inside50 = (group["close"] >= group["q25"]) & (group["close"] <= group["q75"])
        inside90 = (group["close"] >= group["q05"]) & (group["close"] <= group["q95"])
        out.append((model, len(group), float(inside50.mean()), float(inside90.mean())))
    return pd.DataFrame(out, columns=["model", "steps", "inside50", "inside90"])


def coverage_frame(backtest: pd.DataFrame) -> pd.DataFrame:
    """Coverage of the 50% and 90% bands per model and horizon step, each with the binomial band
    a calibrated model's coverage falls in with 95% probability for its ``n`` scored forecasts.

    :param backtest: ``gbm_backtest`` rows of one evaluation (``model, step, horizon_s, n,
        cover50, cover90``).
    :returns: ``model, band, nominal, step, horizon_s, n, coverage, lo, hi, inside``
    """
    # Imported here: gbm_analysis.backtest imports scipy, a third of the explorer's import time,
    # which nothing above the backtest panel needs.
    from gbm_analysis.backtest import binomial_band

    rows = []
    bands: dict[tuple[int, float], BinomialBand] = {}  # models share their counts
    columns = ("model", "step", "horizon_s", "n", "cover50", "cover90")
    for model, step, horizon_s, n, cover50, cover90 in zip(
        *(backtest[c] for c in columns), strict=True
    ):
        for band, nominal, coverage in (("50%", 0.5, float(cover50)), ("90%", 0.9, float(cover90))):
            key = (int(n), nominal)
            b = bands.get(key)
            if b is None:
                b = bands[key] = binomial_band(*key)
            rows.append(
                (
                    model,
                    band,
                    nominal,
                    int(step),
                    int(horizon_s),
                    int(n),
                    coverage,
                    b.low,
                    b.high,
                    bool(b.low <= coverage <= b.high),
                )
            )
    frame = pd.DataFrame(
        rows,
        columns=[
            "model",
            "band",
            "nominal",
            "step",
            "horizon_s",
            "n",
            "coverage",
            "lo",
            "hi",
            "inside",
        ],
    )
    return frame.sort_values(["band", "model", "step"], ignore_index=True)


def skill_history(backtests: pd.DataFrame) -> pd.DataFrame:
    """CRPS skill against the baseline per model and backtest evaluation, pooled over the
    horizon steps.

    Each row's ``crps_skill`` is ``1 - C_model / C_base`` over its ``n_paired`` forecasts, so
    ``C_model = (1 - skill) * C_base``; pooling weights both by ``n_paired``:
    ``skill = 1 - sum(n (1 - s) C_base) / sum(n C_base)``.

    :returns: ``evaluated_at, model, skill, n_paired``, oldest first
    """
    columns = ["evaluated_at", "model", "skill", "n_paired"]
    if backtests.empty:
        return pd.DataFrame(columns=columns)
    ok = backtests.dropna(subset=["crps_skill", "crps_baseline_bps"])
    ok = ok[(ok["n_paired"] > 0) & (ok["crps_baseline_bps"] > 0)]
    rows = []
    for (evaluated_at, model), g in ok.groupby(["evaluated_at", "model"]):
        weight = g["n_paired"] * g["crps_baseline_bps"]
        skill = 1.0 - float((weight * (1.0 - g["crps_skill"])).sum() / weight.sum())
        rows.append(
            (
                pd.Timestamp(evaluated_at, tz="UTC")
                if pd.Timestamp(evaluated_at).tz is None
                else pd.Timestamp(evaluated_at),
                model,
                skill,
                int(g["n_paired"].sum()),
            )
        )
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["evaluated_at", "model"], ignore_index=True
    )


LEADERBOARD_STEPS = (1, 5, 15, 30, 60)


def leaderboard_table(
    scores: pd.DataFrame, steps: Sequence[int] = LEADERBOARD_STEPS, baseline: str = "hist_sim"
) -> pd.DataFrame:
    """Per horizon in ``steps``, every model ranked by CRPS (lowest first), with its CRPS skill
    against ``baseline`` at that horizon, the band coverages and the median's RMSE against the
    random walk's (< 1 beats it).

    :param scores: ``model_scores`` rows of one symbol
    """
    columns = [
        "horizon (min)",
        "rank",
        "model",
        "version",
        "n",
        "CRPS (bps)",
        f"skill vs {baseline}",
        "cover 50%",
        "cover 90%",
        "RMSE / random walk",
        "direction right",
    ]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for horizon in steps:
        at = scores[scores["horizon"] == horizon]
        if at.empty:
            continue
        at = at.assign(_crps=at["crps_bps"].astype(float)).sort_values("_crps", na_position="last")
        base = at.loc[at["model"] == baseline, "_crps"]
        base_crps = float(base.iloc[0]) if not base.empty else math.nan
        for rank, (_, r) in enumerate(at.iterrows(), start=1):
            version = r["model_version"]
            rows.append(
                (
                    int(horizon),
                    rank,
                    r["model"],
                    f"v{int(version)}" if version is not None and version == version else "-",
                    int(r["n"]),
                    r["_crps"],
                    1.0 - r["_crps"] / base_crps if base_crps > 0 else math.nan,
                    _num(r["coverage_50"]),
                    _num(r["coverage_90"]),
                    _num(r["rmse_ratio"]),
                    _num(r["directional"]),
                )
            )
    return pd.DataFrame(rows, columns=columns)


def leaderboard_skill(scores: pd.DataFrame, baseline: str = "hist_sim") -> pd.DataFrame:
    """CRPS skill against ``baseline`` per model and horizon (every horizon scored).

    :returns: ``model, horizon, skill, crps_bps``, by model then horizon
    """
    columns = ["model", "horizon", "skill", "crps_bps"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    frame = scores[["model", "horizon", "crps_bps"]].astype({"crps_bps": float})
    base = frame[frame["model"] == baseline].set_index("horizon")["crps_bps"]
    frame = frame.assign(skill=1.0 - frame["crps_bps"] / frame["horizon"].map(base))
    return frame.sort_values(["model", "horizon"], ignore_index=True)[columns]


def drift_status(drift: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The newest drift check of one symbol: one row per model and feature, and a summary.

    :param drift: ``model_drift`` rows of one symbol (any number of checks)
    :returns: (``model, version, feature, PSI, KS p, threshold, drifted, retrain``, summary with
        ``checked_at``, ``max_psi``, ``min_ks_p``, ``drifted`` and ``retrain``); an empty table
        and an empty summary when the symbol was never checked
    """
    columns = ["model", "version", "feature", "PSI", "KS p", "threshold", "drifted", "retrain"]
    if drift.empty:
        return pd.DataFrame(columns=columns), {}
    newest = drift[drift["checked_at"] == drift["checked_at"].max()]
    newest = newest.sort_values(["model", "feature"], ignore_index=True)
    retrain = [bool(v) if v is not None and v == v else False for v in newest["retrain"]]
    table = pd.DataFrame(
        {
            "model": newest["model"],
            "version": [
                f"v{int(v)}" if v is not None and v == v else "-" for v in newest["model_version"]
            ],
            "feature": newest["feature"],
            "PSI": newest["psi"].astype(float),
            "KS p": newest["ks_p"].astype(float),
            "threshold": newest["threshold"].astype(float),
            "drifted": newest["drifted"].astype(bool),
            "retrain": retrain,
        }
    )
    summary = {
        "checked_at": newest["checked_at"].iloc[0],
        "max_psi": float(table["PSI"].max()),
        "min_ks_p": float(table["KS p"].min()),
        "drifted": bool(table["drifted"].any()),
        "retrain": any(retrain),
        "threshold": float(table["threshold"].max()),
    }
    return table[columns], summary


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _frame(rows: Iterable[Any]) -> pd.DataFrame:
    return pd.DataFrame([row._asdict() for row in rows])


def _stored_lists(frame: pd.DataFrame, column: str, before_010: str) -> pd.DataFrame:
    """``frame`` with one list column under the name the pages use, ``before_010``: the
    frozen ``column`` of rows written since migration 010, the old column's list before it."""
    if not frame.empty:
        frame[before_010] = [
            stored_list({column: new, before_010: old}, column, before_010)
            for new, old in zip(frame[column], frame[before_010], strict=True)
        ]
    return frame.drop(columns=[column], errors="ignore")


def _days(start: datetime, end: datetime) -> list[date]:
    """UTC days from ``start`` to ``end`` inclusive (the partitions a time range touches)."""
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


class ForecastReader:
    """Reads what ``gbm_analysis`` and the stream processor wrote in ``keyspace``; every method
    returns plain frames.

    :param session: a cassandra-driver session (any or no keyspace set)
    :param cluster: shut down by :meth:`close`, if given
    """

    def __init__(self, session: Any, keyspace: str, cluster: Any = None) -> None:
        if not keyspace.replace("_", "").isalnum():
            raise ValueError(f"keyspace {keyspace!r}: use letters, digits and _")
        self.session = session
        self.keyspace = keyspace
        self.cluster = cluster
        self._prepared: dict[str, Any] = {}

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()

    def _execute(self, query: str, values: Sequence[Any] = ()) -> Any:
        statement = self._prepared.get(query)
        if statement is None:
            statement = self._prepared[query] = self.session.prepare(
                QUERIES[query].format(ks=self.keyspace)
            )
        return self.session.execute(statement, tuple(values))

    def symbols(self, days: Sequence[date]) -> list[str]:
        """Symbols with a forecast run on any of ``days``."""
        wanted = set(days)
        return sorted({r.symbol for r in self._execute("symbols") if _as_date(r.day) in wanted})

    def runs(self, symbol: str, days: Sequence[date]) -> pd.DataFrame:
        """``gbm_forecast_runs`` rows of ``symbol`` on ``days`` from complete runs, newest first.

        A run writes its ``gbm_runs`` row last; one without it was killed mid-write (or is still
        writing) and may lack models or steps, so it is not offered.
        """
        frames = [_frame(self._execute("runs", (symbol, day))) for day in days]
        runs = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()], ignore_index=True)
        if runs.empty:
            return runs
        runs["day"] = runs["day"].map(_as_date)
        runs["issued_at"] = runs["issued_at"].map(utc)
        complete = {
            (utc(r.issued_at), r.run_id)
            for day in sorted(set(runs["day"]))
            for r in self._execute("complete runs", (day,))
        }
        runs = runs[
            [(t, r) in complete for t, r in zip(runs["issued_at"], runs["run_id"], strict=True)]
        ]
        if runs.empty:
            return runs.reset_index(drop=True)
        runs["as_of"] = runs["as_of"].map(lambda t: utc(t) if t is not None else None)
        return runs.sort_values(["issued_at", "model"], ascending=[False, True], ignore_index=True)

    def forecasts(self, symbol: str, run: RunKey) -> pd.DataFrame:
        frame = _stored_lists(
            _frame(self._execute("forecasts", (symbol, run.day, run.issued_at, run.run_id))),
            PERCENTILES,
            PERCENTILES_BEFORE_010,
        )
        for column in ("target_ts", "as_of"):
            if not frame.empty:
                frame[column] = frame[column].map(utc)
        return frame

    def paths(self, symbol: str, run: RunKey) -> pd.DataFrame:
        frame = _stored_lists(
            _frame(self._execute("paths", (symbol, run.day, run.issued_at, run.run_id))),
            PATH_PRICES,
            PATH_PRICES_BEFORE_010,
        )
        if not frame.empty:
            frame["as_of"] = frame["as_of"].map(utc)
        return frame

    def bars(self, symbol: str, candle: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars of width ``candle`` (a key of :data:`CANDLE_TABLES`) starting in
        ``[start, end)``, oldest first, times in UTC."""
        query = f"bars {CANDLE_TABLES[candle]}"
        rows = [
            row
            for day in _days(start, end)
            for row in self._execute(query, (symbol, day, start, end))
        ]
        frame = _frame(rows)
        if frame.empty:
            return pd.DataFrame(columns=_BARS_COLUMNS.split(", "))
        for column in ("window_start", "window_end"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame.sort_values("window_start", ignore_index=True)

    def scores(self, symbol: str, source: str = "walk_forward") -> pd.DataFrame:
        """``model_scores`` rows of ``symbol``: every model's latest walk-forward scores."""
        frame = _frame(self._execute("scores", (source, symbol)))
        for column in ("evaluated_at", "window_start", "window_end"):
            if not frame.empty:
                frame[column] = frame[column].map(utc)
        return frame

    def drift(self, symbol: str, limit: int = 400) -> pd.DataFrame:
        """The newest ``limit`` ``model_drift`` rows of ``symbol`` (newest check first)."""
        frame = _frame(self._execute("drift", (symbol, limit)))
        if not frame.empty:
            frame["checked_at"] = frame["checked_at"].map(utc)
        return frame

    def backtests(self, symbol: str, days: Sequence[date]) -> pd.DataFrame:
        """Every ``gbm_backtest`` row of ``symbol`` (``*`` = pooled) evaluated on ``days``."""
        frames = [_frame(self._execute("backtest", (symbol, day))) for day in days]
        frame = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()], ignore_index=True)
        if not frame.empty:
            frame["evaluated_at"] = frame["evaluated_at"].map(utc)
        return frame


def newest_evaluation(backtests: pd.DataFrame) -> pd.DataFrame:
    """The rows of the newest backtest evaluation, ordered by model and step."""
    if backtests.empty:
        return backtests
    newest = backtests["evaluated_at"].max()
    return backtests[backtests["evaluated_at"] == newest].sort_values(
        ["model", "step"], ignore_index=True
    )


def _as_date(value: Any) -> date:
    # The driver gives cassandra.util.Date for ``date`` columns; it knows its own date().
    return value if isinstance(value, date) else value.date()


def finite(value: Any) -> float | None:
    """``value`` as a float, or None for NULL/NaN (what the job stores for "not applicable")."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
