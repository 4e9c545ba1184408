"""How the records of one writer schema become an input's columns: a :class:`ReadPlan` per schema id.

Avro resolves a writer's record to the reader's field by field: a reader field takes the writer field of its
name, or of one of its aliases (a rename), or else its default (a field added since); writer fields the reader
does not have are skipped; ints widen to longs and doubles. The plan does this column-wise: each record is read
with its writer schema only (fastavro's C reader, no per-record resolution), and each column is then taken from
the writer field the reader maps it to, or filled with the default. Whether the writer can be read at all is
decided once per schema id by the Avro resolution rules (:func:`pipelines.schemas.avro_compatibility.check_can_read`);
if not, the plan holds the reason and its records are dead letters.

Logical types are read as their underlying types (``timestamp-millis`` as a long of epoch ms, ``decimal`` as
bytes), the values eventray's columns hold, without fastavro's conversion to Python objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

from pipelines.schemas.avro_compatibility import check_can_read
from pipelines.schemas.registry_client import RegisteredSchema

__all__ = [
    "AvroSchema",
    "ReadPlan",
    "column_type_mismatch",
    "full_name",
    "plan_reading",
    "reader_record_of",
    "reader_records",
    "without_logical_types",
]

AvroSchema = dict[str, Any] | list[Any] | str


@dataclass(frozen=True)
class ReadPlan:
    """Records of schema ``schema_id`` read with ``writer`` (parsed, logical types as underlying types), then
    column ``i`` of the input taken from writer field ``sources[i]`` or, where that is None, set to
    ``defaults[i]``. ``record_name``: the writer's record full name. ``refusal``: why records of this id cannot
    be read into the input (``writer`` is then None). ``version``: the schema's version under the topic's
    subject, when upcasters need it (None: not asked). ``reader``: set (parsed) when a field needs more than a
    column-wise mapping (a nested record, an enum default, a union): each record is then resolved by fastavro
    to the reader record as it is read, and ``sources`` name reader fields."""

    schema_id: int
    writer: Any
    record_name: str | None
    sources: tuple[str | None, ...]
    defaults: tuple[Any, ...]
    refusal: str | None = None
    version: int | None = None
    reader: Any = None


def plan_reading(
    registered: RegisteredSchema,
    reader: AvroSchema | None,
    columns: list[str],
    type_column: str | None,
    column_types: Mapping[str, str] | None = None,
) -> ReadPlan:
    """The plan for one writer schema: ``reader`` (a record, or a union of records; None: each writer field by
    name) and ``columns``, the input's payload columns in order (``type_column`` among them gets the record name).
    Without a reader schema, a writer whose field values do not convert to the column's type (``column_types``,
    the input's ``fields``) is refused: there is no reader schema the gate could have checked."""
    schema_id = registered.id
    writer = _writer_of(registered)
    if isinstance(writer, str):
        return ReadPlan(schema_id, None, None, (), (), refusal=writer)
    writer_schema, parsed = writer
    name = full_name(writer_schema)
    writer_fields = [field["name"] for field in writer_schema["fields"]]
    if reader is None:
        mismatch = column_type_mismatch(writer_schema, column_types or {})
        if mismatch is not None:
            return ReadPlan(schema_id, None, None, (), (), refusal=f"schema id {schema_id}: column {mismatch}")
        sources = tuple(column if column in writer_fields else None for column in columns)
        return ReadPlan(schema_id, parsed, name, sources, (None,) * len(columns))
    record = _reader_record_for(reader, writer_schema)
    if isinstance(record, str):
        return ReadPlan(schema_id, None, None, (), (), refusal=f"schema id {schema_id}: {record}")
    reader_fields = {field["name"]: field for field in record["fields"]}
    writer_types = {field["name"]: field["type"] for field in writer_schema["fields"]}
    source_list: list[str | None] = []
    defaults: list[Any] = []
    column_wise = True
    for column in columns:
        field = reader_fields.get(column)
        source = None if field is None else _writer_field_of(field, writer_fields)
        source_list.append(source)
        defaults.append(None if field is None or source is not None else _default_of(field))
        if field is not None and source is not None:
            column_wise = column_wise and _read_as_written(field["type"], writer_types[source])
    if not column_wise:  # fastavro resolves each record to the reader record: its output has the reader's names
        sources = tuple(column if column in reader_fields else None for column in columns)
        whole = fastavro.parse_schema(without_logical_types(record), expand=True)
        return ReadPlan(schema_id, parsed, name, sources, (None,) * len(columns), reader=whole)
    return ReadPlan(schema_id, parsed, name, tuple(source_list), tuple(defaults))


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def _read_as_written(reader_type: Any, writer_type: Any) -> bool:
    """Whether a writer field's values, as fastavro reads them with the writer schema alone, are the values the
    reader field resolves them to (so a column can take them as they are): the same type, a primitive the
    column converts (int to long or double, string to bytes), an enum whose symbols the reader all has. A
    nested record, array or map of another shape, a named reference or a union of several types is not."""
    reader_plain, writer_plain = without_logical_types(reader_type), without_logical_types(writer_type)
    if json.dumps(reader_plain, sort_keys=True) == json.dumps(writer_plain, sort_keys=True):
        return True
    reader_one, writer_one = _single(reader_plain), _single(writer_plain)
    if isinstance(reader_one, str) and isinstance(writer_one, str):
        return reader_one in _PRIMITIVES and writer_one in _PRIMITIVES
    if isinstance(reader_one, dict) and isinstance(writer_one, dict):
        if reader_one.get("type") == writer_one.get("type") == "enum":
            return set(writer_one.get("symbols", [])) <= set(reader_one.get("symbols", []))
        return json.dumps(reader_one, sort_keys=True) == json.dumps(writer_one, sort_keys=True)
    return False


