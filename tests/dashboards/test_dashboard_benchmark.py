"""benchmarks/dashboards.py times the SQL Superset sends to Trino, not the text its
``?type=query`` answer shows (before Superset's own sqlglot pass), against the real stack."""

from __future__ import annotations

import re
import time

import pytest

from benchmarks.dashboards import SupersetApi, superset_chart_sql_as_executed
from infra.browser import DashboardUrls
from infra.config import InfraConfig
from infra.superset import SupersetClient, SupersetService
from infra.trino import run_query
from tests.conftest import Stack

pytestmark = pytest.mark.integration

LATEST_TRADES = "Crypto latest trades"
# A relative range resolves to other instants at every rendering.
INSTANT = re.compile(r"'\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?'")


@pytest.fixture(scope="module")
def superset(stack: Stack) -> SupersetService:
    service = SupersetService(InfraConfig.from_env())
    assert service.pid() is not None, "python -m infra up did not start superset"
    return service


def without_instants(sql: str) -> str:
    return INSTANT.sub("'<instant>'", sql.strip().rstrip(";"))


def benchmark_sql(superset: SupersetService, name: str) -> str:
    queries = dict(
        superset_chart_sql_as_executed(DashboardUrls.from_env(), superset.config.superset_venv)
    )
    return queries[name].strip().rstrip(";")


def test_the_benchmark_times_the_sql_superset_sends_to_trino(superset: SupersetService) -> None:
    sql = benchmark_sql(superset, LATEST_TRADES)
    charts = SupersetApi(DashboardUrls.from_env()).charts()
    chart_id = next(chart["id"] for chart in charts if chart["slice_name"] == LATEST_TRADES)
    user, password = superset.admin()
    client = SupersetClient(superset.config.superset_port, user, password, timeout=120)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 5))
    status, body = client.get(f"/api/v1/chart/{chart_id}/data/?force=true")
    assert status == 200, body
    sent = run_query(
        superset.config.trino_port,
        "SELECT query FROM system.runtime.queries WHERE \"user\" = 'superset' "
        f"AND created >= TIMESTAMP '{since} UTC'",
    ).rows
    assert without_instants(sql) in {without_instants(row[0]) for row in sent}


def test_the_latest_trades_time_range_the_benchmark_times_reaches_cassandra(
    superset: SupersetService,
) -> None:
    plan = "\n".join(
        row[0]
        for row in run_query(
            superset.config.trino_port, f"EXPLAIN {benchmark_sql(superset, LATEST_TRADES)}"
        ).rows
    )
    assert "trades" in plan, plan
    # A timestamp(6) bound makes Trino cast the timestamp(3) clustering column, so Cassandra
    # returns every trade of the day and Trino filters them.
    assert "CAST(trade_ts" not in plan, plan
