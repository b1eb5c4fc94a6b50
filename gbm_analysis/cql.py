"""CQL values of many rows at once, encoded with numpy for the local engine's batches.

A forecast's 60 step rows carry 60 x 99 percentiles and its 50 sample paths 50 x 60 prices:
about 9,000 doubles per (symbol, model), 1.3 million per hourly run. Bound through the driver,
each double is one Python call (``DoubleType.serialize`` and its length, element by element of
a ``list<double>``), which took about a third of the run's CPU. Here a column of a whole batch
is one numpy conversion to big-endian bytes, cut into one value per row; the values that every
row of a batch shares are encoded once, by the driver's own types.

The bytes are the protocol's value encodings (v3 and later: 32-bit collection sizes), the same
the driver's ``BoundStatement.bind`` produces; ``tests/gbm_analysis/test_cql.py`` compares them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["batch_rows", "bound_rows", "cells", "double_lists", "encode"]

#: big-endian numpy types of the CQL types the batches vary per row
_DTYPES = {"int": ">i4", "bigint": ">i8", "timestamp": ">i8", "double": ">f8"}
#: ``list<double>``: each element is its length (8) and the big-endian value
_LIST_ELEMENT = np.dtype([("size", ">i4"), ("value", ">f8")])


def cells(values: ArrayLike, cql_type: str) -> list[bytes]:
    """One encoded value per element of ``values`` (1-D), for an ``int``, ``bigint``,
    ``timestamp`` (epoch milliseconds) or ``double`` column.

    >>> cells([1, 2], "int")
    [b'\\x00\\x00\\x00\\x01', b'\\x00\\x00\\x00\\x02']
    """
    dtype = np.dtype(_DTYPES[cql_type])
    blob = np.asarray(values).astype(dtype, casting="same_kind").tobytes()
    size = dtype.itemsize
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def double_lists(rows: ArrayLike) -> list[bytes]:
    """Each row of a 2-D array as the encoded value of a ``list<double>``.

    >>> double_lists([[1.5]])
    [b'\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x08?\\xf8\\x00\\x00\\x00\\x00\\x00\\x00']
    """
    values = np.asarray(rows, dtype=np.float64)
    n_rows, n = values.shape
    packed = np.empty((n_rows, n), dtype=_LIST_ELEMENT)
    packed["size"] = 8
    packed["value"] = values
    blob = packed.tobytes()
    head = n.to_bytes(4, "big", signed=True)
    size = n * _LIST_ELEMENT.itemsize
    return [head + blob[i : i + size] for i in range(0, len(blob), size)]


def encode(statement: Any, values: Sequence[Any], protocol_version: int) -> list[bytes | None]:
    """``values`` (one per bound column of the prepared ``statement``) encoded by the driver's
    own column types, as ``BoundStatement.bind`` does; None stays None (null)."""
    return [
        None if value is None else column.type.serialize(value, protocol_version)
        for column, value in zip(statement.column_metadata, values, strict=True)
    ]


def batch_rows(
    statement: Any,
    protocol_version: int,
    shared: Mapping[str, Any],
    varying: Mapping[str, Sequence[bytes | None]],
) -> list[list[bytes | None]]:
    """The encoded rows of a batch of ``statement``: a column named in ``shared`` has the same
    value in every row, encoded once by the driver's type; one named in ``varying`` has one
    encoded value per row (:func:`cells`, :func:`double_lists`).

    :raises ValueError: a column is in neither or both, or the varying columns differ in length
    """
    names = [column.name for column in statement.column_metadata]
    if set(names) != set(shared) | set(varying) or set(shared) & set(varying):
        raise ValueError(
            f"columns {sorted(names)} against shared {sorted(shared)} and varying {sorted(varying)}"
        )
    sizes = {len(v) for v in varying.values()}
    if len(sizes) != 1:
        raise ValueError(f"varying columns of different lengths: {sorted(sizes)}")
    (n,) = sizes
    template = encode(
        statement, [shared.get(name) for name in names], protocol_version
    )  # None where the column varies
    columns: list[Sequence[bytes | None]] = [
        varying[name] if name in varying else [enc] * n
        for name, enc in zip(names, template, strict=True)
    ]
    return [list(row) for row in zip(*columns, strict=True)]


def bound_rows(statement: Any, rows: Sequence[Sequence[bytes | None]]) -> list[Any]:
    """Bound statements of ``statement`` whose values are the encoded ``rows``, for a batch."""
    from cassandra.query import BoundStatement

    width = len(statement.column_metadata)
    bound = []
    for row in rows:
        if len(row) != width:
            raise ValueError(f"{len(row)} values for the {width} columns of {statement}")
        one = BoundStatement(statement)
        one.values = list(row)
        bound.append(one)
    return bound
