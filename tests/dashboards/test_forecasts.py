"""The pure shaping functions, the what-if simulation and the figures behind the explorer, and
the reader's use of prepared statements (with a recording fake session)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cassandra import InvalidRequest
from cassandra.cluster import NoHostAvailable

import dashboards.forecasts
import dashboards.settings
from dashboards.charts import coverage_figure, skill_figure
from dashboards.forecasts import (
    QUERIES,
    ForecastReader,
    RunKey,
    band_coverage,
    coverage_frame,
    describe_cassandra_error,
    fan_frame,
    histogram_frame,
    paths_frame,
    realised_closes,
    run_keys,
    skill_history,
    terminal_density,
)
from dashboards.settings import ExplorerSettings
from dashboards.what_if import StoredModel, WhatIf, what_if_forecast
from gbm_analysis.backtest import binomial_band
from gbm_analysis.config import GbmSettings
from gbm_analysis.forecast import forecast_symbol
from schemas.settings import SettingsError

AS_OF = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def forecasts(model: str, last: float, n_steps: int = 3, width: float = 1.0) -> pd.DataFrame:
    rows = []
    for step in range(1, n_steps + 1):
        mid = last + step
        rows.append(
            {
                "model": model,
                "step": step,
                "target_ts": AS_OF + timedelta(seconds=5 * step),
                "as_of": AS_OF,
                "last_price": last,
                "mean": mid,
                "q05": mid - 2 * width,
                "q25": mid - width,
                "q50": mid,
                "q75": mid + width,
                "q95": mid + 2 * width,
                "p_above": 0.5 + step / 10,
            }
        )
    return pd.DataFrame(rows)


def test_fan_opens_at_the_last_price_for_each_model() -> None:
    fan = fan_frame(pd.concat([forecasts("gbm", 100.0), forecasts("hist_sim", 100.0)]))
    assert list(fan["model"]) == ["gbm"] * 4 + ["hist_sim"] * 4
    anchors = fan[fan["step"] == 0]
    assert (anchors[["q05", "q25", "q50", "q75", "q95", "mean"]] == 100.0).all().all()
    assert list(anchors["time"]) == [pd.Timestamp(AS_OF)] * 2
    assert anchors["p_above"].isna().all()
    steps = fan[fan["model"] == "gbm"]
    assert list(steps["step"]) == [0, 1, 2, 3]
    assert list(steps["q50"]) == [100.0, 101.0, 102.0, 103.0]
    assert str(fan["time"].dt.tz) == "UTC"


def test_empty_forecasts_give_an_empty_fan() -> None:
    assert fan_frame(pd.DataFrame(columns=forecasts("gbm", 1.0).columns)).empty


def test_paths_start_at_the_last_price_step_by_step_seconds_and_obey_the_limit() -> None:
    raw = pd.DataFrame(
        [
            {
                "model": "gbm",
                "path": p,
                "as_of": AS_OF.replace(tzinfo=None),
                "step_seconds": 60,
                "prices": [101.0 + p, 99.5],
                "last_price": 100.0,
            }
            for p in range(3)
        ]
    )
    frame = paths_frame(raw)
    assert len(frame) == 9
    first = frame[frame["path"] == 0]
    assert list(first["price"]) == [100.0, 101.0, 99.5]
    assert list(first["time"]) == [pd.Timestamp(AS_OF) + timedelta(seconds=s) for s in (0, 60, 120)]
    assert sorted(paths_frame(raw, limit=2)["path"].unique()) == [0, 1]


def test_histogram_shares_sum_to_one_densities_integrate_to_one_and_bad_edges_are_named() -> None:
    hist = histogram_frame(list(np.linspace(90, 110, 6)), [1, 4, 10, 4, 1])
    assert hist["share"].sum() == pytest.approx(1.0)
    assert (hist["density"] * (hist["hi"] - hist["lo"])).sum() == pytest.approx(1.0)
    assert list(hist["lo"])[0] == 90.0 and list(hist["hi"])[-1] == 110.0
    with pytest.raises(ValueError, match="hist_edges has 3 values for 3 counts"):
        histogram_frame([1.0, 2.0, 3.0], [1, 2, 3])


def test_terminal_density_of_normal_percentiles_matches_the_normal_pdf() -> None:
    from scipy import stats

    levels = np.arange(1, 100) / 100
    density = terminal_density(stats.norm.ppf(levels, loc=100, scale=2))
    pdf = stats.norm.pdf(density["price"], loc=100, scale=2)
    # a finite difference over 10 percentiles: close in the body, coarser in the tails
    body = density["level"].between(0.2, 0.8).to_numpy()
    assert density["density"].to_numpy()[body] == pytest.approx(pdf[body], rel=0.03)
    assert density["density"].to_numpy() == pytest.approx(pdf, rel=0.35)
    with pytest.raises(ValueError, match="percentiles has 3 values"):
        terminal_density([1.0, 2.0, 3.0])


def test_realised_closes_are_the_bars_ending_after_as_of_up_to_the_horizon() -> None:
    starts = [AS_OF + timedelta(seconds=5 * i) for i in range(-2, 4)]
    bars = pd.DataFrame(
        {
            "window_start": starts,
            "window_end": [s + timedelta(seconds=5) for s in starts],
            "close": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    realised = realised_closes(bars, AS_OF, AS_OF + timedelta(seconds=15))
    assert list(realised["close"]) == [3.0, 4.0, 5.0]
    assert realised["time"].iloc[0] == pd.Timestamp(AS_OF + timedelta(seconds=5))
    assert realised_closes(bars.iloc[:0], AS_OF, AS_OF).empty


def test_band_coverage_counts_realised_steps_inside_each_band() -> None:
    fan = fan_frame(forecasts("gbm", 100.0, n_steps=4, width=1.0))
    # Medians are 101..104; realised closes at each target time: inside 50%, inside 90% only,
    # outside both; the fourth step has not been realised yet.
    realised = pd.DataFrame(
        {
            "time": [AS_OF + timedelta(seconds=5 * s) for s in (1, 2, 3)],
            "close": [101.5, 103.8, 110.0],
        }
    )
    coverage = band_coverage(fan, realised)
    assert coverage.to_dict("records") == [
        {
            "model": "gbm",
            "steps": 3,
            "inside50": pytest.approx(1 / 3),
            "inside90": pytest.approx(2 / 3),
        },
    ]
    assert band_coverage(fan, pd.DataFrame(columns=["time", "close"])).empty


def backtest_rows(evaluated_at: datetime, skills: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for model, skill in skills.items():
        for step, (n, c50, c90, base) in enumerate(
            ((40, 0.5, 0.9, 10.0), (10, 0.2, 0.6, 30.0)), start=1
        ):
            rows.append(
                {
                    "evaluated_at": evaluated_at,
                    "model": model,
                    "step": step,
                    "horizon_s": 60 * step,
                    "n": n,
                    "cover50": c50,
                    "cover90": c90,
                    "n_paired": n,
                    "crps_baseline_bps": base,
                    "crps_skill": skill * step,
                }
            )
    return rows


def test_coverage_has_the_binomial_band_of_each_n_and_flags_misses() -> None:
    frame = coverage_frame(pd.DataFrame(backtest_rows(AS_OF, {"gbm": 0.1})))
    assert len(frame) == 4
    row = frame[(frame["band"] == "90%") & (frame["step"] == 1)].iloc[0]
    band = binomial_band(40, 0.9)
    assert (row["lo"], row["hi"], row["nominal"]) == (band.low, band.high, 0.9)
    assert bool(row["inside"])
    miss = frame[(frame["band"] == "90%") & (frame["step"] == 2)].iloc[0]
    assert miss["coverage"] == 0.6 and not miss["inside"]  # 6 of 10 is far below 90%


def test_skill_history_pools_steps_by_paired_count_and_baseline_crps() -> None:
    later = AS_OF + timedelta(hours=1)
    frame = pd.DataFrame(
        backtest_rows(AS_OF, {"gbm": 0.1, "hist_sim": 0.0})
        + backtest_rows(later, {"gbm": -0.05, "hist_sim": 0.0})
    )
    history = skill_history(frame)
    assert list(history["model"]) == ["gbm", "hist_sim"] * 2
    # model CRPS = (1 - s) * base, pooled with weights n: 1 - (40*0.9*10 + 10*0.8*30) / (400+300)
    gbm = history[history["model"] == "gbm"]["skill"].tolist()
    assert gbm[0] == pytest.approx(1 - (40 * 0.9 * 10 + 10 * 0.8 * 30) / (40 * 10 + 10 * 30))
    assert gbm[1] < 0
    assert history[history["model"] == "hist_sim"]["skill"].tolist() == [0.0, 0.0]
    assert list(history["n_paired"]) == [50] * 4
    assert skill_history(pd.DataFrame()).empty


def test_run_keys_are_distinct_and_newest_first() -> None:
    runs = pd.DataFrame(
        [
            {"issued_at": AS_OF, "run_id": "a", "day": AS_OF.date(), "model": m}
            for m in ("gbm", "hist_sim")
        ]
        + [
            {
                "issued_at": AS_OF + timedelta(hours=1),
                "run_id": "b",
                "day": AS_OF.date(),
                "model": "gbm",
            }
        ]
    )
    assert [k.run_id for k in run_keys(runs)] == ["b", "a"]
    assert run_keys(pd.DataFrame()) == []


def bars(n: int = 600, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    starts = 1_700_000_000.0 + 5.0 * np.arange(n)
    closes = 100 * np.exp(np.cumsum(0.0005 * rng.standard_normal(n)))
    return starts, closes


@pytest.mark.parametrize("model", ["gbm", "ewma_t"])
def test_unchanged_what_if_reproduces_the_job_forecast(model: str) -> None:
    starts, closes = bars()
    settings = GbmSettings(
        step_seconds=10,
        n_steps=6,
        n_paths=1500,
        n_sample_paths=5,
        models=("gbm", "ewma_t", "hist_sim"),
    )
    fc = next(
        f for f in forecast_symbol("X:Y", starts, closes, settings, run_seed=42) if f.model == model
    )
    base = StoredModel(
        symbol="X:Y",
        model=model,
        as_of=AS_OF,
        last_price=fc.last_price,
        mu=fc.mu,
        sigma=fc.sigma,
        dof=None if math.isnan(fc.dof) else fc.dof,
        step_seconds=10,
        n_steps=6,
        n_paths=1500,
        seed=42,
    )
    result = what_if_forecast(base, WhatIf.unchanged(base, n_sample=5))
    assert result.fan["q50"].tolist()[1:] == fc.summary.quantile(0.5).tolist()
    assert result.fan["q05"].tolist()[1:] == fc.summary.quantile(0.05).tolist()
    assert result.fan["p_above"].tolist()[1:] == fc.summary.p_above.tolist()
    sample = result.paths.pivot(index="path", columns="step", values="price").to_numpy()
    assert sample[:, 1:].tolist() == fc.summary.sample.tolist()
    assert result.histogram["paths"].tolist() == fc.summary.hist_counts.tolist()


def test_what_if_is_seeded_and_sigma_widens_the_fan() -> None:
    base = StoredModel(
        symbol="X:Y",
        model="gbm",
        as_of=AS_OF,
        last_price=100.0,
        mu=0.0,
        sigma=1e-4,
        dof=None,
        step_seconds=60,
        n_steps=30,
        n_paths=2000,
        seed=9,
    )
    one = what_if_forecast(base, WhatIf.unchanged(base))
    again = what_if_forecast(base, WhatIf.unchanged(base))
    pd.testing.assert_frame_equal(one.fan, again.fan)
    pd.testing.assert_frame_equal(one.paths, again.paths)
    wide = what_if_forecast(
        base, WhatIf(sigma_multiplier=2.0, drift_pct_per_day=0.0, n_steps=30, n_paths=2000, seed=9)
    )
    spread = (one.fan["q95"] - one.fan["q05"]).iloc[-1]
    assert (wide.fan["q95"] - wide.fan["q05"]).iloc[-1] == pytest.approx(2 * spread, rel=0.02)
    other = what_if_forecast(
        base, WhatIf(sigma_multiplier=1.0, drift_pct_per_day=0.0, n_steps=10, n_paths=500, seed=10)
    )
    assert len(other.fan) == 11 and other.fan["q50"].iloc[-1] != one.fan["q50"].iloc[10]
    assert list(one.fan["time"])[:2] == [
        pd.Timestamp(AS_OF),
        pd.Timestamp(AS_OF) + timedelta(seconds=60),
    ]
    with pytest.raises(ValueError, match="sigma multiplier -1"):
        WhatIf(sigma_multiplier=-1, drift_pct_per_day=0, n_steps=1, n_paths=1, seed=0)


def test_coverage_and_skill_figures_carry_the_numbers() -> None:
    frame = pd.DataFrame(backtest_rows(AS_OF, {"gbm": 0.1, "hist_sim": 0.0}))
    coverage = coverage_figure(coverage_frame(frame))
    cover = next(
        t for t in coverage.data if t.meta == {"model": "gbm", "band": "90%", "role": "coverage"}
    )
    assert list(cover.y) == [0.9, 0.6] and list(cover.x) == [60.0, 120.0]
    skill = skill_figure(skill_history(frame), "hist_sim")
    assert [t.meta["model"] for t in skill.data] == ["gbm", "hist_sim"]


def test_cassandra_errors_are_one_line() -> None:
    down = NoHostAvailable(
        "Unable to connect to any servers",
        {"127.0.0.1:9042": ConnectionRefusedError(111, "refused")},
    )
    text = describe_cassandra_error(down, ["127.0.0.1"], 9042)
    assert text.startswith(
        "Cassandra at 127.0.0.1:9042 is not answering (NoHostAvailable: "
        "Unable to connect to any servers: 127.0.0.1:9042: [Errno 111]"
    )
    assert "\n" not in text
    missing = describe_cassandra_error(
        InvalidRequest("Keyspace 'nope' does not exist"), ["127.0.0.1"], 9042
    )
    assert "refused the query" in missing and "make up" in missing


class RecordingSession:
    """Records what the reader prepares and binds; answers with no rows."""

    def __init__(self) -> None:
        self.prepared: list[str] = []
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    def prepare(self, cql: str) -> str:
        self.prepared.append(cql)
        return cql

    def execute(self, statement: str, values: tuple[Any, ...]) -> list[Any]:
        assert statement in self.prepared, "only prepared statements are executed"
        self.executed.append((statement, values))
        return []


def test_reader_binds_every_value_and_prepares_each_statement_once() -> None:
    session = RecordingSession()
    reader = ForecastReader(session, "market")
    run = RunKey(AS_OF, "run'; DROP TABLE x; --", AS_OF.date())
    for _ in range(2):
        reader.runs("A'B", [date(2026, 1, 5)])
        reader.forecasts("A'B", run)
        reader.bars("A'B", "1 min", AS_OF - timedelta(days=1), AS_OF)
    assert len(session.prepared) == len(set(session.prepared)) == 3
    assert all("'" not in cql and "market." in cql for cql in session.prepared)
    assert ("A'B", run.day, run.issued_at, run.run_id) in [v for _, v in session.executed]
    # a range over midnight reads both day partitions
    days = [v[1] for s, v in session.executed if "trades_agg_1m" in s]
    assert days[:2] == [date(2026, 1, 4), date(2026, 1, 5)]
    assert set(QUERIES) >= {"symbols", "runs", "forecasts", "paths", "backtest"}
    with pytest.raises(ValueError, match="keyspace"):
        ForecastReader(session, "market; DROP")


def test_settings_are_read_and_bad_values_are_named() -> None:
    settings = ExplorerSettings.from_env({"STREAMLIT_REFRESH": "0", "STREAMLIT_CACHE_TTL": "2m"})
    assert (settings.refresh_seconds, settings.cache_ttl_seconds) == (0.0, 120.0)
    assert settings.bars_ttl_seconds == 120.0
    assert ExplorerSettings.from_env({}).bars_ttl_seconds == 10.0
    end = AS_OF + timedelta(hours=1)
    live = ExplorerSettings.from_env({"STREAMLIT_REFRESH": "5s"})
    assert live.refresh_for(end, AS_OF) == 5.0
    assert live.refresh_for(end, end + timedelta(seconds=59)) == 5.0  # late bars still come
    assert live.refresh_for(end, end + timedelta(seconds=61)) is None
    assert settings.refresh_for(end, AS_OF) is None  # STREAMLIT_REFRESH=0
    with pytest.raises(SettingsError, match="STREAMLIT_REFRESH='often': expected a duration"):
        ExplorerSettings.from_env({"STREAMLIT_REFRESH": "often"})
    with pytest.raises(SettingsError, match="STREAMLIT_CACHE_TTL='0' must be at least 0.001 s"):
        ExplorerSettings.from_env({"STREAMLIT_CACHE_TTL": "0"})


@pytest.mark.parametrize(
    ("symbol", "seconds_per_year", "label"),
    [
        ("AAPL", 252 * 6.5 * 3600, "252 d x 6.5 h"),
        ("BINANCE:BTCUSDT", 365 * 86_400, "365 d x 24 h"),
    ],
)
def test_parameter_table_annualises_sigma_by_the_markets_convention_and_names_it(
    symbol: str, seconds_per_year: float, label: str
) -> None:
    """A run stored before the convention has sigma_annualised over calendar seconds and no
    label; the table shows the market's figure from the per-second sigma either way."""
    runs = pd.DataFrame(
        {
            "model": ["gbm", "hist_sim"],
            "sigma": [1e-4, 2e-4],
            "sigma_annualised": [1e-4 * math.sqrt(365.25 * 86_400), np.nan],
            "dof": [np.nan, 5.0],
            "n_bars": [720, 720],
            "n_returns": [719, 719],
            "n_rejected": [0, 0],
        }
    )
    table = dashboards.forecasts.parameter_table(runs, symbol)
    assert list(table.columns) == [
        "model",
        "sigma (annualised)",
        "annualised over",
        "dof",
        "n_bars",
        "n_returns",
        "n_rejected",
    ]
    expected = np.array([1e-4, 2e-4]) * math.sqrt(seconds_per_year)
    assert np.allclose(table["sigma (annualised)"], expected)
    assert set(table["annualised over"]) == {label}


def test_reader_lists_only_runs_that_finished_writing() -> None:
    """A run writes its gbm_runs row last: a newer run killed mid-write (forecast rows, no run
    row) is not offered, and the complete run before it is the newest."""
    from collections import namedtuple

    Run = namedtuple("Run", "symbol day issued_at run_id model status as_of")
    Done = namedtuple("Done", "issued_at run_id")
    day = AS_OF.date()
    naive = AS_OF.replace(tzinfo=None)  # the driver returns naive UTC timestamps
    killed, complete = naive + timedelta(minutes=5), naive

    class Session(RecordingSession):
        def execute(self, statement: str, values: tuple[Any, ...]) -> list[Any]:
            super().execute(statement, values)
            if "gbm_forecast_runs" in statement:
                return [
                    Run("A", day, t, r, m, "ok", t)
                    for t, r in ((killed, "killed"), (complete, "done"))
                    for m in ("gbm", "hist_sim")
                ]
            if "gbm_runs" in statement:
                return [Done(complete, "done")]
            return []

    runs = ForecastReader(Session(), "market").runs("A", [day])
    assert set(runs["run_id"]) == {"done"} and len(runs) == 2
    assert [k.run_id for k in run_keys(runs)] == ["done"]