def _single(avro_type: Any) -> Any:
    """A nullable union's one other branch (``["null", T]`` -> T); any other type as it is."""
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        return branches[0] if len(branches) == 1 else avro_type
    return avro_type


def _writer_of(registered: RegisteredSchema) -> tuple[dict[str, Any], Any] | str:
    """The writer's record schema and its parsed form (logical types as underlying types), or why it is refused."""
    schema_id = registered.id
    if registered.schema_type.upper() != "AVRO":
        return f"schema id {schema_id} holds a schema of type {registered.schema_type}; this input reads Avro"
    try:
        writer_schema = json.loads(registered.schema)
        parsed = fastavro.parse_schema(without_logical_types(writer_schema))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
        return f"writer schema id {schema_id} is not a valid Avro schema: {error}"
    if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
        return f"writer schema id {schema_id} is not a record schema; an event is a record"
    return writer_schema, parsed


def _reader_record_for(reader: AvroSchema, writer_schema: dict[str, Any]) -> dict[str, Any] | str:
    """The reader's record for the writer's (by full name or alias), if the writer's records resolve to it;
    else why not, naming the field path and the rule."""
    name = full_name(writer_schema)
    record = reader_record_of(reader, writer_schema)
    if record is None:
        known = ", ".join(full_name(r) for r in reader_records(reader))
        return f"writer schema {name} is not read by the reader schema (it reads {known})"
    try:
        problems = check_can_read(record, writer_schema)
    except ValueError as error:
        return f"writer schema {name} is not a valid Avro schema: {error}"
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"writer schema {name} cannot be read: {first.path}: {first.message}{more}"
    return record


def reader_record_of(reader: AvroSchema, writer_schema: dict[str, Any]) -> dict[str, Any] | None:
    """The record of ``reader`` that reads the writer's records: of the same full name, or with it as an alias,
    or else of the same name in another namespace (Java's rule, which the registries follow)."""
    name = full_name(writer_schema)
    records = reader_records(reader)
    short = name.rsplit(".", 1)[-1]
    return next((r for r in records if name == full_name(r) or name in _aliases(r)), None) or next(
        (r for r in records if full_name(r).rsplit(".", 1)[-1] == short), None
    )


def reader_records(reader: AvroSchema) -> list[dict[str, Any]]:
    """The record schemas of a reader schema: itself, or the records of a union (other branches ignored)."""
    branches = reader if isinstance(reader, list) else [reader]
    return [branch for branch in branches if isinstance(branch, dict) and branch.get("type") == "record"]


def full_name(record: dict[str, Any]) -> str:
    name = str(record["name"])
    namespace = record.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def without_logical_types(schema: Any) -> Any:
    """``schema`` with every logical type replaced by its underlying type (a long, bytes, a fixed, a string)."""
    if isinstance(schema, list):
        return [without_logical_types(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    if "logicalType" in schema and isinstance(schema.get("type"), str) and schema["type"] != "fixed":
        return schema["type"]
    plain = {key: value for key, value in schema.items() if key not in ("logicalType", "precision", "scale")}
    if "fields" in plain:
        plain["fields"] = [{**field, "type": without_logical_types(field["type"])} for field in plain["fields"]]
    for key in ("items", "values", "type"):
        if isinstance(plain.get(key), dict | list):
            plain[key] = without_logical_types(plain[key])
    return plain


def _aliases(record: dict[str, Any]) -> list[str]:
    namespace = record.get("namespace")
    return [alias if "." in alias or not namespace else f"{namespace}.{alias}" for alias in record.get("aliases", [])]


def _writer_field_of(field: dict[str, Any], writer_fields: list[str]) -> str | None:
    for name in (field["name"], *field.get("aliases", [])):
        if name in writer_fields:
            return str(name)
    return None


def _default_of(field: dict[str, Any]) -> Any:
    """A reader field's default as a column value (bytes defaults are strings of code points in Avro JSON)."""
    default = field.get("default")
    field_type = field["type"]
    first = field_type[0] if isinstance(field_type, list) and field_type else field_type
    plain = first.get("type") if isinstance(first, dict) else first
    if isinstance(default, str) and plain in ("bytes", "fixed"):
        return default.encode("latin-1")
    return default


#: Avro type -> the flat column types its values convert to without loss (Arrow would truncate a double into
#: int64 without a word)
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


_FLAT_COLUMN_TYPES = frozenset({"string", "int64", "float64", "bool", "timestamp_ms", "binary"})


def column_type_mismatch(record: dict[str, Any], fields: Mapping[str, str]) -> str | None:
    """The first column of ``fields`` whose field in ``record`` holds values that do not convert to the column's
    type, said as ``"name: int64, but the schema has it as double ..."``; None when all do. Flat column types
    only: nested ones are checked value by value as they are read."""
    for field in record["fields"]:
        column_type = fields.get(field["name"])
        avro_type = _plain_name(field["type"])
        allowed = _COLUMN_TYPES.get(avro_type or "")
        flat = column_type in _FLAT_COLUMN_TYPES
        if flat and allowed is not None and column_type not in allowed:
            return (
                f"{field['name']}: {column_type}, but the schema has it as {avro_type}, whose values do not "
                f"convert; use {' or '.join(sorted(allowed))}"
            )
    return None


def _plain_name(avro_type: Any) -> str | None:
    """The type name of a field's values, a nullable union seen through; None for a union of several types."""
    single = _single(avro_type)
    if isinstance(single, list):
        return None
    if isinstance(single, dict):
        return str(single.get("type"))
    return str(single)
