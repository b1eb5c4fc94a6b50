"""Avro single-object encoding of trades (spec: Avro 1.11 "Single object encoding").

Wire layout: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form + the plain Avro binary body. Consumers check the fingerprint to know
which schema wrote a record; Spark strips the 10-byte header and calls ``from_avro`` on the body.
"""

from __future__ import annotations

import io
import struct
from functools import cache
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.contracts import load_avro_schema

MAGIC = b"\xc3\x01"
HEADER_LENGTH = 10


class SchemaMismatchError(ValueError):
    """A payload is not single-object encoded with a schema we know."""


@cache
def parsed_schema(name: str = "trade") -> Any:
    return parse_schema(load_avro_schema(name))


@cache
def schema_fingerprint(name: str = "trade") -> bytes:
    """The 8 little-endian bytes that follow the magic in every record of ``name``."""
    canonical = to_parsing_canonical_form(parsed_schema(name))
    value = int(fingerprint(canonical, "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


def header(name: str = "trade") -> bytes:
    return MAGIC + schema_fingerprint(name)


def encode(record: dict[str, Any], name: str = "trade") -> bytes:
    buf = io.BytesIO()
    buf.write(header(name))
    schemaless_writer(buf, parsed_schema(name), record)
    return buf.getvalue()


def decode(payload: bytes, name: str = "trade") -> dict[str, Any]:
    expected = header(name)
    if payload[:HEADER_LENGTH] != expected:
        raise SchemaMismatchError(
            f"header {payload[:HEADER_LENGTH].hex()} is not {expected.hex()} ({name} schema)"
        )
    record = schemaless_reader(
        io.BytesIO(payload[HEADER_LENGTH:]), parsed_schema(name), parsed_schema(name)
    )
    # Every schema in schemas/avro is a record; fastavro types the result as any Avro value.
    if not isinstance(record, dict):
        raise SchemaMismatchError(f"{name} schema decoded to {type(record).__name__}, not a record")
    return record
