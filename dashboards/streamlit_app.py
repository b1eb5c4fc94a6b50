"""Streamlit explorer of the GBM forecasts, started by ``make up`` (``python -m infra up``).

Pick a symbol, a run and a model (or two, A and B, side by side: any of the GBM family and the
registered learned models the run forecast with); see the forecast fan over the price history with
the realised price drawn in as it arrives, the terminal distribution, P(above last), the
backtest's band coverage and CRPS skill, what the forecast would look like with other parameters,
the walk-forward leaderboard of every model (``model_scores``) and the drift of the learned
models' inputs (``model_drift``: PSI, KS p-value, whether the check triggered a retrain). Reads
Cassandra with the read-only role that ``infra`` passes in ``CASSANDRA_USERNAME/PASSWORD``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import pandas as pd
import streamlit as st

from dashboards.charts import coverage_figure, leaderboard_figure, skill_figure
from dashboards.forecasts import (
    CANDLE_TABLES,
    CASSANDRA_ERRORS,
    ForecastReader,
    RunKey,
    band_coverage,
    coverage_frame,
    describe_cassandra_error,
    drift_status,
    fan_frame,
    finite,
    histogram_frame,
    leaderboard_skill,
    leaderboard_table,
    newest_evaluation,
    parameter_table,
    paths_frame,
    realised_closes,
    run_keys,
    run_label,
    skill_history,
    terminal_density,
)
from dashboards.settings import ExplorerSettings
from dashboards.vega_charts import fan_charts, p_above_chart, terminal_chart
from dashboards.what_if import StoredModel, WhatIf, WhatIfResult, what_if_forecast
from gbm_analysis.config import MODEL_NAMES
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings, SettingsError

ALL_MODELS = "all, side by side"
TWO_MODELS = "two, side by side: model A and model B"
HISTORY = {"15 min": 15, "1 h": 60, "6 h": 360}
PATH_COUNTS = (500, 1_000, 2_000, 5_000, 10_000, 20_000)
POOLED_LABEL = "all symbols, pooled"
DISTRIBUTION, BACKTEST, LEADERBOARD, DRIFT = (
    "terminal price and P(above)",
    "backtest",
    "leaderboard",
    "drift",
)
PANELS = (DISTRIBUTION, BACKTEST, LEADERBOARD, DRIFT)


class Target(NamedTuple):
    """Which Cassandra and keyspace; the cache key of the session (the password is not in it)."""

    hosts: tuple[str, ...]
    port: int
    keyspace: str
    username: str


def _settings() -> tuple[ExplorerSettings, str | None]:
    try:
        return ExplorerSettings.from_env(), None
    except SettingsError as exc:
        return ExplorerSettings(), str(exc)


SETTINGS, SETTINGS_ERROR = _settings()
TTL = SETTINGS.cache_ttl_seconds
BARS_TTL = SETTINGS.bars_ttl_seconds


@st.cache_resource(show_spinner=False, on_release=lambda reader: reader.close())
def _reader(target: Target) -> ForecastReader:
    settings = CassandraSettings.from_env()
    cluster, session = connect(settings, connect_timeout=5, request_timeout=15)
    return ForecastReader(session, target.keyspace, cluster)


@st.cache_data(ttl=TTL, show_spinner=False)
def _symbols(target: Target, days: tuple[date, ...]) -> list[str]:
    return _reader(target).symbols(days)


@st.cache_data(ttl=TTL, show_spinner=False)
def _runs(target: Target, symbol: str, days: tuple[date, ...]) -> pd.DataFrame:
    return _reader(target).runs(symbol, days)


@st.cache_data(ttl=TTL, show_spinner=False)
def _forecasts(target: Target, symbol: str, run: RunKey) -> pd.DataFrame:
    return _reader(target).forecasts(symbol, run)


@st.cache_data(ttl=TTL, show_spinner=False)
def _paths(target: Target, symbol: str, run: RunKey) -> pd.DataFrame:
    return _reader(target).paths(symbol, run)


@st.cache_data(ttl=BARS_TTL, show_spinner=False)
def _bars(target: Target, symbol: str, candle: str, start: datetime, end: datetime) -> pd.DataFrame:
    return _reader(target).bars(symbol, candle, start, end)


@st.cache_data(ttl=TTL, show_spinner=False)
def _backtests(target: Target, symbol: str, days: tuple[date, ...]) -> pd.DataFrame:
    return _reader(target).backtests(symbol, days)


@st.cache_data(ttl=TTL, show_spinner=False)
def _scores(target: Target, symbol: str) -> pd.DataFrame:
    return _reader(target).scores(symbol)


@st.cache_data(ttl=TTL, show_spinner=False)
def _drift(target: Target, symbol: str) -> pd.DataFrame:
    return _reader(target).drift(symbol)


@st.cache_data(max_entries=64, show_spinner=False)
def _what_if(base: StoredModel, change: WhatIf) -> WhatIfResult:
    return what_if_forecast(base, change)


@dataclass(frozen=True)
class View:
    """Everything the charts need, chosen in the sidebar (the live fragment reruns with it)."""

    target: Target
    symbol: str
    run: RunKey
    models: tuple[str, ...]
    candle: str
    history_minutes: int
    n_sample: int
    days: tuple[date, ...]
    pooled_backtest: bool
    what_if: tuple[tuple[StoredModel, WhatIf], ...]


def stored_model(symbol: str, row: pd.Series) -> StoredModel:
    return StoredModel(
        symbol=symbol,
        model=str(row["model"]),
        as_of=row["as_of"],
        last_price=float(row["last_price"]),
        mu=finite(row["mu"]) or 0.0,
        sigma=float(row["sigma"]),
        dof=finite(row["dof"]),
        step_seconds=int(row["step_seconds"]),
        n_steps=int(row["n_steps"]),
        n_paths=int(row["n_paths"]),
        seed=int(row["seed"]),
    )


def _cassandra_failed(exc: BaseException, target: Target) -> None:
    # A fresh session next time: the driver's own reconnection backs off for minutes.
    _reader.clear()
    st.error(describe_cassandra_error(exc, target.hosts, target.port))


def what_if_controls(base: StoredModel, run: RunKey) -> tuple[bool, WhatIf]:
    side = st.sidebar
    side.subheader("What if")
    key = run.run_id
    enabled = side.toggle(
        "overlay what-if",
        value=False,
        key=f"what-if-{key}",
        help="Re-simulate each shown model with the forecast job's own "
        "simulator and seed, dashed over the stored fan. Unchanged, gbm and "
        "ewma_t reproduce the stored run; hist_sim resamples history, so its "
        "what-if is a GBM with the spread of those returns.",
    )
    sigma = side.slider("sigma multiplier", 0.25, 3.0, 1.0, 0.05, key=f"sigma-{key}")
    drift = side.slider(
        "drift, % per day",
        -20.0,
        20.0,
        min(max(base.drift_pct_per_day, -20.0), 20.0),
        0.5,
        key=f"drift-{key}",
    )
    horizon = side.slider(
        f"horizon, steps of {base.step_seconds} s",
        1,
        max(2 * base.n_steps, 120),
        base.n_steps,
        key=f"horizon-{key}",
    )
    counts = sorted({*PATH_COUNTS, base.n_paths})
    n_paths = side.select_slider("paths", counts, value=base.n_paths, key=f"paths-{key}")
    # Text, not a number input: run seeds are 63-bit, beyond what a browser number holds.
    text = side.text_input("seed", value=str(base.seed), key=f"seed-{key}")
    seed = parse_seed(text)
    if seed is None:
        side.error(f"seed {text!r} is not a whole number >= 0; using the run's seed")
        seed = base.seed
    return enabled, WhatIf(
        sigma_multiplier=float(sigma),
        drift_pct_per_day=float(drift),
        n_steps=int(horizon),
        n_paths=int(n_paths),
        seed=seed,
    )


def parse_seed(text: str) -> int | None:
    try:
        seed = int(text.strip())
    except ValueError:
        return None
    return seed if 0 <= seed < 2**64 else None


def explore(target: Target) -> None:
    side = st.sidebar
    today = datetime.now(UTC).date()
    days_back = side.number_input("days to look back", min_value=1, max_value=30, value=3)
    days = tuple(today - timedelta(days=n) for n in range(int(days_back)))
    symbols = _symbols(target, days)
    if not symbols:
        st.info(
            f"No forecasts in keyspace {target.keyspace!r} in the last {int(days_back)} days yet. "
            "The hourly job writes them (`python -m gbm_analysis run --once` runs one now)."
        )
        return
    symbol = side.selectbox("symbol", symbols, key="symbol")
    runs = _runs(target, symbol, days)
    keys = run_keys(runs)
    if not keys:
        st.info(
            f"No complete forecast run of {symbol} yet: a run still writing, or one killed "
            "mid-write, is not shown."
        )
        return
    labels = {k: run_label(k, runs[runs["run_id"] == k.run_id]["model"]) for k in keys}
    run = side.selectbox(
        "forecast run (newest first)",
        keys,
        index=0,
        format_func=labels.__getitem__,
        key=f"run-{symbol}",
    )
    this_run = runs[runs["run_id"] == run.run_id]
    ok = this_run[this_run["status"] == "ok"]
    for r in this_run[this_run["status"] != "ok"].itertuples():
        st.warning(f"{r.model}: no forecast ({r.status}): {r.message}")
    if ok.empty:
        st.info(f"This run made no forecast for {symbol}; pick another run or symbol.")
        return
    ok_models = list(ok["model"])
    models = choose_models(ok_models)
    candle = side.radio("candles", list(CANDLE_TABLES), horizontal=True, key="candle")
    history = side.select_slider(
        "history before the run", list(HISTORY), value="1 h", key="history"
    )
    n_sample = side.slider("sample paths", 0, 50, 10, key="sample-paths")
    scope = side.radio("backtest of", [symbol, POOLED_LABEL], key=f"scope-{symbol}")

    shown = ok.set_index("model", drop=False).loc[list(models)].reset_index(drop=True)
    bases = [stored_model(symbol, row) for _, row in shown.iterrows()]
    # the learned models have no simulator parameters to change: the what-if is the GBM family's
    simulated = [b for b in bases if b.model in MODEL_NAMES]
    enabled, change = what_if_controls((simulated or bases)[0], run)
    first = bases[0]
    # The run's figures go above the fan but are sent after it: the fan is what a visitor waits
    # for, and the browser starts loading the charting code when the first chart arrives.
    header = st.container()

    what_if = (
        tuple((base, replace(change, n_sample=max(n_sample, 1))) for base in simulated)
        if enabled
        else ()
    )
    view = View(
        target=target,
        symbol=symbol,
        run=run,
        models=models,
        candle=candle,
        history_minutes=HISTORY[history],
        n_sample=n_sample,
        days=days,
        pooled_backtest=scope == POOLED_LABEL,
        what_if=what_if,
    )
    first_end = first.as_of + timedelta(seconds=first.n_steps * first.step_seconds)
    run_every = SETTINGS.refresh_for(first_end, datetime.now(UTC))
    st.fragment(run_every=run_every)(live_fan)(view, ok, run_every)
    with header:
        run_header(first, run, shown, symbol)
    st.fragment(lower_panels)(view, ok)


def run_header(first: StoredModel, run: RunKey, shown: pd.DataFrame, symbol: str) -> None:
    """The run at a glance: last price, as-of time, horizon, paths, and each shown model's
    fitted parameters."""
    cols = st.columns(4)
    cols[0].metric("last price", f"{first.last_price:,.6g}")
    cols[1].metric("as of (UTC)", f"{first.as_of:%H:%M:%S}", help=f"{first.as_of:%Y-%m-%d}")
    cols[2].metric("horizon", f"{first.n_steps} x {first.step_seconds} s")
    cols[3].metric("paths", f"{first.n_paths:,}")
    st.caption(
        f"Run {run.run_id}, issued {run.issued_at:%Y-%m-%d %H:%M:%S} UTC, seed "
        f"{first.seed}, forecasting from {first.as_of:%Y-%m-%d %H:%M:%S} UTC."
    )
    st.dataframe(parameter_table(shown, symbol), hide_index=True, width="stretch")


def choose_models(ok_models: list[str]) -> tuple[str, ...]:
    """The sidebar's model choice: all, two side by side (A and B), or one."""
    side = st.sidebar
    offered = [ALL_MODELS, *([TWO_MODELS] if len(ok_models) > 1 else []), *ok_models]
    # keyed by the models on offer: the choice carries over to symbols that offer the same ones
    key = ",".join(ok_models)
    choice = side.selectbox("model", offered, key=f"model-{key}")
    if choice == ALL_MODELS:
        return tuple(ok_models)
    if choice != TWO_MODELS:
        return (choice,)
    a = side.selectbox("model A (left)", ok_models, index=0, key=f"model-a-{key}")
    b = side.selectbox("model B (right)", ok_models, index=1, key=f"model-b-{key}")
    return (a,) if a == b else (a, b)


