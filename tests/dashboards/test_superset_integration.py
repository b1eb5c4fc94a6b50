"""Superset against the real Trino and Cassandra, brought up by ``python -m infra up``: the bundle
imports idempotently, edits show up, every chart answers from the market data, and every chart's
SQL reads Cassandra by partition key."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from dashboards.superset import bundle
from infra.config import InfraConfig
from infra.superset import PROVISION_SCRIPT, SupersetClient, SupersetService, exclusive
from infra.trino import run_query
from tests.conftest import Stack, infra_cli

pytestmark = pytest.mark.integration

KINDS = (
    ("databases", "database"),
    ("datasets", "dataset"),
    ("charts", "chart"),
    ("dashboards", "dashboard"),
)
SCAN = re.compile(r"CassandraTableHandle\[relationHandle=(\w+):(\w+) (\d+) partitions \[([^\]]*)")


@pytest.fixture(scope="module")
def superset(stack: Stack) -> SupersetService:
    service = SupersetService(InfraConfig.from_env())
    assert service.pid() is not None, "python -m infra up did not start superset"
    return service


@pytest.fixture(scope="module")
def client(superset: SupersetService) -> SupersetClient:
    user, password = superset.admin()
    return SupersetClient(superset.config.superset_port, user, password, timeout=120)


def uuid_counts(client: SupersetClient, resource: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    page = 0
    while True:
        q = quote(f"(columns:!(id,uuid),page:{page},page_size:100)")
        status, body = client.get(f"/api/v1/{resource}/?q={q}")
        assert status == 200, body
        counts.update(str(row["uuid"]) for row in body["result"])
        if (page + 1) * 100 >= body["count"]:
            return counts
        page += 1


def chart_ids(superset: SupersetService) -> dict[str, int]:
    state = superset.provisioned()
    assert state is not None, "the bundle was not imported"
    return state["charts"]


def test_status_reports_superset_healthy(superset: SupersetService) -> None:
    result = infra_cli("status")
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("superset")]
    assert line.endswith("healthy") and str(superset.pid()) in line


def test_a_second_import_updates_every_object_in_place(
    superset: SupersetService, client: SupersetClient
) -> None:
    before = superset.provisioned()
    result = infra_cli("up", "superset")
    assert result.returncode == 0, result.stderr
    assert "superset: dashboards imported" in result.stdout
    assert "superset: already running" in result.stdout
    after = superset.provisioned()
    assert before is not None and after is not None
    for kind, resource in KINDS:
        assert after[kind] == before[kind], kind  # same uuid -> same id
        counts = uuid_counts(client, resource)
        assert {u: counts[u] for u in after[kind]} == dict.fromkeys(after[kind], 1), kind
    assert len(after["charts"]) == 14 and len(after["datasets"]) == 7


def run_provision(superset: SupersetService, templates: Path, out: Path) -> None:
    user, password = superset.admin()
    result = subprocess.run(
        [
            str(superset.config.superset_venv / "bin/python"),
            str(PROVISION_SCRIPT),
            "import",
            "--url",
            f"http://127.0.0.1:{superset.config.superset_port}",
            "--params",
            str(superset.home / "bundle-params.json"),
            "--bundle",
            str(out.with_suffix(".zip")),
            "--out",
            str(out),
            "--templates",
            str(templates),
        ],
        env={**os.environ, "SUPERSET_ADMIN_USER": user, "SUPERSET_ADMIN_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_edited_template_shows_after_the_next_import(
    superset: SupersetService, client: SupersetClient, tmp_path: Path
) -> None:
    templates = tmp_path / "bundle"
    shutil.copytree(bundle.TEMPLATES, templates)
    tag = uuid.uuid4().hex[:8]
    chart_file = templates / "charts" / "ohlc_1m.yaml"
    chart_file.write_text(
        chart_file.read_text().replace(
            "slice_name: ${section_title} 1-minute OHLC and VWAP",
            f"slice_name: ${{section_title}} OHLC edited {tag}",
        )
    )
    dashboard_file = templates / "dashboards" / "market_overview.yaml"
    dashboard_file.write_text(
        dashboard_file.read_text().replace(
            "dashboard_title: Market overview", f"dashboard_title: Market overview {tag}"
        )
    )
    chart_id = chart_ids(superset)[bundle.stable_uuid("chart/ohlc_1m/crypto")]
    dashboard_id = superset.provisioned()["dashboard_id"]  # type: ignore[index]

    def titles() -> tuple[str, str]:
        status, chart = client.get(f"/api/v1/chart/{chart_id}")
        assert status == 200, chart
        status, dashboard = client.get(f"/api/v1/dashboard/{dashboard_id}")
        assert status == 200, dashboard
        return chart["result"]["slice_name"], dashboard["result"]["dashboard_title"]

    # Another session's `up` imports the committed templates; keep it out meanwhile.
    with exclusive(superset.config.state_dir / "superset.lock"):
        try:
            run_provision(superset, templates, tmp_path / "edited.json")
            assert titles() == (f"Crypto OHLC edited {tag}", f"Market overview {tag}")
        finally:
            run_provision(superset, bundle.TEMPLATES, superset.provisioned_file)
    assert titles() == ("Crypto 1-minute OHLC and VWAP", "Market overview")
    assert chart_ids(superset)[bundle.stable_uuid("chart/ohlc_1m/crypto")] == chart_id


def chart_results(
    client: SupersetClient, chart_id: int, result_type: str = "full", force: bool = True
) -> list[dict[str, Any]]:
    """The chart's results; ``force`` (the default here) queries Trino now, not the cache."""
    query = f"?type={result_type}&force={str(force).lower()}"
    status, body = client.get(f"/api/v1/chart/{chart_id}/data/{query}")
    assert status == 200, (chart_id, body)
    return body["result"]


