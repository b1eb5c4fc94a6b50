"""``/forecast/{symbol}?model=``: one model's forecast, with its MLflow version and run id."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi.testclient import TestClient

from gbm_analysis.api import create_app

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class Store:
    """A run with the GBM and a registered mlp (version 4 of MLflow run abc)."""

    def latest_runs(self, symbol: str, *, days_back: int, now: datetime) -> list[dict[str, Any]]:
        base = {
            "symbol": symbol,
            "day": date(2026, 3, 2),
            "issued_at": NOW,
            "run_id": "r1",
            "status": "ok",
            "sigma": 1e-4,
        }
        return [
            {**base, "model": "gbm", "model_version": None, "model_run_id": None},
            {**base, "model": "mlp", "model_version": 4, "model_run_id": "abc"},
        ]

    def forecast_steps(self, *args: Any) -> list[dict[str, Any]]:
        return [{"model": m, "step": 1, "q50": 1.0} for m in ("gbm", "mlp")]


def test_model_query_selects_one_model_with_its_version() -> None:
    client = TestClient(create_app(Store(), clock=lambda: NOW))  # type: ignore[arg-type]
    both = client.get("/forecast/AAPL").json()
    assert [m["model"] for m in both["models"]] == ["gbm", "mlp"]
    one = client.get("/forecast/AAPL", params={"model": "mlp"})
    assert one.status_code == 200
    (mlp,) = one.json()["models"]
    assert (mlp["model"], mlp["model_version"], mlp["model_run_id"]) == ("mlp", 4, "abc")
    missing = client.get("/forecast/AAPL", params={"model": "xgb"})
    assert missing.status_code == 404
    assert "xgb" in missing.json()["detail"] and "gbm, mlp" in missing.json()["detail"]
    assert client.get("/forecast/AAPL", params={"model": "x y"}).status_code == 422