def _run_frames(view: View) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, WhatIfResult]]:
    """The run's forecast steps of the shown models, their fan, and the what-if per model."""
    forecasts = _forecasts(view.target, view.symbol, view.run)
    if not forecasts.empty:
        forecasts = forecasts[forecasts["model"].isin(view.models)]
    sims = {base.model: _what_if(base, change) for base, change in view.what_if}
    fan = fan_frame(forecasts)
    if not fan.empty:  # panels left to right in the order chosen (model A, then B)
        order = {m: i for i, m in enumerate(view.models)}
        fan = fan.assign(_order=fan["model"].map(order))
        fan = fan.sort_values(["_order", "step"], ignore_index=True).drop(columns="_order")
    return forecasts, fan, sims


def live_fan(view: View, ok: pd.DataFrame, run_every: float | None) -> None:
    """The fan over the price history. A fragment: while the run's horizon is open it re-reads
    the bars every ``run_every`` seconds and redraws this chart alone, not the page."""
    try:
        _live_fan(view, ok, run_every)
    except CASSANDRA_ERRORS as exc:
        _cassandra_failed(exc, view.target)


def _live_fan(view: View, ok: pd.DataFrame, run_every: float | None) -> None:
    started = time.perf_counter()
    _, fan, sims = _run_frames(view)
    if fan.empty:
        st.info("The forecast steps of this run are not readable yet; try again in a moment.")
        return
    as_of = fan["time"].min().to_pydatetime()
    horizon_end = fan["time"].max().to_pydatetime()
    now = datetime.now(UTC)
    bars = _bars(
        view.target,
        view.symbol,
        view.candle,
        as_of - timedelta(minutes=view.history_minutes),
        horizon_end,
    )
    fine = (
        bars
        if view.candle == "5 s"
        else _bars(view.target, view.symbol, "5 s", as_of - timedelta(seconds=5), horizon_end)
    )
    realised = realised_closes(fine, as_of, horizon_end)
    paths = pd.DataFrame()
    if view.n_sample:
        raw = _paths(view.target, view.symbol, view.run)
        if not raw.empty:
            raw = raw[raw["model"].isin(view.models)].assign(
                last_price=lambda f: f["model"].map(
                    dict(zip(ok["model"], ok["last_price"], strict=True))
                )
            )
            paths = paths_frame(raw, limit=view.n_sample)

    st.subheader("Forecast fan over the price history")
    if bars.empty:
        st.caption(f"No {view.candle} bars around this run yet.")
    charts = fan_charts(fan, candles=bars, realised=realised, paths=paths, what_if=sims)
    # side by side, left to right in the order chosen (model A, then B)
    for column, (model, chart) in zip(st.columns(len(charts)), charts.items(), strict=True):
        column.altair_chart(chart, key=f"fan-{model}", width="stretch")
    realised_steps = band_coverage(fan, realised)
    if realised.empty:
        st.caption(
            "Nothing realised since the forecast yet: the realised price appears as bars " "arrive."
        )
    elif not realised_steps.empty:
        st.dataframe(
            realised_steps.rename(
                columns={
                    "steps": "steps realised",
                    "inside50": "inside 25-75%",
                    "inside90": "inside 5-95%",
                }
            ),
            hide_index=True,
            width="stretch",
        )
    if run_every:
        refresh = f"refreshes every {run_every:g} s until the horizon has passed."
    elif SETTINGS.refresh_seconds:
        refresh = "the horizon has passed, so it no longer refreshes."
    else:
        refresh = "live refresh is off (STREAMLIT_REFRESH=0)."
    st.caption(f"Read at {now:%H:%M:%S} UTC in {time.perf_counter() - started:.2f} s; {refresh}")


