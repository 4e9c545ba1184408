"""Rows to Avro records in the Confluent wire format, for a Kafka sink with ``format: avro``.

Each row's payload columns (those not starting with ``_``) are written with the sink's writer schema by
fastavro's C writer, behind the header of the schema id the registry gave that schema (one per topic: a
subject per topic, or one for all). A writer field no column gives takes its default; a field without a
default must be a column (:func:`missing_writer_fields`, checked when the pipeline is built). Logical types
are written from their underlying values (a ``timestamp-millis`` from the epoch ms a column holds).
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pyarrow as pa

from pipelines.errors import FatalError
from pipelines.io.records import rows_as_dicts
from pipelines.schemas.resolution import full_name, without_logical_types
from pipelines.schemas.wire_format import framed

__all__ = ["AvroEncodingError", "AvroRowEncoder", "missing_writer_fields"]

_WRITE_ERRORS = (ValueError, TypeError, OverflowError, KeyError, AttributeError)


class AvroEncodingError(FatalError):
    """A row whose values the writer schema cannot hold (a null in a field that is not nullable, a type)."""


class AvroRowEncoder:
    def __init__(self, writer_schema: dict[str, Any]) -> None:
        self.schema_text = json.dumps(writer_schema)
        self.record_name = full_name(writer_schema)
        self._parsed: dict[str, Any] = fastavro.parse_schema(without_logical_types(writer_schema))  # type: ignore[assignment]
        self._fields = [field["name"] for field in writer_schema["fields"]]

    def encode(self, rows: pa.Table | pa.RecordBatch, schema_id: int) -> list[bytes]:
        """One wire-format record per row; :class:`AvroEncodingError` naming the row and field for a row the
        schema cannot hold."""
        columns = [name for name in self._fields if name in rows.column_names]
        header = framed(schema_id, b"")
        encoded = []
        for index, value in enumerate(rows_as_dicts(rows.select(columns))):
            buffer = io.BytesIO()
            buffer.write(header)
            try:
                fastavro.schemaless_writer(buffer, self._parsed, value)
            except _WRITE_ERRORS:
                raise AvroEncodingError(
                    f"row {index} does not fit the Avro writer schema {self.record_name}: fields "
                    f'{self._misfits(value)} (make a field nullable, ["null", ...], or filter such rows before '
                    "the sink)"
                ) from None
            encoded.append(buffer.getvalue())
        return encoded

    def _misfits(self, value: dict[str, Any]) -> list[str]:
        """The fields whose value in ``value`` the writer schema cannot hold (named, never quoted)."""
        return [
            field["name"]
            for field in self._parsed["fields"]
            if not fastavro.validate(value.get(field["name"], field.get("default")), field["type"], raise_errors=False)
        ]


def missing_writer_fields(writer_schema: dict[str, Any], columns: list[str]) -> list[str]:
    """The writer's fields without a default that no column gives (a record could not be written)."""
    return [f["name"] for f in writer_schema["fields"] if f["name"] not in columns and "default" not in f]
