"""Decoders for Avro payloads (fastavro, schemaless with a writer schema from the config) and raw bytes.

Avro has no columnar reader for single-record payloads, so records are read one by one by fastavro's C reader
and the columns are built from them in one call; a record that does not read is a dead letter with the reason.
Raw bytes are passed through as a ``value`` binary column, unchanged.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pyarrow as pa

from pipelines.codecs import DecodedBatch, validated
from pipelines.errors import ConfigError
from pipelines.records import RawBatch, dead_letters
from pipelines.schema import EventSchema

__all__ = ["AvroDecoder", "RawBytesDecoder"]


class AvroDecoder:
    def __init__(self, schema: EventSchema, writer_schema: dict[str, Any]) -> None:
        self._schema = schema
        try:
            self._writer_schema = fastavro.parse_schema(writer_schema)
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
            raise ConfigError(f"schema.avro_schema is not a valid Avro schema: {error}") from None

    def decode(self, raw: RawBatch) -> DecodedBatch:
        rows: list[dict[str, Any]] = []
        good: list[int] = []
        bad: list[int] = []
        reasons: list[str] = []
        for index, payload in enumerate(raw.payloads.to_pylist()):
            try:
                record = fastavro.schemaless_reader(io.BytesIO(payload or b""), self._writer_schema, None)
            except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError, OverflowError) as error:
                bad.append(index)
                reasons.append(f"undecodable Avro: {type(error).__name__}")
                continue
            if not isinstance(record, dict):
                bad.append(index)
                reasons.append("Avro value is not a record")
                continue
            rows.append(record)
            good.append(index)
        rejected = []
        if bad:
            rejected.append(dead_letters(raw, pa.array(bad, pa.int64()), pa.array(reasons, pa.string()), "undecodable"))
        table, good, misfits = self._columns(rows, good)
        if misfits:
            reasons = pa.array([reason for _, reason in misfits], pa.string())
            indices = pa.array([index for index, _ in misfits], pa.int64())
            rejected.append(dead_letters(raw, indices, reasons, "invalid"))
        return validated(self._schema, table, raw.take(pa.array(good, pa.int64())), rejected)

    def _columns(
        self, rows: list[dict[str, Any]], good: list[int]
    ) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
        """Columns from decoded records; a record whose values do not fit the columns' types (e.g. a logical
        timestamp into int64) is set aside, found by converting one record at a time only when needed."""
        payload_schema = self._schema.payload_schema
        projected = [{name: row.get(name) for name in payload_schema.names} for row in rows]
        try:
            return pa.Table.from_pylist(projected, schema=payload_schema), good, []
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        kept: list[dict[str, Any]] = []
        kept_indices: list[int] = []
        misfits: list[tuple[int, str]] = []
        for index, row in zip(good, projected, strict=True):
            try:
                pa.Table.from_pylist([row], schema=payload_schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
                misfits.append((index, f"an Avro value does not fit the schema's column types: {type(error).__name__}"))
                continue
            kept.append(row)
            kept_indices.append(index)
        return pa.Table.from_pylist(kept, schema=payload_schema), kept_indices, misfits


class RawBytesDecoder:
    """Every record is valid: its bytes become the ``value`` column (null payloads stay null)."""

    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema

    def decode(self, raw: RawBatch) -> DecodedBatch:
        table = pa.table({"value": raw.payloads.cast(pa.binary())})
        return validated(self._schema, table, raw, [])