def lower_panels(view: View, ok: pd.DataFrame) -> None:
    """One panel under the fan, chosen with a segmented control. A fragment: choosing another
    panel reruns this alone, not the fan. One panel, not all of them, so a page load draws two
    small Vega-Lite charts after the fan instead of five more charts, and Streamlit loads the
    Plotly chunk (4.7 MB) only when the backtest or the leaderboard is opened."""
    choice = st.segmented_control(
        "below the fan", PANELS, default=PANELS[0], required=True, key="panel"
    )
    try:
        if choice == BACKTEST:
            backtest_panel(view)
        elif choice == LEADERBOARD:
            leaderboard_panel(view.target, view.symbol)
        elif choice == DRIFT:
            drift_panel(view.target, view.symbol)
        else:
            distribution_panel(view, ok)
    except CASSANDRA_ERRORS as exc:
        _cassandra_failed(exc, view.target)


def distribution_panel(view: View, ok: pd.DataFrame) -> None:
    """Terminal distribution and P(above last): fixed for a run, so drawn with the page, not
    refreshed with the fan."""
    forecasts, fan, sims = _run_frames(view)
    if fan.empty:
        return
    left, right = st.columns(2)
    with left:
        st.subheader("Terminal price")
        last_step = forecasts[forecasts["step"] == forecasts["step"].max()]
        densities = {
            r.model: terminal_density(r.percentiles)
            for r in last_step.itertuples()
            if r.percentiles
        }
        shown = ok[ok["model"].isin(view.models)]
        histograms = {
            model: histogram_frame(edges, counts)
            for model, edges, counts in zip(
                shown["model"], shown["hist_edges"], shown["hist_counts"], strict=True
            )
            if edges
        }
        st.altair_chart(
            terminal_chart(
                histograms, densities, last_price=float(ok["last_price"].iloc[0]), what_if=sims
            ),
            key="terminal",
            width="stretch",
        )
    with right:
        st.subheader("P(above the last price)")
        st.altair_chart(p_above_chart(fan, sims), key="p_above", width="stretch")


