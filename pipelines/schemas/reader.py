"""The reader schema of an input whose writer schemas are in a registry: ``schema.avro_schema`` or the file
``schema.registry.reader_schema_file``, checked against the input's ``fields`` before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro

from pipelines.config.pipeline import SchemaConfig
from pipelines.errors import ConfigError
from pipelines.schemas.resolution import AvroSchema, column_type_mismatch, reader_records

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
    for record in records:
        mismatch = column_type_mismatch(record, config.fields)
        if mismatch is not None:
            raise ConfigError(f"schema.fields.{mismatch} (in {label})")
    return reader
