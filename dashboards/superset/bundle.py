"""Render the Superset bundle templates in ``bundle/`` into an assets ZIP the importer accepts.

Runs in the Superset venv (``provision.py``) and in the project's tests; needs only PyYAML.

Template language, applied to every string of the parsed YAML:

* ``${name}``: a variable (see ``variables``); a string that is only ``${name}`` takes the
  variable's type (a list, an int), otherwise it is interpolated as text.
* ``${uuid:<stable name>}``: ``uuid5`` of the name in a fixed namespace, so every object keeps
  its uuid across renders and the importer updates it in place instead of adding a copy.
* ``'${filter:<column> <operator> <value>}'``: a Superset adhoc filter. For ``IN`` the value names
  a symbol list (``section``, ``crypto``, ``stocks``); otherwise it is taken as written (e.g. a
  ``TEMPORAL_RANGE`` such as ``DATEADD(DATETIME("now"), -2, hour) : now``).

A chart template that mentions ``${section}`` is rendered once per section with symbols. Each
chart gets its saved ``query_context`` (a JSON string), built from its ``params`` the way
Explore builds it, so ``GET /api/v1/chart/<id>/data/`` and reports work without opening it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TEMPLATES = Path(__file__).resolve().parent / "bundle"
# The importer strips the ZIP's single root folder.
ROOT = "market_overview"
# Fixed forever: a new namespace would give every object a new uuid, i.e. a second copy.
NAMESPACE = uuid.UUID("8a0f3c52-3f7e-5c1b-9d4e-6b2a7c9e0d14")
SECTIONS = {"crypto": "Crypto", "stocks": "Stocks"}
DASHBOARD_SLUG = "market-overview"
# Cassandra's day column is the UTC date; current_date would follow the session's time zone.
TODAY = "CAST(current_timestamp AT TIME ZONE 'UTC' AS date)"

_VAR = re.compile(r"\$\{([a-z_]+)\}")
_UUID = re.compile(r"\$\{uuid:([^}]+)\}")
_FILTER = re.compile(r"^\$\{filter:(\S+) (IN|NOT IN|==|!=|TEMPORAL_RANGE) (.+)\}$")
_OPERATOR_IDS = {
    "IN": "IN",
    "NOT IN": "NOT_IN",
    "==": "EQUALS",
    "!=": "NOT_EQUALS",
    "TEMPORAL_RANGE": "TEMPORAL_RANGE",
}


class TemplateError(ValueError):
    """A template uses an unknown variable or a malformed placeholder."""


def stable_uuid(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


def sql_list(values: list[str]) -> str:
    """
    >>> sql_list(["AAPL", "O'NEIL"])
    "'AAPL', 'O''NEIL'"
    """
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def variables(params: Mapping[str, Any], section: str | None = None) -> dict[str, Any]:
    crypto, stocks = list(params["crypto_symbols"]), list(params["stock_symbols"])
    values: dict[str, Any] = {
        "trino_uri": params["trino_uri"],
        "catalog": params["catalog"],
        "keyspace": params["keyspace"],
        "refresh_s": int(params["refresh_s"]),
        "symbols_sql": sql_list(crypto + stocks),
        "crypto_list": ", ".join(crypto),
        "stocks_list": ", ".join(stocks),
        "crypto_first": crypto[:1],
        "stocks_first": stocks[:1],
        "today": TODAY,
        "yesterday": f"{TODAY} - INTERVAL '1' DAY",
    }
    if section is not None:
        values["section"] = section
        values["section_title"] = SECTIONS[section]
    return values


def symbol_lists(params: Mapping[str, Any], section: str | None) -> dict[str, list[str]]:
    lists = {"crypto": list(params["crypto_symbols"]), "stocks": list(params["stock_symbols"])}
    if section is not None:
        lists["section"] = lists[section]
    return lists


def adhoc_filter(
    column: str, operator: str, value: str, lists: Mapping[str, list[str]]
) -> dict[str, Any]:
    comparator: Any = value
    if operator in ("IN", "NOT IN"):
        if value not in lists:
            raise TemplateError(
                f"filter on {column}: {value!r} is not a symbol list " f"({', '.join(lists)})"
            )
        comparator = lists[value]
    return {
        "expressionType": "SIMPLE",
        "clause": "WHERE",
        "subject": column,
        "operator": operator,
        "operatorId": _OPERATOR_IDS[operator],
        "comparator": comparator,
        "isExtra": False,
        "sqlExpression": None,
        "filterOptionName": f"filter_{column}_{_OPERATOR_IDS[operator].lower()}",
    }


def substitute(node: Any, values: Mapping[str, Any], lists: Mapping[str, list[str]]) -> Any:
    if isinstance(node, dict):
        return {key: substitute(value, values, lists) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(item, values, lists) for item in node]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _VAR.fullmatch(node)
    if whole:
        return _value(whole.group(1), values)
    text = _VAR.sub(lambda m: str(_value(m.group(1), values)), node)
    text = _UUID.sub(lambda m: stable_uuid(m.group(1)), text)
    match = _FILTER.match(text)
    if match:
        column, operator, value = match.groups()
        return adhoc_filter(column, operator, value, lists)
    if "${" in text:
        raise TemplateError(f"unresolved placeholder in {node!r}")
    return text


def _value(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        raise TemplateError(f"unknown variable ${{{name}}} (known: {', '.join(sorted(values))})")
    return values[name]


# --- saved query_context, as Explore's buildQuery writes it -----------------------------------


def _query_filters(adhoc_filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"col": f["subject"], "op": f["operator"], "val": f["comparator"]}
        for f in adhoc_filters
        if f.get("expressionType") == "SIMPLE" and f.get("clause") == "WHERE"
    ]


def _base_query(params: Mapping[str, Any], suffix: str = "") -> dict[str, Any]:
    return {
        "filters": _query_filters(params.get(f"adhoc_filters{suffix}", [])),
        "extras": {"having": "", "where": ""},
        "applied_time_extras": {},
        "annotation_layers": [],
        "row_limit": params.get(f"row_limit{suffix}", 10000),
        "series_limit": 0,
        "order_desc": True,
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
        "time_offsets": [],
    }


def _timeseries_query(params: Mapping[str, Any], suffix: str = "") -> dict[str, Any]:
    x_axis = params["x_axis"]
    metrics = list(params[f"metrics{suffix}"])
    groupby = list(params.get(f"groupby{suffix}", []))
    axis: dict[str, Any] = {
        "columnType": "BASE_AXIS",
        "sqlExpression": x_axis,
        "label": x_axis,
        "expressionType": "SQL",
    }
    if params.get("time_grain_sqla"):
        axis["timeGrain"] = params["time_grain_sqla"]
    return {
        **_base_query(params, suffix),
        "columns": [axis, *groupby],
        "metrics": metrics,
        "orderby": [[metrics[0], False]],
        "series_columns": groupby,
        "post_processing": [
            {
                "operation": "pivot",
                "options": {
                    "index": [x_axis],
                    "columns": groupby,
                    "aggregates": {metric: {"operator": "mean"} for metric in metrics},
                    "drop_missing_columns": False,
                },
            },
            {"operation": "flatten"},
        ],
    }


def _table_query(params: Mapping[str, Any]) -> dict[str, Any]:
    if params.get("query_mode") != "raw":
        raise TemplateError("only raw-mode tables are supported")
    # No "metrics" key: with an empty list Superset would GROUP BY every column, and two
    # identical trades would show as one row.
    return {
        **_base_query(params),
        "columns": list(params["all_columns"]),
        "orderby": [json.loads(item) for item in params.get("order_by_cols", [])],
        "post_processing": [],
    }


def query_context(params: Mapping[str, Any]) -> str:
    viz = params["viz_type"]
    if viz in ("echarts_timeseries_line", "echarts_timeseries_bar", "echarts_area"):
        queries = [_timeseries_query(params)]
    elif viz == "mixed_timeseries":
        queries = [_timeseries_query(params), _timeseries_query(params, "_b")]
    elif viz == "table":
        queries = [_table_query(params)]
    else:
        raise TemplateError(f"no query_context builder for viz_type {viz!r}")
    # Ids are placeholders: the importer points them at the imported dataset.
    form_data = {
        **params,
        "datasource": "0__table",
        "force": False,
        "result_format": "json",
        "result_type": "full",
    }
    return json.dumps(
        {
            "datasource": {"id": 0, "type": "table"},
            "force": False,
            "queries": queries,
            "form_data": form_data,
            "result_format": "json",
            "result_type": "full",
        },
        sort_keys=True,
    )


# --- the bundle ---------------------------------------------------------------------------------


def _in_section(node_id: str, section: str) -> bool:
    return re.search(rf"-{re.escape(section)}(-|$)", node_id) is not None


def drop_section(dashboard: dict[str, Any], section: str) -> None:
    """Remove a section's layout nodes and filters (used when it has no symbols)."""
    position = dashboard["position"]
    gone = {key for key in position if _in_section(key, section)}
    chart_ids = {
        position[key]["meta"]["chartId"] for key in gone if position[key].get("type") == "CHART"
    }
    for key in gone:
        del position[key]
    for node in position.values():
        if isinstance(node, dict) and "children" in node:
            node["children"] = [child for child in node["children"] if child not in gone]
    metadata = dashboard["metadata"]
    filters = [
        f
        for f in metadata.get("native_filter_configuration", [])
        if not _in_section(f["id"], section)
    ]
    for native_filter in filters:
        scope = native_filter.get("scope", {})
        scope["excluded"] = [i for i in scope.get("excluded", []) if i not in chart_ids]
    metadata["native_filter_configuration"] = filters


