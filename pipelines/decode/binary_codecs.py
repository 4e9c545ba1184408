"""Decoders for Avro payloads (fastavro, schemaless with a writer schema from the config) and raw bytes.

Logical types are read as their underlying types (``timestamp-millis`` as the long of epoch ms a
``timestamp_ms`` column holds, ``decimal`` as bytes), not converted to Python objects first.

Avro has no columnar reader for single-record payloads, so records are read one by one by fastavro's C reader
and the columns are built from them, one Arrow conversion per column; a record that does not read is a dead
letter with the reason. A value that does not convert to its column's type is found by bisecting that column
only, so k such records cost O(k log n) conversions on top of the per-record read every record costs anyway.
Nested columns (struct, list, map) take the records, arrays and maps fastavro reads (dicts and lists) strictly
(:mod:`pipelines.decode.nested_values`): a record whose value does not fit, at any depth, is an ``invalid`` dead
letter naming the column and where in it. Raw bytes are passed through as a ``value`` binary column, unchanged.
Both apply the input limits first (size, headers; nesting is JSON's only) and the event-time limits last, as
every decoder does (:func:`pipelines.decode.codecs.decode_within_limits`).
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa

from pipelines.decode.codecs import DecodedBatch, SelfContainedDecoder, decode_within_limits
from pipelines.decode.nested_values import is_nested, misfit_path
from pipelines.decode.schema import EventSchema
from pipelines.errors import ConfigError
from pipelines.io.records import RawBatch, dead_letters
from pipelines.schemas.resolution import column_type_mismatch, without_logical_types
from pipelines.transform.bisection import failing_positions

__all__ = ["AvroDecoder", "RawBytesDecoder", "fitted_columns"]

_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)
_MISFIT = "an Avro value does not fit the schema's column types"


class AvroDecoder(SelfContainedDecoder):
    def __init__(self, schema: EventSchema, writer_schema: dict[str, Any]) -> None:
        self._schema = schema
        try:
            self._writer_schema = fastavro.parse_schema(without_logical_types(writer_schema))
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
            raise ConfigError(f"schema.avro_schema is not a valid Avro schema: {error}") from None
        mismatch = column_type_mismatch(writer_schema, schema.config.fields)
        if mismatch is not None:
            raise ConfigError(f"schema.fields.{mismatch} (in schema.avro_schema)")

    def decode(self, raw: RawBatch, now_ms: int | None = None) -> DecodedBatch:
        """Screen, decode, attach metadata columns, validate. Never raises for bad records: they become dead
        letters."""
        return decode_within_limits(self._schema, raw, now_ms, self._read, json_nesting=False)

    def _read(self, raw: RawBatch) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
        """The payload columns of the records that read and fit, their positions (None: all), dead letters."""
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
        payload_schema = self._schema.payload_schema
        columns = {name: [row.get(name) for row in rows] for name in payload_schema.names}
        table, good, misfits = fitted_columns(payload_schema, columns, good)
        if misfits:
            reasons = pa.array([reason for _, reason in misfits], pa.string())
            indices = pa.array([index for index, _ in misfits], pa.int64())
            rejected.append(dead_letters(raw, indices, reasons, "invalid"))
        return table, None if len(good) == len(raw) else pa.array(good, pa.int64()), rejected


def fitted_columns(
    payload_schema: pa.Schema, columns: dict[str, list[Any]], good: list[int]
) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
    """Columns of decoded Avro records (``columns``: a list of values per column of ``payload_schema``; row i is
    record ``good[i]``); a record whose values do not fit the columns' types (e.g. a record into int64) is set
    aside. A record fits when ``pa.Table.from_pylist([record])`` accepts it and its nested values fit their
    types strictly (:func:`~pipelines.decode.nested_values.misfit_path`); the suspects are found column by
    column, by bisecting only the columns that do not convert, so k misfits cost O(k log n) conversions of
    shrinking slices, not one conversion per record (nested values are checked one by one, once). Returns the
    table, the records it holds (of ``good``) and the misfits (record, reason)."""
    arrays = [_converted(columns[field.name], field.type) for field in payload_schema]
    if all(array is not None for array in arrays):
        return pa.Table.from_arrays(arrays, schema=payload_schema), good, []
    suspects = sorted(
        {
            position
            for field, array in zip(payload_schema, arrays, strict=True)
            if array is None
            for position in _unconvertible(columns[field.name], field.type)
        }
    )
    reasons = {
        position: _misfit_reason({name: columns[name][position] for name in payload_schema.names}, payload_schema)
        for position in suspects
    }
    misfit_positions = [position for position, reason in reasons.items() if reason is not None]
    for index, field in enumerate(payload_schema):
        if arrays[index] is None:  # converted again with the misfits' values as nulls: those rows go below
            values = list(columns[field.name])
            for position in misfit_positions:
                values[position] = None
            arrays[index] = pa.array(values, field.type)
    keep = np.ones(len(good), dtype=bool)
    keep[misfit_positions] = False
    table = pa.Table.from_arrays(arrays, schema=payload_schema).filter(pa.array(keep))
    misfits = [(good[position], reasons[position] or "") for position in misfit_positions]
    return table, np.asarray(good, dtype=np.int64)[keep].tolist(), misfits


def _converted(values: list[Any], data_type: pa.DataType) -> pa.Array | None:
    if is_nested(data_type) and any(misfit_path(value, data_type) is not None for value in values):
        return None
    return _arrow_array(values, data_type)


def _arrow_array(values: list[Any], data_type: pa.DataType) -> pa.Array | None:
    try:
        return pa.array(values, data_type)
    except _CONVERSION_ERRORS:
        return None


def _unconvertible(values: list[Any], data_type: pa.DataType) -> list[int]:
    """Positions of the values that do not convert to ``data_type`` (each value converts or not on its own):
    nested misfits found one by one, in one pass, the others by bisecting the conversion."""
    misfits = []
    if is_nested(data_type):
        misfits = [index for index, value in enumerate(values) if misfit_path(value, data_type) is not None]
    rest = list(values)
    for index in misfits:
        rest[index] = None
    unconverted = failing_positions(
        len(rest), lambda start, stop: _arrow_array(rest[start:stop], data_type) is not None
    )
    return sorted({*misfits, *unconverted})


def _misfit_reason(row: dict[str, Any], payload_schema: pa.Schema) -> str | None:
    """Why one record does not fit the columns (None: it does), in the words used for every Avro misfit."""
    for field in payload_schema:
        at = misfit_path(row[field.name], field.type) if is_nested(field.type) else None
        if at is not None:
            where = f" (at {field.name}{at})" if at else ""
            return f"{_MISFIT}: {field.name!r} must be {field.type}{where}"
    try:
        pa.Table.from_pylist([row], schema=payload_schema)
    except _CONVERSION_ERRORS as error:
        return f"{_MISFIT}: {type(error).__name__}"
    return None


class RawBytesDecoder(SelfContainedDecoder):
    """Every record is valid: its bytes become the ``value`` column (null payloads stay null)."""

    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema

    def decode(self, raw: RawBatch, now_ms: int | None = None) -> DecodedBatch:
        return decode_within_limits(self._schema, raw, now_ms, _as_values, json_nesting=False)


def _as_values(raw: RawBatch) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
    return pa.table({"value": raw.payloads.cast(pa.binary())}), None, []
