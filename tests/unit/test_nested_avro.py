"""Avro records with nested fields (records, arrays, maps) into nested columns: schemaless and through a
registry (both fit their columns with ``fitted_columns``), strictly: a value pyarrow would convert wrongly (a
double truncated into int64, a string split into a list) is an ``invalid`` dead letter naming where it is."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from pipelines.config.field_types import arrow_type
from pipelines.config.pipeline import SchemaConfig
from pipelines.config.registry import RegistryConfig
from pipelines.decode.binary_codecs import AvroDecoder, fitted_columns
from pipelines.decode.nested_values import misfit_path
from pipelines.decode.registry_avro import RegistryAvroDecoder
from pipelines.decode.schema import EventSchema
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegisteredSchema
from pipelines.schemas.resolution import plan_reading
from pipelines.schemas.wire_format import framed
from tests.raw_batches import payload_batch

MISFIT = "an Avro value does not fit the schema's column types"
ADDRESS = {
    "type": "record",
    "name": "Address",
    "fields": [{"name": "zip", "type": "string"}, {"name": "floor", "type": "double"}],
}
CUSTOMER = {
    "type": "record",
    "name": "Customer",
    "fields": [{"name": "name", "type": "string"}, {"name": "address", "type": ["null", ADDRESS]}],
}
WRITER = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "customer", "type": ["null", CUSTOMER]},
        {"name": "items", "type": {"type": "array", "items": "long"}},
        {"name": "scores", "type": {"type": "map", "values": ["null", "double"]}},
        {"name": "tags", "type": "string"},
    ],
}
FIELDS = {
    "id": "string",
    "customer": "struct<name: string, address: struct<zip: string, floor: float64>>",
    "items": "list<int64>",
    "scores": "map<string, float64>",
}


def avro(record: dict[str, Any], writer: dict[str, Any] = WRITER) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), record)
    return buffer.getvalue()


def order(order_id: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": order_id,
        "customer": {"name": "Ann", "address": {"zip": "10115", "floor": 2.0}},
        "items": [1, 2],
        "scores": {"ü": 1.5, "k": None},
        "tags": "a,b",
    }
    return {**record, **changes}


def raw_batch(payloads: list[bytes]) -> RawBatch:
    return payload_batch(payloads)


def decode(fields: dict[str, str], records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    config = SchemaConfig(format="avro", avro_schema=WRITER, fields=fields, max_future_ms=None)
    decoded = AvroDecoder(EventSchema(config), WRITER).decode(raw_batch([avro(record) for record in records]))
    rows = decoded.events.select(list(fields)).to_pylist(maps_as_pydicts="strict")
    return rows, {row["offset"]: row["reason"] for batch in decoded.dead_letters for row in batch.to_pylist()}


def test_records_arrays_and_maps_become_structs_lists_and_maps_with_nulls_at_every_level() -> None:
    records = [
        order("full"),
        order("null customer", customer=None, items=[], scores={}),
        order("null address", customer={"name": "Bo", "address": None}),
        order("big", items=list(range(10_000)), scores={f"ключ{index}": float(index) for index in range(100)}),
    ]
    rows, dead = decode(FIELDS, records)
    assert dead == {}
    assert rows == [{name: record[name] for name in FIELDS} for record in records]


def test_an_avro_double_into_an_int64_member_is_a_dead_letter_not_truncated() -> None:
    fields = {**FIELDS, "customer": "struct<name: string, address: struct<zip: string, floor: int64>>"}
    rows, dead = decode(fields, [order("a", customer={"name": "A", "address": None}), order("b")])
    assert [row["id"] for row in rows] == ["a"]
    assert dead == {1: f"{MISFIT}: 'customer' must be {arrow_type(fields['customer'])} (at customer.address.floor)"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tags": "list<string>"}, "'tags' must be list<item: string>"),  # pyarrow would split the string
        ({"id": "struct<a: string>"}, "'id' must be struct<a: string>"),
        ({"scores": "map<int64, float64>"}, "'scores' must be map<int64, double> (at scores[...])"),
        ({"scores": "map<string, bool>"}, "'scores' must be map<string, bool> (at scores[...])"),
        ({"items": "list<float64>", "customer": "list<string>"}, "'customer' must be list<item: string>"),
    ],
)
def test_a_value_of_another_shape_is_an_invalid_dead_letter(fields: dict[str, str], reason: str) -> None:
    rows, dead = decode({**FIELDS, **fields}, [order("a", customer=None, scores={}), order("b")])
    assert dead[1] == f"{MISFIT}: {reason}"
    assert {row["id"] for row in rows} <= {"a"}


def test_misfit_paths_name_members_and_positions_never_keys() -> None:
    kind = arrow_type("map<string, list<struct<a: int64>>>")
    assert misfit_path({"secret": [{"a": 1}, {"a": True}]}, kind) == "[...][1].a"
    assert misfit_path({"secret": [None, {"a": None}, {"b": "extra"}]}, kind) is None
    assert misfit_path([("k", [])], kind) == ""
    assert misfit_path({1: []}, kind) == "[...]"


def test_fitted_columns_sets_aside_nested_misfits_among_flat_ones() -> None:
    schema = pa.schema([pa.field("n", pa.int64()), pa.field("l", arrow_type("list<int64>"))])
    columns: dict[str, list[Any]] = {"n": [1, "x", 3, 4], "l": [[1], [2], "abc", [4, 5.5]]}
    table, good, misfits = fitted_columns(schema, columns, [10, 11, 12, 13])
    assert table.to_pylist() == [{"n": 1, "l": [1]}]
    assert good == [10]
    assert [index for index, _ in misfits] == [11, 12, 13]
    assert misfits[1][1] == f"{MISFIT}: 'l' must be list<item: int64>"
    assert misfits[2][1] == f"{MISFIT}: 'l' must be list<item: int64> (at l[1])"


def test_the_registry_decoder_reads_nested_writer_fields_by_name() -> None:
    config = SchemaConfig(
        format="avro", registry=RegistryConfig(url="http://127.0.0.1:1"), fields=FIELDS, max_future_ms=None
    )
    assert config.registry is not None
    decoder = RegistryAvroDecoder(EventSchema(config), config.registry, None)
    decoder.learn(21, plan_reading(RegisteredSchema(21, json.dumps(WRITER)), None, list(FIELDS), None))
    bad = order("bad", customer={"name": "x", "address": {"zip": "1", "floor": 1.0}})
    fields = {**FIELDS, "customer": "struct<name: string, address: struct<zip: int64>>"}
    strict = SchemaConfig(
        format="avro", registry=RegistryConfig(url="http://127.0.0.1:1"), fields=fields, max_future_ms=None
    )
    assert strict.registry is not None
    strict_decoder = RegistryAvroDecoder(EventSchema(strict), strict.registry, None)
    strict_decoder.learn(21, plan_reading(RegisteredSchema(21, json.dumps(WRITER)), None, list(fields), None))
    payloads = [framed(21, avro(order("a"))), framed(21, avro(bad))]

    decoded = decoder.decode(raw_batch(payloads))
    strictly = strict_decoder.decode(raw_batch(payloads))

    assert decoded.dead_letter_count == 0
    assert decoded.events.column("customer").to_pylist()[0] == order("a")["customer"]
    assert decoded.events.column("scores").to_pylist(maps_as_pydicts="strict")[0] == {"ü": 1.5, "k": None}
    assert strictly.events.num_rows == 0
    reasons = [row["reason"] for batch in strictly.dead_letters for row in batch.to_pylist()]
    assert reasons == [f"{MISFIT}: 'customer' must be {arrow_type(fields['customer'])} (at customer.address.zip)"] * 2