def test_chart_data_comes_from_the_cache_within_a_refresh_period_and_health_queries_trino(
    superset: SupersetService, client: SupersetClient
) -> None:
    state = superset.provisioned()
    assert state is not None
    chart_id = int(state["health_chart_id"])
    fresh = chart_results(client, chart_id)
    assert fresh and not any(r["is_cached"] for r in fresh)  # None or False: not from the cache
    again = chart_results(client, chart_id, force=False)
    assert [r["is_cached"] for r in again] == [True] * len(fresh)
    assert [r["cache_key"] for r in again] == [r["cache_key"] for r in fresh]
    assert {r["cache_timeout"] for r in again} == {superset.config.superset_refresh_s}
    status, body = superset.chart_data(chart_id)  # what `status` counts as healthy
    assert status == 200 and not any(r["is_cached"] for r in body["result"]), body


def test_every_chart_answers_with_rows_from_the_live_market(
    superset: SupersetService, client: SupersetClient, live_market: object, model_tables: object
) -> None:
    empty = []
    for chart_uuid, chart_id in chart_ids(superset).items():
        for result in chart_results(client, chart_id):
            assert result.get("error") is None, (chart_id, result["error"])
            if not result["rowcount"]:
                empty.append((chart_id, chart_uuid))
    assert not empty, f"charts without rows: {empty}"


def test_every_chart_query_reads_cassandra_by_partition_key(
    superset: SupersetService, client: SupersetClient, live_market: object, model_tables: object
) -> None:
    port = superset.config.trino_port
    for chart_id in chart_ids(superset).values():
        for result in chart_results(client, chart_id, "query"):
            sql = result["query"].strip().rstrip(";")
            plan = "\n".join(row[0] for row in run_query(port, f"EXPLAIN {sql}").rows)
            scans = SCAN.findall(plan)
            assert scans, (chart_id, plan)
            assert "<UNPARTITIONED>" not in plan, (chart_id, sql)
            # Today's partitions exist while the market is live: the scan lists them by key.
            listed = [s for s in scans if int(s[2]) > 0]
            assert listed, (chart_id, scans)
            for _keyspace, table, _count, partitions in listed:
                if table == "gbm_runs":  # partitioned by day alone
                    assert partitions.startswith('"day" = '), partitions
                    continue
                if table == "model_scores":  # partitioned by source alone
                    assert partitions == "\"source\" = 'walk_forward'", partitions
                    continue
                if table == "model_drift":  # partitioned by symbol alone
                    assert partitions.startswith('"symbol" = '), partitions
                    continue
                assert partitions.startswith('"symbol" = '), partitions
                assert '"day" = ' in partitions, partitions


def test_day_in_a_list_is_not_pushed_down_which_is_why_datasets_read_one_day_per_select(
    stack: Stack,
) -> None:
    port = InfraConfig.from_env().trino_port
    keyspace = stack.cassandra.keyspace

    def plan(where: str) -> str:
        sql = (
            f"EXPLAIN SELECT close FROM {keyspace}.trades_agg_5s "
            f"WHERE symbol = 'AAPL' AND {where}"
        )
        return "\n".join(row[0] for row in run_query(port, sql).rows)

    assert "<UNPARTITIONED>" in plan(f"day IN ({bundle.TODAY}, {bundle.TODAY} - INTERVAL '1' DAY)")
    assert "<UNPARTITIONED>" not in plan(f"day = {bundle.TODAY}")


def test_secrets_stay_private(superset: SupersetService) -> None:
    _, password = superset.admin()
    credentials = superset.credentials_file
    if "SUPERSET_ADMIN_PASSWORD" not in os.environ:
        assert f"SUPERSET_ADMIN_PASSWORD={password}" in credentials.read_text()
    assert credentials.stat().st_mode & 0o077 == 0
    assert superset.secret_key_file.stat().st_mode & 0o077 == 0
    for path in [
        *superset.log_dir.iterdir(),
        superset.config_file,
        superset.home / "bundle-params.json",
    ]:
        assert password not in path.read_text(errors="replace"), path
    assert not (Path.home() / ".superset").exists() or not any(
        (Path.home() / ".superset").iterdir()
    )


def test_answers_is_false_without_an_import(tmp_path: Path, superset: SupersetService) -> None:
    config = InfraConfig.from_env({**os.environ, "STATE_DIR": str(tmp_path)})
    other = SupersetService(config)  # same port, but nothing imported under this STATE_DIR
    assert other.server_up() and not other.answers()
