"""Avro schema compatibility, decided locally: can data written with one schema be read with another, and does a
new version of a subject's schema keep a Confluent compatibility mode against the versions before it.

:func:`check_can_read` follows the Avro specification's schema resolution rules with the verdicts of Java's
``SchemaCompatibility.checkReaderWriterCompatibility`` (what Confluent Schema Registry and Apicurio run), including
where Java reads the specification in a particular way:

- named types (records, enums, fixed) match by *unqualified* name, or when a reader alias (qualified with the
  reader's namespace unless it has a dot) is the writer's full name: a namespace change alone is compatible;
- a reader union reads a writer type when *any* of its branches does (Java does not stop at the first branch);
- logical types are ignored: only the underlying type counts (``timestamp-millis`` reads ``timestamp-micros``);
- a reader field missing from the writer needs a field ``default`` (an enum default does not stand in for it);
- each pair of named types is compared once, its findings reported at the first path where it occurs (Java
  reports it once too); met again, while still being compared (a recursive type) or after, it adds nothing, so
  recursion terminates and a type used in many places costs one comparison.

Schemas are validated with ``fastavro.parse_schema`` plus the rules where fastavro is more lenient than Java's
parser (names, duplicate fields, nested or duplicate union branches); an invalid schema raises ValueError naming
the problem. A union field's default may be of any branch, as fastavro and Avro 1.12 accept (Avro 1.11 wanted the
first). fastavro has no compatibility checker of its own: it resolves record by record, inside its readers.

Paths (:attr:`Incompatibility.path`) are JSONPath-like, in the reader's field names: ``$`` is the whole schema,
``.name`` a record field, ``[*]`` an array's items, ``.*`` a map's values; union branches add no segment (the
message names the branch). ``$.customer.address.zip`` is the field ``zip`` of ``address`` of ``customer``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal, TypeAlias

import fastavro

__all__ = [
    "ROOT_PATH",
    "AvroSchema",
    "Compatibility",
    "DeployFirst",
    "Direction",
    "Incompatibility",
    "IncompatibilityKind",
    "check_against_versions",
    "check_can_read",
]

AvroSchema: TypeAlias = dict[str, Any] | list[Any] | str
IncompatibilityKind: TypeAlias = Literal[
    "type_mismatch",
    "missing_default",
    "missing_enum_symbols",
    "name_mismatch",
    "fixed_size_mismatch",
    "missing_union_branch",
    "ambiguous_field_alias",
]
DeployFirst: TypeAlias = Literal["consumers", "producers", "no_safe_order"]
Direction: TypeAlias = Literal["backward", "forward"]

ROOT_PATH = "$"
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "enum", "fixed"})
_COMPLEX_KINDS = frozenset({"record", "enum", "fixed", "array", "map"})
#: reader type -> the writer types it reads besides its own (the specification's promotions)
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "long": frozenset({"int"}),
    "float": frozenset({"int", "long"}),
    "double": frozenset({"int", "long", "float"}),
    "bytes": frozenset({"string"}),
    "string": frozenset({"bytes"}),
}
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FASTAVRO_ERRORS = (fastavro.schema.SchemaParseException, ValueError, TypeError, KeyError, AttributeError)


@dataclass(frozen=True)
class Incompatibility:
    """One reason why a reader cannot read what a writer may write.

    ``kind``: the rule broken (Java's ``SchemaIncompatibilityType``, ``missing_default`` being its
    ``READER_FIELD_MISSING_DEFAULT_VALUE``; ``ambiguous_field_alias`` is where Java throws instead: a reader field
    whose name and aliases match several writer fields). ``path``: where, in the module's path format.
    ``message``: one sentence, what the reader expects and what the writer wrote.

    Set only by :func:`check_against_versions` (None from :func:`check_can_read`, where a single pair has no
    deployment to speak of): ``direction`` (``backward``: the new schema reading data of an existing version;
    ``forward``: an existing version reading data of the new schema), ``existing_version`` (the index in the
    ``existing`` list, 0 the oldest) and ``deploy_first``, for the pair of the new schema and that version:

    - ``consumers``: the new schema reads the old data but old readers cannot read new data: upgrade every
      consumer before any producer writes with the new schema;
    - ``producers``: old readers read new data but the new schema cannot read old data: upgrade producers
      first, and consumers only once no record written with the old version is left to read;
    - ``no_safe_order``: neither direction reads the other: no deploy order is safe (use a new subject or
      topic, or evolve in several compatible steps).
    """

    kind: IncompatibilityKind
    path: str
    message: str
    direction: Direction | None = None
    existing_version: int | None = None
    deploy_first: DeployFirst | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Compatibility(str, Enum):
    """Confluent Schema Registry's compatibility modes (the same names in Apicurio)."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


