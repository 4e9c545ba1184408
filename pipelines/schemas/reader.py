"""The reader schema of an input whose writer schemas are in a registry: ``schema.avro_schema`` or the file
``schema.registry.reader_schema_file``, checked against the input's ``fields`` before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro

from pipelines.config.pipeline import SchemaConfig
from pipelines.errors import ConfigError
from pipelines.schemas.resolution import AvroSchema, reader_records

__all__ = ["reader_schema"]


def reader_schema(config: SchemaConfig) -> AvroSchema | None:
    """The reader schema (None: writer fields are read by name), or a ConfigError naming the field and the fix.

    Every column of ``fields`` (but ``registry.type_column``) must be a field of a record of the reader schema:
    a column no reader record has would be null in every event."""
    registry = config.registry
    path = None if registry is None else registry.reader_schema_file
    reader = config.avro_schema
    if path is not None:
        try:
            reader = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"schema.registry.reader_schema_file: cannot read {path}: {error.strerror}") from None
        except ValueError as error:
            raise ConfigError(f"schema.registry.reader_schema_file: {path} is not JSON: {error}") from None
    if reader is None:
        return None
    label = "schema.registry.reader_schema_file" if path is not None else "schema.avro_schema"
    try:
        fastavro.parse_schema(reader)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
        raise ConfigError(f"{label} is not a valid Avro schema: {error}") from None
    records = reader_records(reader)
    if not records:
        raise ConfigError(f"{label}: the reader schema must be a record, or a union of records (one per event type)")
    named = {field["name"] for record in records for field in record["fields"]}
    type_column = None if registry is None else registry.type_column
    unread = sorted(name for name in config.fields if name not in named and name != type_column)
    if unread:
        raise ConfigError(
            f"schema.fields {unread} are in no record of the reader schema ({label}); its fields are "
            f"{sorted(named)}: add them to the reader schema or remove them from fields"
        )
    _check_column_types(config, records, label)
    return reader


#: Avro primitive -> the column types its values convert to
_COLUMN_TYPES = {
    "string": {"string"},
    "enum": {"string"},
    "bytes": {"binary"},
    "fixed": {"binary"},
    "int": {"int64", "timestamp_ms", "float64"},
    "long": {"int64", "timestamp_ms", "float64"},
    "float": {"float64"},
    "double": {"float64"},
    "boolean": {"bool"},
}


def _check_column_types(config: SchemaConfig, records: list[dict[str, Any]], label: str) -> None:
    """A column whose reader field's values cannot convert to its type would make every record a dead letter:
    refused here, naming both types (flat types only; nested ones are converted, or refused, as they come)."""
    for record in records:
        for field in record["fields"]:
            column_type = config.fields.get(field["name"])
            avro_type = _plain_type(field["type"])
            allowed = _COLUMN_TYPES.get(avro_type or "")
            if column_type is not None and allowed is not None and column_type not in allowed:
                raise ConfigError(
                    f"schema.fields.{field['name']}: {column_type}, but {label} has it as {avro_type}, whose values "
                    f"do not convert; use {' or '.join(sorted(allowed))}"
                )


def _plain_type(avro_type: Any) -> str | None:
    """The type of a field's values, a nullable union seen through; None for a union of several types."""
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        return _plain_type(branches[0]) if len(branches) == 1 else None
    if isinstance(avro_type, dict):
        return str(avro_type.get("type"))
    return str(avro_type)