def backtest_panel(view: View) -> None:
    """The backtest's band coverage (with the binomial acceptance band) and CRPS skill."""
    # Imported here, not at the top: gbm_analysis.backtest imports scipy, a third of the
    # explorer's import time (paid by the first page after a start).
    from gbm_analysis.backtest import BASELINE_MODEL, POOLED_SYMBOL

    st.subheader(f"Backtest ({POOLED_LABEL if view.pooled_backtest else view.symbol})")
    backtest_symbol = POOLED_SYMBOL if view.pooled_backtest else view.symbol
    backtests = _backtests(view.target, backtest_symbol, view.days)
    if backtests.empty:
        st.info(
            "Not backtested yet: the backtest (`python -m gbm_analysis backtest`) scores "
            "forecasts once their horizon has passed."
        )
        return
    newest = newest_evaluation(backtests)
    newest = newest[newest["model"].isin(view.models)]
    st.caption(
        f"Newest evaluation {newest['evaluated_at'].max():%Y-%m-%d %H:%M:%S} UTC; "
        "shaded: the 95% binomial band a calibrated model's coverage falls in."
    )
    st.plotly_chart(coverage_figure(coverage_frame(newest)), key="coverage", width="stretch")
    skill = skill_history(backtests[backtests["model"].isin(view.models)])
    st.plotly_chart(skill_figure(skill, BASELINE_MODEL), key="skill", width="stretch")


