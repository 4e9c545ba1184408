"""The type syntax of ``schema.fields``: nested types parsed at config load, written one way, refused with the
field's path and the fix."""

from __future__ import annotations

from typing import Any, get_args

import pyarrow as pa
import pytest

from pipelines.config.field_types import MAX_TYPE_DEPTH, FieldType, arrow_type, canonical_field_type, is_flat
from pipelines.config.pipeline import SchemaConfig, parse_config
from pipelines.config.registry import RegistryConfig
from pipelines.decode.schema import EventSchema
from pipelines.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "canonical", "arrow"),
    [
        ("int64", "int64", pa.int64()),
        ("timestamp_ms", "timestamp_ms", pa.int64()),
        ("list<int64>", "list<int64>", pa.list_(pa.int64())),
        (" list <  float64 > ", "list<float64>", pa.list_(pa.float64())),
        ("map<string,float64>", "map<string, float64>", pa.map_(pa.string(), pa.float64())),
        ("map< int64 , bool >", "map<int64, bool>", pa.map_(pa.int64(), pa.bool_())),
        (
            "struct<street:string,zip : string>",
            "struct<street: string, zip: string>",
            pa.struct([("street", pa.string()), ("zip", pa.string())]),
        ),
        (
            "list<struct<sku: string, qty: int64>>",
            "list<struct<sku: string, qty: int64>>",
            pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64())])),
        ),
        (
            "struct<\n  tags: map<string, list<binary>>,\n  straße: timestamp_ms\n>",
            "struct<tags: map<string, list<binary>>, straße: timestamp_ms>",
            pa.struct([("tags", pa.map_(pa.string(), pa.list_(pa.binary()))), ("straße", pa.int64())]),
        ),
    ],
)
def test_types_parse_whitespace_tolerant_and_are_written_one_way(text: str, canonical: str, arrow: pa.DataType) -> None:
    assert canonical_field_type(text) == canonical
    assert arrow_type(text) == arrow
    assert canonical_field_type(canonical) == canonical, "the canonical text reads as itself"


def test_the_flat_names_stay_the_flat_literals() -> None:
    assert get_args(FieldType) == ("string", "int64", "float64", "bool", "timestamp_ms", "binary")
    assert all(is_flat(name) for name in get_args(FieldType))
    assert not is_flat("list<int64>")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the type is empty"),
        ("strin", "unknown type 'strin'; types are string, int64"),
        ("List<int64>", "unknown type 'List'"),
        ("list<>", "expected a type name, found '>'"),
        ("list<int64", "expected '>', found the end"),
        ("list<int64>>", "unexpected '>' after the type 'list<int64>'"),
        ("list<int64, string>", "expected '>', found ','"),
        ("map<string>", "expected ',', found '>' (write map<key, value>)"),
        ("map<float64, string>", "map keys are string or int64, not 'float64'"),
        ("map<list<string>, string>", "map keys are string or int64, not 'list'"),
        ("struct<>", "expected a member name"),
        ("struct<a int64>", "expected ':', found 'int64' (write the member as a: <type>)"),
        ("struct<a: int64,>", "expected a member name, found '>'"),
        ("struct<a: int64, a: string>", "struct member 'a' is given twice"),
        ("struct<1a: int64>", "struct member '1a' is not a name"),
        ("struct<zip-code: string>", "struct member 'zip-code' is not a name"),
        ("list<" * (MAX_TYPE_DEPTH + 1) + "int64" + ">" * (MAX_TYPE_DEPTH + 1), "nested more than 32 levels"),
    ],
)
def test_a_wrong_type_names_the_problem_and_how_to_write_one(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. struct<street: string, zip: string>") as caught:
        canonical_field_type(text)
    assert problem in str(caught.value)


def orders(**schema: Any) -> dict[str, Any]:
    return {
        "name": "nested",
        "source": {"type": "generator"},
        "schema": {"fields": {"id": "string", "t": "int64"}, **schema},
        "sinks": [{"type": "console"}],
    }


def test_a_config_with_a_wrong_type_fails_at_load_naming_the_field_path() -> None:
    config = orders(fields={"id": "string", "customer": "struct<address: struct<zip: strng>>"})
    with pytest.raises(ConfigError) as caught:
        parse_config(config, "nested.yaml")
    message = str(caught.value)
    assert "schema.fields.customer: field type 'struct<address: struct<zip: strng>>': unknown type 'strng'" in message


def test_a_loaded_config_holds_canonical_types_and_the_schema_their_arrow_types() -> None:
    config = parse_config(orders(fields={"id": "string", "items": "list< struct<sku:string , qty:int64> >"}))
    assert config.schema_ is not None
    assert config.schema_.fields["items"] == "list<struct<sku: string, qty: int64>>"
    assert EventSchema(config.schema_).payload_schema.field("items").type == pa.list_(
        pa.struct([("sku", pa.string()), ("qty", pa.int64())])
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_time_field": "t"}, "event_time_field 't' must be int64 or timestamp_ms"),
        ({"event_id_field": "t"}, "event_id_field 't' is a struct<a: string>: an event id is a flat column"),
    ],
)
def test_time_and_id_columns_stay_flat(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchemaConfig(fields={"t": "struct<a: string>"}, **changes)


def test_registry_type_column_stays_a_string() -> None:
    with pytest.raises(ValueError, match=r"registry\.type_column 'kind' must be a string column"):
        SchemaConfig(
            format="avro",
            registry=RegistryConfig(url="http://127.0.0.1:1", type_column="kind"),
            fields={"kind": "list<string>"},
        )