_MODE_DIRECTIONS: Mapping[Compatibility, tuple[Direction, ...]] = {
    Compatibility.NONE: (),
    Compatibility.BACKWARD: ("backward",),
    Compatibility.BACKWARD_TRANSITIVE: ("backward",),
    Compatibility.FORWARD: ("forward",),
    Compatibility.FORWARD_TRANSITIVE: ("forward",),
    Compatibility.FULL: ("backward", "forward"),
    Compatibility.FULL_TRANSITIVE: ("backward", "forward"),
}


def check_can_read(reader: AvroSchema, writer: AvroSchema) -> list[Incompatibility]:
    """Every reason why data written with ``writer`` cannot be read with ``reader``; empty when it can.

    A schema is a parsed JSON value (dict, list, or a type name) or JSON text. Raises ValueError, naming the side
    and the problem, when either schema is not a valid Avro schema. Pure: no I/O, nothing kept between calls."""
    return _ReadabilityCheck(_parse(reader, "reader"), _parse(writer, "writer")).run()


def check_against_versions(
    new: AvroSchema, existing: Sequence[AvroSchema], mode: Compatibility | str
) -> list[Incompatibility]:
    """Every reason why ``new`` may not be registered after ``existing`` (oldest first) under ``mode``; empty
    when it may, as a registry would decide. BACKWARD: ``new`` reads the latest version's data; FORWARD: the
    latest version reads ``new``'s data; FULL: both; the ``_TRANSITIVE`` modes check every version, not only the
    latest; NONE checks nothing. Each finding carries ``direction``, ``existing_version`` and ``deploy_first``.

    Raises ValueError for an unknown mode or an invalid schema among those compared."""
    directions = _MODE_DIRECTIONS[Compatibility(mode)]
    if not directions or not existing:
        return []
    transitive = Compatibility(mode).name.endswith("_TRANSITIVE")
    indexes = range(len(existing)) if transitive else [len(existing) - 1]
    parsed_new = _parse(new, "new")
    found: list[Incompatibility] = []
    for index in indexes:
        found += _check_version(parsed_new, _parse(existing[index], f"existing version {index}"), index, directions)
    return found


def _check_version(
    new: _ParsedSchema, old: _ParsedSchema, index: int, directions: tuple[Direction, ...]
) -> list[Incompatibility]:
    by_direction: dict[Direction, list[Incompatibility]] = {
        "backward": _ReadabilityCheck(reader=new, writer=old).run(),
        "forward": _ReadabilityCheck(reader=old, writer=new).run(),
    }
    deploy_first = _deploy_first(backward_holds=not by_direction["backward"], forward_holds=not by_direction["forward"])
    return [
        replace(finding, direction=direction, existing_version=index, deploy_first=deploy_first)
        for direction in directions
        for finding in by_direction[direction]
    ]


def _deploy_first(backward_holds: bool, forward_holds: bool) -> DeployFirst:
    if backward_holds:
        return "consumers"
    if forward_holds:
        return "producers"
    return "no_safe_order"


@dataclass(frozen=True)
class _ParsedSchema:
    """A validated schema in fastavro's canonical form (full names, later uses of a named type by name), and
    its named types by full name."""

    schema: Any
    named: Mapping[str, Any]