def leaderboard_panel(target: Target, symbol: str) -> None:
    """Every model's walk-forward scores (``python -m gbm_analysis train`` writes them), for the
    symbol (not the run)."""
    from gbm_analysis.backtest import BASELINE_MODEL  # here, not at the top: see backtest_panel

    st.subheader(f"Leaderboard ({symbol}, walk-forward)")
    scores = _scores(target, symbol)
    if scores.empty:
        st.info(
            f"No walk-forward scores of {symbol} yet: `python -m gbm_analysis train` scores "
            "every model on the same test window and writes them."
        )
    else:
        window = (scores["window_start"].min(), scores["window_end"].max())
        st.caption(
            f"Every model issued at the same times in the test window {window[0]:%Y-%m-%d %H:%M}"
            f" to {window[1]:%Y-%m-%d %H:%M} UTC (evaluated "
            f"{scores['evaluated_at'].max():%Y-%m-%d %H:%M} UTC); ranked by CRPS at each "
            f"horizon. Skill > 0 beats {BASELINE_MODEL}; RMSE / random walk < 1 beats a "
            "zero-return forecast."
        )
        st.dataframe(leaderboard_table(scores), hide_index=True, width="stretch")
        st.plotly_chart(
            leaderboard_figure(leaderboard_skill(scores), BASELINE_MODEL),
            key="leaderboard",
            width="stretch",
        )