def render(params: Mapping[str, Any], templates: Path = TEMPLATES) -> dict[str, str]:
    """{path in the ZIP: YAML text} for every object of the bundle."""
    sections = [s for s in SECTIONS if symbol_lists(params, None)[s]]
    rendered: dict[str, Any] = {}
    for path in sorted(templates.rglob("*.yaml")):
        relative = path.relative_to(templates)
        text = path.read_text()
        try:
            template = yaml.safe_load(text)
            if "${section}" in text:
                for section in sections:
                    per_section = relative.with_name(f"{relative.stem}_{section}.yaml")
                    rendered[per_section.as_posix()] = substitute(
                        template, variables(params, section), symbol_lists(params, section)
                    )
            else:
                rendered[relative.as_posix()] = substitute(
                    template, variables(params), symbol_lists(params, None)
                )
        except (TemplateError, yaml.YAMLError, KeyError) as exc:
            raise TemplateError(f"{relative}: {exc}") from None
    for name, obj in rendered.items():
        if name.startswith("charts/") and "query_context" not in obj:
            obj["query_context"] = query_context(obj["params"])
        if name.startswith("dashboards/"):
            for section in SECTIONS:
                if section not in sections:
                    drop_section(obj, section)
    return {
        f"{ROOT}/{name}": yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=100)
        for name, obj in rendered.items()
    }


def digest(files: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()


def write_zip(files: Mapping[str, str], path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    data = buffer.getvalue()
    path.write_bytes(data)
    return data