def _parse(schema: AvroSchema, role: str) -> _ParsedSchema:
    named: dict[str, Any] = {}
    try:
        parsed = fastavro.parse_schema(_without_fastavro_markers(_loaded(schema)), named_schemas=named)
    except _FASTAVRO_ERRORS as error:
        raise ValueError(f"the {role} schema is not a valid Avro schema: {_parse_error_text(error)}") from None
    problem = next(_java_parser_violations(parsed), None)
    if problem is not None:
        raise ValueError(f"the {role} schema is not a valid Avro schema: {problem}")
    return _ParsedSchema(parsed, named)


def _loaded(schema: AvroSchema) -> Any:
    """JSON text (an object, array or quoted string) as its value; any other string is a type name (``long``)."""
    if not isinstance(schema, str) or not schema.lstrip().startswith(("{", "[", '"')):
        return schema
    return json.loads(schema)


def _without_fastavro_markers(schema: Any) -> Any:
    """A schema fastavro parsed before is returned as is by parse_schema, its named types left unlisted."""
    if isinstance(schema, dict):
        return {key: value for key, value in schema.items() if not key.startswith("__")}
    if isinstance(schema, list):
        return [_without_fastavro_markers(branch) for branch in schema]
    return schema


def _parse_error_text(error: BaseException) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"its text is not JSON ({error})"
    if isinstance(error, KeyError):
        return f"a schema lacks its required attribute {error.args[0]!r}"
    if isinstance(error, fastavro.schema.UnknownType):
        return f"unknown type or undefined named type {error.name!r}"
    if isinstance(error, TypeError):
        return f"a value has the wrong JSON type, e.g. a 'type' that is not a name, object or array ({error})"
    return str(error)


def _java_parser_violations(schema: Any) -> Iterator[str]:
    """What Java's Schema.Parser refuses and fastavro accepts, in a parsed schema (named types appear once)."""
    if isinstance(schema, list):
        yield from _union_violations(schema)
        for branch in schema:
            yield from _java_parser_violations(branch)
        return
    if not isinstance(schema, dict):
        return
    kind = schema["type"]
    if kind in _NAMED_KINDS and not all(_is_name(part) for part in schema["name"].split(".")):
        yield f"invalid name {schema['name']!r}"
    if kind == "record":
        yield from _record_violations(schema)
    for key in ("items", "values"):
        if kind in ("array", "map") and key in schema:
            yield from _java_parser_violations(schema[key])


def _record_violations(record: dict[str, Any]) -> Iterator[str]:
    seen: set[str] = set()
    for field in record["fields"]:
        name, field_type = field["name"], field["type"]
        where = f"field {name!r} of record {record['name']}"
        if name in seen or not _is_name(name):
            yield f"{where} is {'duplicated' if name in seen else 'not a valid name'}"
        seen.add(name)
        yield from _java_parser_violations(field_type)


def _union_violations(union: list[Any]) -> Iterator[str]:
    seen: set[str] = set()
    for branch in union:
        if isinstance(branch, list):
            yield f"a union {union} holds another union directly"
        key = _branch_key(branch)
        if key in seen:
            yield f"a union {union} has two branches of type {key}"
        seen.add(key)


def _branch_key(branch: Any) -> str:
    if isinstance(branch, dict) and branch.get("type") in _NAMED_KINDS:
        return str(branch["name"])
    if isinstance(branch, dict):
        return _branch_key(branch["type"])
    return str(branch) if isinstance(branch, str) else "union"


def _is_name(text: Any) -> bool:
    return isinstance(text, str) and _AVRO_NAME.match(text) is not None