def drift_panel(target: Target, symbol: str) -> None:
    """The newest drift check of the learned models' inputs, for the symbol (not the run)."""
    st.subheader(f"Drift of the learned models' inputs ({symbol})")
    table, summary = drift_status(_drift(target, symbol))
    if not summary:
        st.info(
            f"No drift check of {symbol} yet: `python -m gbm_analysis drift` compares the recent "
            "1-minute bars with each production model's training window."
        )
        return
    verdict = (
        "retrain triggered"
        if summary["retrain"]
        else "drifted (KS only: no retrain)"
        if summary["drifted"]
        else "stable"
    )
    cols = st.columns(4)
    cols[0].metric("drift status", verdict)
    cols[1].metric("max PSI", f"{summary['max_psi']:.3f}", help=f"threshold {summary['threshold']}")
    cols[2].metric("min KS p-value", f"{summary['min_ks_p']:.2g}")
    cols[3].metric("checked (UTC)", f"{summary['checked_at']:%Y-%m-%d %H:%M}")
    st.dataframe(table, hide_index=True, width="stretch")


def main() -> None:
    st.set_page_config(page_title="GBM forecast explorer", layout="wide")
    st.title("GBM forecast explorer")
    if SETTINGS_ERROR:
        st.error(f"Configuration: {SETTINGS_ERROR}")
        return
    try:
        cassandra = CassandraSettings.from_env()
    except SettingsError as exc:
        st.error(f"Configuration: {exc}")
        return
    target = Target(cassandra.hosts, cassandra.port, cassandra.keyspace, cassandra.username or "")
    try:
        explore(target)
    except CASSANDRA_ERRORS as exc:
        _cassandra_failed(exc, target)


main()
