"""The Superset bundle templates render into a consistent, stable assets bundle (no Superset
needed; the integration tests import it into the real one)."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import DEFAULT_SYMBOLS
from dashboards.superset import bundle
from infra.superset import split_symbols

CRYPTO, STOCKS = split_symbols(DEFAULT_SYMBOLS)
PARAMS = {
    "trino_uri": "trino://superset@127.0.0.1:18080/cassandra",
    "catalog": "cassandra",
    "keyspace": "market_x",
    "crypto_symbols": CRYPTO,
    "stock_symbols": STOCKS,
    "refresh_s": 7,
}


def objects(files: dict[str, str], kind: str) -> dict[str, dict[str, Any]]:
    """{path: parsed YAML} of one kind (charts, datasets, ...)."""
    return {
        name: yaml.safe_load(text) for name, text in files.items() if name.split("/")[1] == kind
    }


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return bundle.render(PARAMS)


def test_default_symbols_split_into_crypto_and_stocks() -> None:
    assert CRYPTO == [s for s in DEFAULT_SYMBOLS if s.startswith("BINANCE:")]
    assert STOCKS == ["AAPL", "AMZN", "MSFT"]


def test_bundle_has_one_database_seven_datasets_fourteen_charts_one_dashboard(files) -> None:
    assert {name.split("/")[0] for name in files} == {bundle.ROOT}
    counts = {
        kind: len(objects(files, kind))
        for kind in ("databases", "datasets", "charts", "dashboards")
    }
    assert counts == {"databases": 1, "datasets": 7, "charts": 14, "dashboards": 1}
    metadata = yaml.safe_load(files[f"{bundle.ROOT}/metadata.yaml"])
    assert metadata["type"] == "assets" and metadata["version"] == "1.0.0"


def test_settings_are_rendered_into_the_objects(files) -> None:
    (database,) = objects(files, "databases").values()
    assert database["sqlalchemy_uri"] == PARAMS["trino_uri"]
    for dataset in objects(files, "datasets").values():
        assert dataset["schema"] == "market_x" and dataset["catalog"] == "cassandra"
        assert "cassandra.market_x." in dataset["sql"] and "${" not in dataset["sql"]
    (dashboard,) = objects(files, "dashboards").values()
    assert dashboard["metadata"]["refresh_frequency"] == 7
    assert dashboard["slug"] == bundle.DASHBOARD_SLUG
    assert not any("${" in text for text in files.values())


def test_uuids_are_uuid5_of_stable_names_and_do_not_depend_on_settings(files) -> None:
    other = bundle.render(
        {
            **PARAMS,
            "keyspace": "elsewhere",
            "refresh_s": 30,
            "crypto_symbols": ["BINANCE:BTCUSDT"],
            "stock_symbols": ["IBM"],
        }
    )
    uuids = {
        name: yaml.safe_load(text)["uuid"]
        for name, text in files.items()
        if "metadata.yaml" not in name
    }
    assert uuids == {
        name: yaml.safe_load(text)["uuid"]
        for name, text in other.items()
        if "metadata.yaml" not in name
    }
    assert len(set(uuids.values())) == len(uuids)
    chart = uuids[f"{bundle.ROOT}/charts/ohlc_1m_crypto.yaml"]
    assert chart == str(uuid.uuid5(bundle.NAMESPACE, "chart/ohlc_1m/crypto"))
    assert bundle.render(PARAMS) == files  # deterministic: same text, same digest
    assert bundle.digest(files) != bundle.digest(other)


def test_references_between_objects_resolve(files) -> None:
    (database,) = objects(files, "databases").values()
    datasets = {d["uuid"]: d for d in objects(files, "datasets").values()}
    charts = {c["uuid"]: c for c in objects(files, "charts").values()}
    (dashboard,) = objects(files, "dashboards").values()
    assert all(d["database_uuid"] == database["uuid"] for d in datasets.values())
    assert all(c["dataset_uuid"] in datasets for c in charts.values())
    nodes = [
        n
        for n in dashboard["position"].values()
        if isinstance(n, dict) and n.get("type") == "CHART"
    ]
    assert sorted(n["meta"]["uuid"] for n in nodes) == sorted(charts)
    chart_ids = {n["meta"]["chartId"] for n in nodes}
    assert len(chart_ids) == len(nodes)
    position = dashboard["position"]
    for key, node in position.items():
        if isinstance(node, dict):
            assert all(child in position for child in node.get("children", [])), key
    for native_filter in dashboard["metadata"]["native_filter_configuration"]:
        assert set(native_filter["scope"]["excluded"]) <= chart_ids
        for target in native_filter["targets"]:
            assert target.get("datasetUuid", next(iter(datasets))) in datasets


def test_every_chart_carries_a_query_context_built_from_its_params(files) -> None:
    for name, chart in objects(files, "charts").items():
        assert isinstance(chart["query_context"], str), name
        context = json.loads(chart["query_context"])
        assert context["form_data"]["viz_type"] == chart["viz_type"] == chart["params"]["viz_type"]
        assert context["datasource"] == {"id": 0, "type": "table"}
        assert context["queries"], name
        for query in context["queries"]:
            symbol_filters = [f for f in query["filters"] if f["col"] == "symbol"]
            section = CRYPTO if name.endswith("_crypto.yaml") else STOCKS
            assert symbol_filters == [{"col": "symbol", "op": "IN", "val": section}], name
    table = json.loads(
        objects(files, "charts")[f"{bundle.ROOT}/charts/latest_trades_stocks.yaml"]["query_context"]
    )["queries"][0]
    assert "metrics" not in table  # raw rows: no GROUP BY that would merge equal trades
    assert table["orderby"] == [["trade_ts", False]] and table["row_limit"] == 50
    mixed = json.loads(
        objects(files, "charts")[f"{bundle.ROOT}/charts/activity_5s_crypto.yaml"]["query_context"]
    )["queries"]
    assert [q["metrics"] for q in mixed] == [["volume"], ["trades"]]


FROM_TABLE = re.compile(r"FROM cassandra\.market_x\.(\w+)\s+WHERE (.+)")


def test_every_table_read_names_its_partition_keys_with_equality(files) -> None:
    """One branch per day (day = <date>): Trino cannot push `day IN (d, d - 1)` down."""
    symbols = bundle.sql_list(CRYPTO + STOCKS)
    for name, dataset in objects(files, "datasets").items():
        reads = FROM_TABLE.findall(dataset["sql"])
        assert reads and len(reads) == dataset["sql"].count("FROM cassandra."), name
        days = set()
        if name.endswith(("/leaderboard.yaml", "/drift.yaml")):  # tables without a day column
            ((table, where),) = reads
            key = {"model_scores": "source = 'walk_forward' AND ", "model_drift": ""}[table]
            assert where.strip() == f"{key}symbol IN ({symbols})", (name, where)
            continue
        for table, where in reads:
            if table == "gbm_runs":  # partitioned by day alone
                assert where.strip().startswith(f"day = {bundle.TODAY}"), (name, where)
                continue
            assert f"symbol IN ({symbols}) AND day = {bundle.TODAY}" in where, (name, where)
            days.add(where.partition("AND day = ")[2].strip())
        assert days == {bundle.TODAY, f"{bundle.TODAY} - INTERVAL '1' DAY"}, name
        assert " IN (" not in dataset["sql"].replace(f"symbol IN ({symbols})", ""), name


def test_a_section_without_symbols_is_left_out() -> None:
    files = bundle.render({**PARAMS, "stock_symbols": []})
    charts = objects(files, "charts")
    assert len(charts) == 7 and all(name.endswith("_crypto.yaml") for name in charts)
    (dashboard,) = objects(files, "dashboards").values()
    position = dashboard["position"]
    assert not [key for key in position if "stocks" in key]
    assert "HEADER-stocks" not in position["GRID_ID"]["children"]
    ids = {
        n["meta"]["chartId"]
        for n in position.values()
        if isinstance(n, dict) and n.get("type") == "CHART"
    }
    filters = dashboard["metadata"]["native_filter_configuration"]
    assert [f["id"] for f in filters] == ["NATIVE_FILTER-symbol-crypto", "NATIVE_FILTER-time_range"]
    assert all(set(f["scope"]["excluded"]) <= ids for f in filters)


def test_symbols_are_quoted_for_sql() -> None:
    files = bundle.render({**PARAMS, "stock_symbols": ["O'HARE"]})
    sql = objects(files, "datasets")[f"{bundle.ROOT}/datasets/market_trino/trades.yaml"]["sql"]
    assert "'O''HARE'" in sql


def test_unknown_placeholder_names_the_template(tmp_path: Path) -> None:
    templates = tmp_path / "bundle"
    shutil.copytree(bundle.TEMPLATES, templates)
    chart = templates / "charts" / "ohlc_1m.yaml"
    chart.write_text(chart.read_text().replace("${section_title}", "${sektion}"))
    with pytest.raises(bundle.TemplateError, match=r"charts/ohlc_1m.yaml: unknown variable"):
        bundle.render(PARAMS, templates)


def test_zip_has_every_file_under_one_root(files, tmp_path: Path) -> None:
    import zipfile

    data = bundle.write_zip(files, tmp_path / "b.zip")
    assert (tmp_path / "b.zip").read_bytes() == data
    with zipfile.ZipFile(tmp_path / "b.zip") as archive:
        assert sorted(archive.namelist()) == sorted(files)
        assert (
            archive.read(f"{bundle.ROOT}/metadata.yaml").decode()
            == files[f"{bundle.ROOT}/metadata.yaml"]
        )


def test_native_filters_symbol_per_section_and_time_range(files) -> None:
    (dashboard,) = objects(files, "dashboards").values()
    filters = {f["id"]: f for f in dashboard["metadata"]["native_filter_configuration"]}
    position = dashboard["position"]
    section_ids = {
        section: {
            n["meta"]["chartId"]
            for key, n in position.items()
            if key.startswith(f"CHART-{section}-")
        }
        for section in bundle.SECTIONS
    }
    for section, symbols in (("crypto", CRYPTO), ("stocks", STOCKS)):
        symbol_filter = filters[f"NATIVE_FILTER-symbol-{section}"]
        assert symbol_filter["filterType"] == "filter_select"
        other = "stocks" if section == "crypto" else "crypto"
        assert set(symbol_filter["scope"]["excluded"]) == section_ids[other]
        assert symbol_filter["adhoc_filters"][0]["comparator"] == symbols  # offered values
        assert symbol_filter["defaultDataMask"]["filterState"]["value"] == symbols[:1]
        assert symbol_filter["defaultDataMask"]["extraFormData"]["filters"] == [
            {"col": "symbol", "op": "IN", "val": symbols[:1]}
        ]
    time_filter = filters["NATIVE_FILTER-time_range"]
    assert time_filter["filterType"] == "filter_time"
    # Forecasts, backtests, the leaderboard and drift show the latest whatever the window.
    excluded = {
        position[f"CHART-{s}-{kind}"]["meta"]["chartId"]
        for s in bundle.SECTIONS
        for kind in ("band", "backtest", "leaderboard", "drift")
    }
    assert set(time_filter["scope"]["excluded"]) == excluded


def test_leaderboard_and_drift_charts_in_each_section(files) -> None:
    charts = objects(files, "charts")
    datasets = {d["uuid"]: d for d in objects(files, "datasets").values()}
    (dashboard,) = objects(files, "dashboards").values()
    position = dashboard["position"]
    for section in bundle.SECTIONS:
        board = charts[f"{bundle.ROOT}/charts/leaderboard_{section}.yaml"]
        drift = charts[f"{bundle.ROOT}/charts/model_drift_{section}.yaml"]
        assert datasets[board["dataset_uuid"]]["table_name"] == "leaderboard"
        assert datasets[drift["dataset_uuid"]]["table_name"] == "drift"
        assert (board["params"]["x_axis"], board["params"]["groupby"]) == ("horizon", ["model"])
        assert board["params"]["metrics"] == ["crps_skill"]
        assert drift["params"]["x_axis"] == "symbol"
        assert {"max_psi", "min_ks_p", "retrain"} <= set(drift["params"]["metrics"])
        symbols = {"crypto": CRYPTO, "stocks": STOCKS}[section]
        for chart in (board, drift):
            (query,) = json.loads(chart["query_context"])["queries"]
            assert query["filters"] == [{"col": "symbol", "op": "IN", "val": symbols}]
        row = position[f"ROW-{section}-3"]["children"]
        assert [position[c]["meta"]["uuid"] for c in row] == [board["uuid"], drift["uuid"]]
    skill = next(
        m
        for d in datasets.values()
        if d["table_name"] == "leaderboard"
        for m in d["metrics"]
        if m["metric_name"] == "crps_skill"
    )
    assert "crps_hist_sim_bps" in skill["expression"]