class _ReadabilityCheck:
    """One comparison of a reader with a writer, remembering the named pairs it has begun to compare."""

    def __init__(self, reader: _ParsedSchema, writer: _ParsedSchema) -> None:
        self._reader = reader
        self._writer = writer
        self._named_pairs_seen: set[tuple[str, str]] = set()

    def run(self) -> list[Incompatibility]:
        return self._check(self._reader.schema, self._writer.schema, ROOT_PATH)

    def _check(self, reader: Any, writer: Any, path: str) -> list[Incompatibility]:
        reader, writer = _resolved(reader, self._reader.named), _resolved(writer, self._writer.named)
        reader_kind, writer_kind = _kind_of(reader), _kind_of(writer)
        if reader_kind == writer_kind:
            return self._check_same_kind(reader, writer, reader_kind, path)
        if writer_kind == "union":
            found = [finding for branch in writer for finding in self._check(reader, branch, path)]
            return [_within_writer_union(finding, writer, path) for finding in found]
        if reader_kind == "union":
            return self._check_reader_union(reader, writer, path)
        if writer_kind in _PROMOTIONS.get(reader_kind, frozenset()):
            return []
        return [_type_mismatch(reader, writer, path)]

    def _check_same_kind(self, reader: Any, writer: Any, kind: str, path: str) -> list[Incompatibility]:
        if kind == "array":
            return self._check(reader["items"], writer["items"], f"{path}[*]")
        if kind == "map":
            return self._check(reader["values"], writer["values"], f"{path}.*")
        if kind == "union":
            unread = [branch for branch in writer if self._check(reader, branch, path)]
            return [_missing_union_branch(reader, _resolved(branch, self._writer.named), path) for branch in unread]
        if kind in _NAMED_KINDS:
            return self._check_named(reader, writer, path)
        return []

    def _check_reader_union(self, reader: list[Any], writer: Any, path: str) -> list[Incompatibility]:
        if any(not self._check(branch, writer, path) for branch in reader):
            return []
        return [_missing_union_branch(reader, writer, path)]

    def _check_named(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[Incompatibility]:
        pair = (reader["name"], writer["name"])
        if pair in self._named_pairs_seen:
            return []  # reported where first met; if still being compared, a recursion readable unless the rest is not
        self._named_pairs_seen.add(pair)
        found = [] if _names_match(reader, writer) else [_name_mismatch(reader, writer, path)]
        if reader["type"] == "fixed" and reader["size"] != writer["size"]:
            found.append(_fixed_size_mismatch(reader, writer, path))
        if reader["type"] == "enum":
            found += _missing_enum_symbols(reader, writer, path)
        if reader["type"] == "record":
            found += self._compare_fields(reader, writer, path)
        return found

    def _compare_fields(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[Incompatibility]:
        writer_fields = {field["name"]: field for field in writer["fields"]}
        found: list[Incompatibility] = []
        for field in reader["fields"]:
            field_path = f"{path}.{field['name']}"
            names = dict.fromkeys([field["name"], *field.get("aliases", [])])
            matches = [writer_fields[name] for name in names if name in writer_fields]
            if len(matches) > 1:
                found.append(_ambiguous_field_alias(field, matches, field_path))
            elif matches:
                found += self._check(field["type"], matches[0]["type"], field_path)
            elif "default" not in field:
                found.append(_missing_default(field, writer, field_path))
        return found


def _resolved(schema: Any, named: Mapping[str, Any]) -> Any:
    """``schema`` with a use of a named type replaced by its definition."""
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        return named[schema]
    if isinstance(schema, dict) and not (schema["type"] in _PRIMITIVES or schema["type"] in _COMPLEX_KINDS):
        return _resolved(schema["type"], named)
    return schema


def _kind_of(schema: Any) -> str:
    """A resolved schema's type: a primitive name, record, enum, fixed, array, map or union."""
    if isinstance(schema, list):
        return "union"
    return str(schema["type"]) if isinstance(schema, dict) else str(schema)


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Java's rule: the same unqualified name, or a reader alias that is the writer's full name."""
    reader_namespace = reader["name"].rpartition(".")[0]
    aliases = {
        alias if "." in alias or not reader_namespace else f"{reader_namespace}.{alias}"
        for alias in reader.get("aliases", [])
    }
    return _short_name(reader) == _short_name(writer) or writer["name"] in aliases


def _short_name(schema: dict[str, Any]) -> str:
    return str(schema["name"]).rpartition(".")[2]


def _described(schema: Any) -> str:
    """A resolved schema in a few words: ``long (timestamp-millis)``, ``record com.shop.Order``, ``union [null,
    string]``, ``array of int``."""
    kind = _kind_of(schema)
    if kind == "union":
        return f"union [{', '.join(_label(branch) for branch in schema)}]"
    if kind in _NAMED_KINDS:
        return f"{kind} {schema['name']}"
    if kind in ("array", "map"):
        return f"{kind} of {_label(schema['items' if kind == 'array' else 'values'])}"
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    return f"{kind} ({logical})" if logical else kind


def _label(schema: Any) -> str:
    """A schema named without resolving it: a type name, a named type's name, or a nested kind."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return str(schema["name"]) if schema.get("type") in _NAMED_KINDS else _described(schema)


def _type_mismatch(reader: Any, writer: Any, path: str) -> Incompatibility:
    expected, written = _described(reader), _described(writer)
    message = f"the reader expects {expected}, but the writer wrote {written}, which Avro does not convert to it"
    return Incompatibility("type_mismatch", path, message)


def _within_writer_union(finding: Incompatibility, union: list[Any], path: str) -> Incompatibility:
    """A finding about one branch of a writer union read by a reader that is not a union, said of the union."""
    if finding.path != path:
        return finding
    return replace(finding, message=f"{finding.message} (a branch of the writer's {_described(union)})")


def _missing_union_branch(reader: list[Any], writer_branch: Any, path: str) -> Incompatibility:
    written, union = _described(writer_branch), _described(reader)
    message = f"the writer may write {written}, which no branch of the reader's {union} reads"
    return Incompatibility("missing_union_branch", path, message)


def _name_mismatch(reader: dict[str, Any], writer: dict[str, Any], path: str) -> Incompatibility:
    aliases = reader.get("aliases", [])
    also = f" (or one of its aliases {aliases})" if aliases else " (and has no alias for it)"
    expected = f"{reader['type']} {_short_name(reader)}{also}"
    message = f"the reader expects {expected}, but the writer wrote {writer['type']} {writer['name']}"
    return Incompatibility("name_mismatch", path, message)


def _fixed_size_mismatch(reader: dict[str, Any], writer: dict[str, Any], path: str) -> Incompatibility:
    expected = f"fixed {reader['name']} of {reader['size']} bytes"
    message = f"the reader expects {expected}, but the writer wrote {writer['size']} bytes"
    return Incompatibility("fixed_size_mismatch", path, message)


def _missing_enum_symbols(reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[Incompatibility]:
    unknown = [symbol for symbol in writer["symbols"] if symbol not in reader["symbols"]]
    if not unknown or reader.get("default") in reader["symbols"]:
        return []
    message = (
        f"the writer may write symbols {unknown} of enum {writer['name']}, which the reader's enum lacks, "
        "and it has no default symbol to read them as"
    )
    return [Incompatibility("missing_enum_symbols", path, message)]


def _missing_default(field: dict[str, Any], writer: dict[str, Any], path: str) -> Incompatibility:
    aliases = field.get("aliases", [])
    also = f" or its aliases {aliases}" if aliases else ""
    message = (
        f"the reader expects field {field['name']!r}, but the writer's record {writer['name']} has no field of "
        f"that name{also}, and the reader field has no default"
    )
    return Incompatibility("missing_default", path, message)


def _ambiguous_field_alias(field: dict[str, Any], matches: list[dict[str, Any]], path: str) -> Incompatibility:
    names = [match["name"] for match in matches]
    message = (
        f"the reader field {field['name']!r} matches the writer fields {names} by name and aliases; it must match one"
    )
    return Incompatibility("ambiguous_field_alias", path, message)
