"""The local engine's batch encoding gives the bytes the driver's own binding gives."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest
from cassandra.cqltypes import lookup_casstype
from cassandra.protocol import ColumnMetadata
from cassandra.query import PreparedStatement

from gbm_analysis.cql import batch_rows, bound_rows, cells, double_lists

PROTOCOL = 5
STEP_TYPES = {
    "symbol": "UTF8Type",
    "day": "SimpleDateType",
    "issued_at": "TimestampType",
    "run_id": "UTF8Type",
    "model": "UTF8Type",
    "step": "Int32Type",
    "target_ts": "TimestampType",
    "as_of": "TimestampType",
    "last_price": "DoubleType",
    "n_bars": "Int32Type",
    "mean": "DoubleType",
    "p_above": "DoubleType",
    "percentiles": "ListType(DoubleType)",
}


def _statement(types: dict[str, str]) -> PreparedStatement:
    meta = [ColumnMetadata("ks", "t", name, lookup_casstype(t)) for name, t in types.items()]
    return PreparedStatement(meta, b"id", [0, 1], "INSERT ...", "ks", PROTOCOL, [], None)


def test_a_batch_encodes_as_the_driver_binds_each_row() -> None:
    statement = _statement(STEP_TYPES)
    rng = np.random.default_rng(1)
    pct = np.sort(rng.normal(100.0, 5.0, size=(4, 99)), axis=1)
    pct[1, :3] = [math.nan, -0.0, 1e-310]  # NaN, a signed zero and a subnormal survive
    mean = np.array([100.0, math.inf, 99.5, 1e300])
    above = np.array([0.5, 0.0, 1.0, 0.4999])
    as_of_ms = 1_767_614_400_000
    step = np.arange(1, 5)
    shared = {
        "symbol": "BINANCE:BTCUSDT",
        "day": date(2026, 1, 5),
        "issued_at": datetime(2026, 1, 5, 12, 0, 1, 123_000, tzinfo=UTC),
        "run_id": "20260105T120001Z-abcdef12",
        "model": "ewma_t",
        "as_of": as_of_ms,
        "last_price": 64_250.5,
        "n_bars": 4_320,
    }
    varying = {
        "step": cells(step, "int"),
        "target_ts": cells(as_of_ms + step * 60_000, "timestamp"),
        "mean": cells(mean, "double"),
        "p_above": cells(above, "double"),
        "percentiles": double_lists(pct),
    }
    rows = batch_rows(statement, PROTOCOL, shared, varying)

    for i, row in enumerate(rows):
        values: dict[str, Any] = {
            **shared,
            "step": int(step[i]),
            "target_ts": as_of_ms + int(step[i]) * 60_000,
            "mean": float(mean[i]),
            "p_above": float(above[i]),
            "percentiles": pct[i].tolist(),
        }
        expected = statement.bind([values[name] for name in STEP_TYPES]).values
        assert row == expected
    (bound,) = bound_rows(statement, rows[:1])
    assert bound.values == rows[0] and bound.routing_key is not None


def test_encoded_values_read_back_as_written() -> None:
    list_type = lookup_casstype("ListType(DoubleType)")
    values = np.array([[1.25, -3.5, 1e-9], [0.0, 2.0, 7.0]])
    assert [list_type.deserialize(v, PROTOCOL) for v in double_lists(values)] == values.tolist()
    int_type = lookup_casstype("Int32Type")
    assert [int_type.deserialize(v, PROTOCOL) for v in cells([7, -1], "int")] == [7, -1]


def test_every_column_must_be_given_once_and_rows_must_agree() -> None:
    statement = _statement({"symbol": "UTF8Type", "step": "Int32Type", "mean": "DoubleType"})
    one = cells([1.0], "double")
    with pytest.raises(ValueError, match="columns"):
        batch_rows(statement, PROTOCOL, {"symbol": "A"}, {"step": cells([1], "int")})
    with pytest.raises(ValueError, match="columns"):
        batch_rows(statement, PROTOCOL, {"symbol": "A", "mean": 1.0}, {"mean": one, "step": one})
    with pytest.raises(ValueError, match="different lengths"):
        batch_rows(
            statement, PROTOCOL, {"symbol": "A"}, {"step": cells([1, 2], "int"), "mean": one}
        )
    with pytest.raises(TypeError):
        cells([1.5], "int")  # a fraction is no int
