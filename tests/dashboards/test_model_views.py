"""The explorer's leaderboard and drift views: pure shaping, the figure, and the reader's
partition-key queries (with the recording fake session)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboards.charts import SKILL_FLOOR, leaderboard_figure, trace_roles
from dashboards.forecasts import (
    QUERIES,
    ForecastReader,
    drift_status,
    leaderboard_skill,
    leaderboard_table,
)
from tests.dashboards.test_forecasts import RecordingSession

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def _scores() -> pd.DataFrame:
    crps = {"gbm": 10.0, "hist_sim": 10.5, "mlp": 11.0, "prophet": 400.0}
    rows = []
    for model, c in crps.items():
        for h in range(1, 61):
            rows.append(
                {
                    "symbol": "S",
                    "model": model,
                    "horizon": h,
                    "evaluated_at": T0,
                    "model_version": 3 if model == "mlp" else None,
                    "n": 40,
                    "coverage_50": 0.5,
                    "coverage_90": 0.9 if model != "prophet" else 1.0,
                    "crps_bps": c * math.sqrt(h),
                    "rmse_ratio": 1.0 if model != "mlp" else 1.1,
                    "directional": 0.5,
                }
            )
    return pd.DataFrame(rows)


def test_leaderboard_ranks_models_by_crps_at_each_horizon_with_skill_vs_hist_sim() -> None:
    table = leaderboard_table(_scores(), steps=(1, 60))
    assert list(table["horizon (min)"]) == [1] * 4 + [60] * 4
    at1 = table[table["horizon (min)"] == 1]
    assert list(at1["model"]) == ["gbm", "hist_sim", "mlp", "prophet"]
    assert list(at1["rank"]) == [1, 2, 3, 4]
    assert list(at1["skill vs hist_sim"]) == pytest.approx(
        [1 - 10 / 10.5, 0.0, 1 - 11 / 10.5, 1 - 400 / 10.5]
    )
    assert list(at1["version"]) == ["-", "-", "v3", "-"]
    at60 = table[table["horizon (min)"] == 60]
    assert list(at60["CRPS (bps)"]) == pytest.approx(
        [c * math.sqrt(60) for c in (10, 10.5, 11, 400)]
    )
    assert list(at60["RMSE / random walk"]) == [1.0, 1.0, 1.1, 1.0]
    # no hist_sim: no skill, the ranking stands
    alone = leaderboard_table(_scores().query("model != 'hist_sim'"), steps=(5,))
    assert list(alone["model"]) == ["gbm", "mlp", "prophet"]
    assert alone["skill vs hist_sim"].isna().all()
    assert leaderboard_table(pd.DataFrame()).empty


def test_leaderboard_skill_per_model_and_horizon_and_its_figure() -> None:
    skill = leaderboard_skill(_scores())
    assert len(skill) == 4 * 60
    hist = skill[skill["model"] == "hist_sim"]
    assert list(hist["skill"]) == pytest.approx([0.0] * 60)
    mlp = skill[skill["model"] == "mlp"]
    assert list(mlp["horizon"]) == list(range(1, 61))
    assert list(mlp["skill"]) == pytest.approx([1 - 11 / 10.5] * 60)

    fig = leaderboard_figure(skill, "hist_sim")
    assert fig.layout.meta == {"chart": "leaderboard"}
    assert trace_roles(fig) == [(m, "skill") for m in ("gbm", "hist_sim", "mlp", "prophet")]
    # prophet's skill (-37) would flatten the others: the axis stops at the floor
    assert tuple(fig.layout.yaxis.range)[0] == SKILL_FLOOR
    calm = leaderboard_figure(skill[skill["model"] != "prophet"], "hist_sim")
    assert calm.layout.yaxis.range is None


def _drift(checked_at: datetime, psi: float, retrain: bool | None) -> list[dict[str, object]]:
    return [
        {
            "symbol": "S",
            "checked_at": checked_at,
            "model": model,
            "feature": feature,
            "model_version": 2,
            "psi": psi if feature == "abs_return" else 0.01,
            "ks_stat": 0.1,
            "ks_p": 1e-5 if feature == "abs_return" else 0.4,
            "threshold": 0.25,
            "drifted": feature == "abs_return",
            "n_reference": 5000,
            "n_recent": 360,
            "retrain": retrain,
        }
        for model in ("mlp", "xgb")
        for feature in ("return", "abs_return")
    ]


def test_drift_status_is_the_newest_check_and_says_whether_it_retrained() -> None:
    rows = _drift(T0, 0.4, True) + _drift(T0 - timedelta(hours=1), 0.1, None)
    table, summary = drift_status(pd.DataFrame(rows))
    assert list(table.columns) == [
        "model",
        "version",
        "feature",
        "PSI",
        "KS p",
        "threshold",
        "drifted",
        "retrain",
    ]
    assert len(table) == 4 and set(table["version"]) == {"v2"}
    assert summary["checked_at"] == T0
    assert (summary["max_psi"], summary["min_ks_p"]) == (0.4, 1e-5)
    assert summary["retrain"] and summary["drifted"]
    # a check stored before the retrain column: null reads as no retrain
    older = pd.DataFrame(_drift(T0 - timedelta(hours=1), 0.1, None))
    table, summary = drift_status(older)
    assert not table["retrain"].any() and not summary["retrain"] and summary["drifted"]
    never, nothing = drift_status(pd.DataFrame())
    assert never.empty and nothing == {}


def test_reader_reads_scores_and_drift_by_partition_key_with_bound_values() -> None:
    session = RecordingSession()
    reader = ForecastReader(session, "market")
    reader.scores("A'B")
    reader.drift("A'B", limit=50)
    reader.scores("C")
    assert len(session.prepared) == 2
    scores_cql = QUERIES["scores"].format(ks="market")
    drift_cql = QUERIES["drift"].format(ks="market")
    assert "WHERE source = ? AND symbol = ?" in scores_cql
    assert "WHERE symbol = ? LIMIT ?" in drift_cql
    assert [v for _, v in session.executed] == [
        ("walk_forward", "A'B"),
        ("A'B", 50),
        ("walk_forward", "C"),
    ]
