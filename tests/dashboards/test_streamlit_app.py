"""The forecast explorer against the real Cassandra, on forecasts and backtests written by the
real GBM job, read with the read-only role as the served app reads them."""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest

from infra.cassandra import READER_ROLE, CassandraService
from infra.config import InfraConfig
from infra.streamlit import APP
from schemas.runtime.cassandra import connect
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT, infra_cli, run_infra

pytestmark = pytest.mark.integration

N_STEPS = 12
STEP_S = 5
N_PATHS = 2000
SEED = 7
MODELS = ("ewma_t", "gbm", "hist_sim")
SIGMA = 0.6 / math.sqrt(365.25 * 86_400)
NOW = datetime.now(UTC).replace(microsecond=0)
# Two runs, far enough back that their horizons (60 s) are realised by the seeded bars.
AS_OF_OLD = (NOW - timedelta(minutes=40)).replace(second=0)
AS_OF_NEW = (NOW - timedelta(minutes=30)).replace(second=0)


@pytest.fixture(scope="module")
def symbols() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6].upper()
    return {"good": f"APP{tag}:GOOD", "thin": f"APP{tag}:THIN", "live": f"APP{tag}:LIVE"}


@pytest.fixture(scope="module")
def session(test_keyspace: CassandraSettings) -> Iterator[Any]:
    """The application role, which the job and the stream processor write with."""
    cluster, session = connect(test_keyspace, keyspace=test_keyspace.keyspace)
    yield session
    cluster.shutdown()


def insert_bars(
    session: Any,
    table: str,
    symbol: str,
    starts: list[datetime],
    closes: np.ndarray,
    width: timedelta,
) -> None:
    stmt = session.prepare(
        f"INSERT INTO {table} (symbol, day, window_start, window_end, open, high, low, close,"
        " volume, vwap, trade_count) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    for start, close in zip(starts, closes, strict=True):
        c = float(close)
        session.execute(
            stmt,
            (
                symbol,
                start.date(),
                start,
                start + width,
                c * 0.999,
                c * 1.001,
                c * 0.998,
                c,
                1.0,
                c,
                1,
            ),
        )


def insert_5s(session: Any, symbol: str, starts: list[datetime], closes: np.ndarray) -> None:
    insert_bars(session, "trades_agg_5s", symbol, starts, closes, timedelta(seconds=5))


def job(keyspace: str, symbols: list[str], *argv: str) -> None:
    env = {
        **os.environ,
        "CASSANDRA_KEYSPACE": keyspace,
        "GBM_SYMBOLS": ",".join(symbols),
        "GBM_LOOKBACK": "1h",
        "GBM_STEP": f"{STEP_S}s",
        "GBM_STEPS": str(N_STEPS),
        "GBM_PATHS": str(N_PATHS),
        "GBM_SAMPLE_PATHS": "5",
        "GBM_SEED": str(SEED),
    }
    result = subprocess.run(
        [sys.executable, "-m", "gbm_analysis", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def data(session: Any, test_keyspace: CassandraSettings, symbols: dict[str, str]) -> dict[str, Any]:
    """90 minutes of 5-s bars up to 20 minutes ago (the 1-m bars rolled up from them, as the
    stream processor does), two forecast runs and two backtests, run as a user runs them.
    The live symbol has bars only up to its as-of time: the test adds the rest."""
    start = AS_OF_OLD - timedelta(minutes=50)
    end = AS_OF_NEW + timedelta(minutes=10)
    starts = [
        start + timedelta(seconds=5 * i) for i in range(int((end - start).total_seconds()) // 5)
    ]
    rng = np.random.default_rng(5)
    closes = 250.0 * np.exp(np.cumsum(SIGMA * math.sqrt(5) * rng.standard_normal(len(starts))))
    insert_5s(session, symbols["good"], starts, closes)
    minute = pd.Series(closes, index=pd.DatetimeIndex(starts)).resample("1min").last()
    insert_bars(
        session,
        "trades_agg_1m",
        symbols["good"],
        list(minute.index.to_pydatetime()),
        minute.to_numpy(),
        timedelta(minutes=1),
    )
    n_live = starts.index(AS_OF_NEW)
    insert_5s(session, symbols["live"], starts[:n_live], closes[:n_live] * 2)
    insert_5s(session, symbols["thin"], starts[n_live - 10 : n_live], closes[:10])
    ks = test_keyspace.keyspace
    job(ks, [symbols["good"]], "run", "--once", f"--as-of={AS_OF_OLD.isoformat()}")
    job(ks, list(symbols.values()), "run", "--once", f"--as-of={AS_OF_NEW.isoformat()}")
    job(ks, [], "backtest")
    job(ks, [], "backtest")
    return {"starts": starts, "closes": closes, "n_live": n_live}


@pytest.fixture
def reader_env(test_keyspace: CassandraSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = CassandraService(InfraConfig.from_env()).reader_credentials()
    monkeypatch.setenv("CASSANDRA_KEYSPACE", test_keyspace.keyspace)
    monkeypatch.setenv("CASSANDRA_USERNAME", user)
    monkeypatch.setenv("CASSANDRA_PASSWORD", password)
    monkeypatch.setenv("STREAMLIT_REFRESH", "1s")
    st.cache_data.clear()


@pytest.fixture
def app(reader_env: None, data: dict[str, Any]) -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=120)


def stored(session: Any, symbol: str, as_of: datetime) -> pd.DataFrame:
    rows = session.execute(
        "SELECT * FROM gbm_forecasts WHERE symbol = %s AND day = %s", (symbol, NOW.date())
    )
    frame = pd.DataFrame([r._asdict() for r in rows])
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    return frame[frame["as_of"] == pd.Timestamp(as_of) + pd.Timedelta(seconds=0)]


def run_row(session: Any, symbol: str, as_of: datetime, model: str) -> Any:
    rows = session.execute(
        "SELECT * FROM gbm_forecast_runs WHERE symbol = %s AND day = %s", (symbol, NOW.date())
    )
    return next(
        r
        for r in rows
        if r.model == model and r.as_of is not None and r.as_of.replace(tzinfo=UTC) == as_of
    )


def backtests(session: Any, symbol: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            r._asdict()
            for r in session.execute(
                "SELECT * FROM gbm_backtest WHERE symbol = %s AND day = %s", (symbol, NOW.date())
            )
        ]
    )


def newest_backtest(session: Any, symbol: str) -> pd.DataFrame:
    frame = backtests(session, symbol)
    return frame[frame["evaluated_at"] == frame["evaluated_at"].max()]


def decode(values: Any) -> list[Any]:
    """Plotly JSON arrays are either lists or ``{"dtype", "bdata"}`` (base64 numpy)."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(
            base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])
        ).tolist()
    return list(values)


def figures(at: AppTest) -> dict[str, dict[str, Any]]:
    """Every chart on the page by name, as ``{"data": [trace, ...]}`` with Plotly's traces (each
    ``meta = {"model", "role"}``). The Vega-Lite charts (the fans, one per model, the terminal
    distribution and P(above)) are read into the same shape: one trace per model and role, its
    ``y`` the plotted column (and a candle trace's ``close``); the fans merged under ``"fan"``."""
    out: dict[str, dict[str, Any]] = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[spec["layout"]["meta"]["chart"]] = spec
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        frames = {
            d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in element.proto.datasets
        }
        chart = spec["description"].split(" ")[0]
        found = out.setdefault(chart, {"data": []})["data"]
        for layer in spec["layer"]:
            frame = frames[layer.get("data", spec.get("data"))["name"]]
            found += vega_traces(layer["description"], frame)
    return out


#: the column each Vega-Lite layer role plots, as a Plotly trace's ``y``
VEGA_Y = {
    "candles": "close",
    "path": "price",
    "q50": "q50",
    "realised": "close",
    "what-if path": "price",
    "what-if q05": "price",
    "what-if q50": "price",
    "what-if q95": "price",
    "histogram": "density",
    "density": "density",
    "what-if density": "density",
    "p_above": "p_above",
    "what-if p_above": "p_above",
}


def vega_traces(description: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A fan's layer (``"<model>|<role>"``) is one model's; another chart's layer holds every
    model, told apart by ``series`` (``"gbm histogram"``, ``"what-if gbm density"``, ``"gbm"``)."""
    if "|" in description:
        model, role = description.split("|")
        groups = [(model, role, frame)]
    elif "series" not in frame:  # a reference line (P = 0.5)
        return []
    else:
        groups = []
        for series, rows in frame.groupby("series", sort=False):
            words = str(series).split(" ")
            what_if = words[0] == "what-if"
            model = words[1] if what_if else words[0]
            role = " ".join(words[2 if what_if else 1 :]) or description
            groups.append((model, f"what-if {role}" if what_if else role, rows))
    out = []
    for model, role, rows in groups:
        if role.count("-q") == 1 and role.startswith("q"):  # a band: its low and high edges
            out += [
                {"meta": {"model": model, "role": edge}, "y": list(rows.sort_values("time")[edge])}
                for edge in role.split("-")
            ]
            continue
        if role not in VEGA_Y:
            continue
        paths = rows.groupby("path", sort=True) if role.endswith("path") else [(None, rows)]
        for _, one in paths:
            one = one.sort_values("time") if "time" in one else one
            trace = {"meta": {"model": model, "role": role}, "y": list(one[VEGA_Y[role]])}
            out.append({**trace, "close": trace["y"]} if role == "candles" else trace)
    return out


def traces(
    spec: dict[str, Any], model: str | None = None, role: str | None = None
) -> list[dict[str, Any]]:
    return [
        t
        for t in spec["data"]
        if (model is None or t.get("meta", {}).get("model") == model)
        and (role is None or t.get("meta", {}).get("role") == role)
    ]


def panel(at: AppTest, name: str) -> AppTest:
    """Choose the panel shown under the fan."""
    (control,) = [b for b in at.button_group if b.label == "below the fan"]
    return control.set_value(name).run()


def widget(at: AppTest, kind: str, label: str) -> Any:
    found = [w for w in getattr(at, kind) if w.label.startswith(label)]
    assert len(found) == 1, f"{kind} {label!r}: {[w.label for w in getattr(at, kind)]}"
    return found[0]


def ok(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def open_symbol(app: AppTest, symbol: str) -> AppTest:
    at = ok(app.run())
    return ok(widget(at, "selectbox", "symbol").select(symbol).run())


def test_first_chart_is_the_newest_run_with_the_stored_quantiles(
    app: AppTest, session: Any, symbols: dict[str, str], data: dict[str, Any]
) -> None:
    started = time.perf_counter()
    at = ok(app.run())
    first_chart = time.perf_counter() - started
    print(f"\ntime to first chart (AppTest, cold cache, real Cassandra): {first_chart:.2f} s")
    assert at.title[0].value == "GBM forecast explorer"
    assert {symbols["good"], symbols["thin"], symbols["live"]} <= set(
        widget(at, "selectbox", "symbol").options
    )
    at = ok(widget(at, "selectbox", "symbol").select(symbols["good"]).run())
    run_box = widget(at, "selectbox", "forecast run")
    assert len(run_box.options) == 2
    # labels start with the issue time; the newest is first and chosen
    assert run_box.index == 0 and run_box.options[0] > run_box.options[1]
    assert run_box.value.issued_at.strftime("%Y-%m-%d %H:%M:%S") in run_box.options[0]
    assert widget(at, "selectbox", "model").value == "all, side by side"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["as of (UTC)"].endswith(f"{AS_OF_NEW:%H:%M:%S}")
    assert metrics["horizon"] == f"{N_STEPS} x {STEP_S} s"
    assert any(
        f", seed {SEED}, forecasting from {AS_OF_NEW:%Y-%m-%d %H:%M:%S} UTC." in c.value
        for c in at.caption
    )

    fan = figures(at)["fan"]
    want = stored(session, symbols["good"], AS_OF_NEW)
    for model in MODELS:
        rows = want[want["model"] == model].sort_values("step")
        last = float(rows["last_price"].iloc[0])
        for q in ("q05", "q25", "q50", "q75", "q95"):
            (trace,) = traces(fan, model, q)
            assert decode(trace["y"]) == pytest.approx([last, *rows[q]], rel=1e-12)
        (realised,) = traces(fan, model, "realised")
        # every 5-s close in the 60-s horizon (bar ends after as_of, up to the last target)
        i = data["starts"].index(AS_OF_NEW)
        assert decode(realised["y"]) == pytest.approx(list(data["closes"][i : i + N_STEPS]))
        (candles,) = traces(fan, model, "candles")
        assert len(decode(candles["close"])) == 60 * 60 // 5 + N_STEPS
        assert len(traces(fan, model, "path")) == 5  # GBM_SAMPLE_PATHS, under the slider's 10
    assert not traces(fan, role="what-if q50")
    assert any("the horizon has passed, so it no longer refreshes" in c.value for c in at.caption)


def test_the_fan_is_sent_before_any_other_chart_or_table(
    app: AppTest, symbols: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fan is what a visitor waits for, and the browser loads the charting code only when a
    chart arrives: the run's parameter table, drawn above the fan, is sent after it."""
    sent: list[str] = []

    def recording(name: str, what: Any, owner: Any = st) -> Any:
        original = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            sent.append(what(args, kwargs))
            return original(*args, **kwargs)

        return call

    # the fans are drawn into columns: the column's (a DeltaGenerator's) method draws them
    charts = recording("altair_chart", lambda a, k: k["key"], DeltaGenerator)
    monkeypatch.setattr(DeltaGenerator, "altair_chart", charts)
    monkeypatch.setattr(
        st, "dataframe", recording("dataframe", lambda a, k: ",".join(map(str, a[0].columns)))
    )
    at = ok(app.run())
    sent.clear()
    at = ok(widget(at, "selectbox", "symbol").select(symbols["good"]).run())
    parameters = next(i for i, s in enumerate(sent) if "sigma (annualised)" in s)
    assert sent[0].startswith("fan-") and parameters > 0
    assert at.dataframe[0].value.columns[1] == "sigma (annualised)"  # still drawn above the fan


def test_every_control_changes_what_the_charts_show(
    app: AppTest, session: Any, symbols: dict[str, str], data: dict[str, Any]
) -> None:
    at = open_symbol(app, symbols["good"])
    at = ok(widget(at, "selectbox", "model").select("gbm").run())
    fan = figures(at)["fan"]
    assert {t["meta"]["model"] for t in fan["data"]} == {"gbm"}

    at = ok(widget(at, "radio", "candles").set_value("1 min").run())
    candles = traces(figures(at)["fan"], "gbm", "candles")[0]
    assert len(decode(candles["close"])) == 60 + 1  # 1-m bars starting in [as_of - 1 h, end]
    at = ok(widget(at, "select_slider", "history").set_value("15 min").run())
    assert len(decode(traces(figures(at)["fan"], "gbm", "candles")[0]["close"])) == 15 + 1

    at = ok(widget(at, "slider", "sample paths").set_value(0).run())
    assert not traces(figures(at)["fan"], "gbm", "path")
    at = ok(widget(at, "slider", "sample paths").set_value(3).run())
    paths = traces(figures(at)["fan"], "gbm", "path")
    rows = session.execute(
        "SELECT path, model, as_of, path_prices FROM gbm_paths WHERE symbol = %s AND day = %s",
        (symbols["good"], NOW.date()),
    )
    stored_paths = {
        r.path: list(r.path_prices)
        for r in rows
        if r.model == "gbm" and r.as_of.replace(tzinfo=UTC) == AS_OF_NEW
    }
    assert [decode(t["y"])[1:] for t in paths] == [stored_paths[p] for p in range(3)]

    run_box = widget(at, "selectbox", "forecast run")
    at = ok(run_box.select_index(1).run())
    want = stored(session, symbols["good"], AS_OF_OLD)
    gbm = want[want["model"] == "gbm"].sort_values("step")
    (q50,) = traces(figures(at)["fan"], "gbm", "q50")
    assert decode(q50["y"])[1:] == pytest.approx(list(gbm["q50"]), rel=1e-12)
    assert {m.label: m.value for m in at.metric}["as of (UTC)"].endswith(f"{AS_OF_OLD:%H:%M:%S}")

    assert not any(h.value.startswith("Backtest") for h in at.subheader)  # not asked for
    at = ok(panel(at, "backtest"))
    assert f"Backtest ({symbols['good']})" in [h.value for h in at.subheader]
    at = ok(widget(at, "radio", "backtest of").set_value("all symbols, pooled").run())
    assert "Backtest (all symbols, pooled)" in [h.value for h in at.subheader]
    pooled = newest_backtest(session, "*")
    (cover,) = [
        t for t in traces(figures(at)["coverage"], "gbm", "coverage") if t["meta"]["band"] == "90%"
    ]
    assert decode(cover["y"]) == pytest.approx(
        list(pooled[pooled["model"] == "gbm"].sort_values("step")["cover90"])
    )

    at = ok(widget(at, "number_input", "days to look back").set_value(1).run())
    assert widget(at, "selectbox", "symbol").value == symbols["good"]


def test_what_if_reuses_the_job_simulator(
    app: AppTest, session: Any, symbols: dict[str, str], data: dict[str, Any]
) -> None:
    at = open_symbol(app, symbols["good"])
    at = ok(widget(at, "toggle", "overlay what-if").set_value(True).run())
    want = stored(session, symbols["good"], AS_OF_NEW)

    def what_if(at: AppTest, model: str, role: str = "what-if q50") -> list[float]:
        return decode(traces(figures(at)["fan"], model, role)[0]["y"])

    # Unchanged parameters and the stored seed reproduce the stored run exactly.
    for model in ("gbm", "ewma_t"):
        rows = want[want["model"] == model].sort_values("step")
        assert what_if(at, model)[1:] == pytest.approx(list(rows["q50"]), rel=1e-12)
        assert what_if(at, model, "what-if q95")[1:] == pytest.approx(list(rows["q95"]), rel=1e-12)
    base = what_if(at, "gbm", "what-if q95")
    base_paths = [decode(t["y"]) for t in traces(figures(at)["fan"], "gbm", "what-if path")]
    assert len(base_paths) == 10

    at = ok(widget(at, "slider", "sigma multiplier").set_value(2.0).run())
    wide = what_if(at, "gbm", "what-if q95")
    last = base[0]
    assert wide[-1] - last == pytest.approx(2 * (base[-1] - last), rel=0.05)
    terminal = figures(at)["terminal"]
    assert traces(terminal, "gbm", "what-if density")
    at = ok(widget(at, "slider", "sigma multiplier").set_value(1.0).run())
    assert what_if(at, "gbm", "what-if q95") == base
    assert [decode(t["y"]) for t in traces(figures(at)["fan"], "gbm", "what-if path")] == base_paths

    at = ok(widget(at, "text_input", "seed").input(str(SEED + 1)).run())
    assert what_if(at, "gbm", "what-if q95") != base
    at = widget(at, "text_input", "seed").input("seven").run()
    assert [e.value for e in at.error] == [
        "seed 'seven' is not a whole number >= 0; using the run's seed"
    ]
    assert what_if(at, "gbm", "what-if q95") == base
    at = ok(widget(at, "text_input", "seed").input(str(SEED)).run())
    assert what_if(at, "gbm", "what-if q95") == base
    at = ok(widget(at, "slider", "drift").set_value(20.0).run())
    # Same draws, so every quantile moves by exactly exp(mu t): the drift is all that changed.
    mu = 0.20 / 86_400
    growth = [math.exp(mu * STEP_S * k) for k in range(N_STEPS + 1)]
    assert what_if(at, "gbm", "what-if q95") == pytest.approx(
        [b * g for b, g in zip(base, growth, strict=True)], rel=1e-9
    )
    at = ok(widget(at, "slider", "horizon").set_value(24).run())
    assert len(what_if(at, "gbm")) == 25
    assert len(decode(traces(figures(at)["p_above"], "gbm", "what-if p_above")[0]["y"])) == 24
    at = ok(widget(at, "select_slider", "paths").set_value(500).run())
    assert len(what_if(at, "gbm")) == 25
    at = ok(widget(at, "slider", "sample paths").set_value(4).run())
    assert len(traces(figures(at)["fan"], "gbm", "what-if path")) == 4


def test_terminal_p_above_coverage_and_skill_show_the_stored_numbers(
    app: AppTest, session: Any, symbols: dict[str, str], data: dict[str, Any]
) -> None:
    at = open_symbol(app, symbols["good"])
    charts = figures(at)
    # one panel under the fan at a time, the distribution first; no Plotly chart on the page
    assert set(charts) == {"fan", "terminal", "p_above"} and not at.get("plotly_chart")
    want = stored(session, symbols["good"], AS_OF_NEW)
    for model in MODELS:
        row = run_row(session, symbols["good"], AS_OF_NEW, model)
        (hist,) = traces(charts["terminal"], model, "histogram")
        widths = np.diff(row.hist_edges)
        shares = np.asarray(decode(hist["y"])) * widths
        assert shares * N_PATHS == pytest.approx(list(row.hist_counts))
        assert traces(charts["terminal"], model, "density")
        rows = want[want["model"] == model].sort_values("step")
        (p_above,) = traces(charts["p_above"], model, "p_above")
        assert decode(p_above["y"]) == pytest.approx(list(rows["p_above"]))

    at = ok(panel(at, "backtest"))
    charts = figures(at)
    assert set(charts) == {"fan", "coverage", "skill"}
    backtest = backtests(session, symbols["good"])
    newest = newest_backtest(session, symbols["good"])
    for model in MODELS:
        rows = newest[newest["model"] == model].sort_values("step")
        for band in ("50", "90"):
            meta = f"{band}%"
            (cover,) = [
                t
                for t in traces(charts["coverage"], model, "coverage")
                if t["meta"]["band"] == meta
            ]
            assert decode(cover["y"]) == pytest.approx(list(rows[f"cover{band}"]))
            (lo,) = [
                t for t in traces(charts["coverage"], model, "band lo") if t["meta"]["band"] == meta
            ]
            assert decode(lo["y"]) == pytest.approx(list(rows[f"cover{band}_lo"]))
    skill = charts["skill"]
    assert backtest["evaluated_at"].nunique() == 2
    for model in MODELS:
        (line,) = traces(skill, model, "skill")
        assert len(decode(line["y"])) == 2
    assert decode(traces(skill, "hist_sim", "skill")[0]["y"]) == pytest.approx([0.0, 0.0])


def test_a_rerun_draws_bars_that_arrived_since(
    app: AppTest, session: Any, symbols: dict[str, str], data: dict[str, Any]
) -> None:
    at = open_symbol(app, symbols["live"])
    assert not traces(figures(at)["fan"], role="realised")
    assert any("Nothing realised" in c.value for c in at.caption)
    n = data["n_live"]
    insert_5s(session, symbols["live"], data["starts"][n : n + 6], data["closes"][n : n + 6] * 2)
    time.sleep(1.2)  # the bars' cache lives for STREAMLIT_REFRESH (1 s here)
    at = ok(at.run())  # the fragment's timer, which AppTest never fires, reruns it the same way
    realised = traces(figures(at)["fan"], "gbm", "realised")[0]
    assert decode(realised["y"]) == pytest.approx(list(data["closes"][n : n + 6] * 2))


def test_a_symbol_without_forecasts_says_why(app: AppTest, symbols: dict[str, str]) -> None:
    at = open_symbol(app, symbols["thin"])
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 3 and all("too_few_bars" in w for w in warnings)
    assert not at.get("plotly_chart") and not at.get("vega_lite_chart")


def test_an_empty_keyspace_says_there_is_no_data_yet(
    reader_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"test_{uuid.uuid4().hex[:10]}"
    infra_env = os.environ.copy()  # before the app's keyspace is set: infra refuses to drop that
    run_infra("migrate", "--keyspace", name)
    try:
        monkeypatch.setenv("CASSANDRA_KEYSPACE", name)
        at = ok(AppTest.from_file(str(APP), default_timeout=60).run())
        assert [i.value for i in at.info][0].startswith(f"No forecasts in keyspace '{name}'")
        assert (
            not at.get("plotly_chart")
            and not at.get("vega_lite_chart")
            and not at.get("vega_lite_chart")
        )
    finally:
        run_infra("drop-keyspace", name, env=infra_env)


def test_cassandra_down_is_one_line_not_a_trace(
    reader_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("CASSANDRA_PORT", str(closed_port))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"Cassandra at 127.0.0.1:{closed_port} is not answering")
    assert "make up" in error and "\n" not in error
    assert not at.get("plotly_chart") and not at.get("vega_lite_chart")


def test_bad_setting_is_one_line(reader_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLIT_CACHE_TTL", "0")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Configuration: STREAMLIT_CACHE_TTL='0' must be at least 0.001 s"
    ]


def test_make_up_serves_the_app_with_the_read_only_role(stack: Any) -> None:
    was_running = "streamlit" in infra_cli("status").stdout and _healthy(infra_cli("status"))
    run_infra("up", "streamlit")
    try:
        status = infra_cli("status")
        assert _healthy(status), status.stdout
        port = int(os.environ.get("STREAMLIT_PORT") or 8501)
        assert urllib_open(f"http://127.0.0.1:{port}/_stcore/health") == b"ok"
        assert b'<div id="root"></div>' in urllib_open(f"http://127.0.0.1:{port}/")
        config = InfraConfig.from_env()
        # The running process as status reports it: supervisord restarts Streamlit under a new
        # pid without rewriting the pid file of the first start.
        pid = _status_pid(status)
        environ = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
            if "=" in item
        )
        _, password = CassandraService(config).reader_credentials()
        assert environ["CASSANDRA_USERNAME"] == READER_ROLE
        assert environ["CASSANDRA_PASSWORD"] == password
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert password not in cmdline and "127.0.0.1" in cmdline
        log = config.state_dir / "streamlit" / "logs" / "stdout.log"
        assert log.exists() and password not in log.read_text()
    finally:
        if not was_running and os.environ.get("KEEP_STACK") != "1":
            run_infra("down", "streamlit")


def _status_pid(status: subprocess.CompletedProcess[str]) -> int:
    line = next(line for line in status.stdout.splitlines() if line.split()[:1] == ["streamlit"])
    return int(line.split()[1])


def _healthy(status: subprocess.CompletedProcess[str]) -> bool:
    return any(
        line.split()[:1] == ["streamlit"] and line.endswith("healthy")
        for line in status.stdout.splitlines()
    )


def urllib_open(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()
