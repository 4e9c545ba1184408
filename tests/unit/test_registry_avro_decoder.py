"""Avro in the Confluent wire format: schema ids read column-wise, three writer versions resolved to one reader
(checked against fastavro's own per-record resolution), and each kind of bad record dead-lettered with its type."""

from __future__ import annotations

import datetime
import io
import json
from dataclasses import replace
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from pipelines.config.pipeline import SchemaConfig
from pipelines.config.registry import RegistryConfig
from pipelines.decode.registry_avro import SCHEMA_MISMATCH, UNKNOWN_SCHEMA, RegistryAvroDecoder
from pipelines.decode.schema import EventSchema
from pipelines.errors import ConfigError
from pipelines.examples import order_versions
from pipelines.examples.order_versions import READER, V1, V2, V3
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegisteredSchema
from pipelines.schemas.resolution import plan_reading
from pipelines.schemas.wire_format import NOT_WIRE_FORMAT, framed, schema_ids
from tests.raw_batches import payload_batch

FIELDS: dict[str, Any] = {
    "order_id": "string",
    "customer_id": "string",
    "amount_cents": "int64",
    "currency": "string",
    "channel": "string",
    "placed_ms": "timestamp_ms",
}
IDS = (11, 12, 13)
REGISTRY = RegistryConfig(url="http://127.0.0.1:1")


def schema_config(**changes: Any) -> SchemaConfig:
    base: dict[str, Any] = {
        "format": "avro",
        "avro_schema": READER,
        "registry": REGISTRY,
        "fields": FIELDS,
        "event_time_field": "placed_ms",
        "max_future_ms": None,
    }
    return SchemaConfig(**{**base, **changes})


def decoder(config: SchemaConfig | None = None, unknown: tuple[int, ...] = ()) -> RegistryAvroDecoder:
    config = config or schema_config()
    schema = EventSchema(config)
    assert config.registry is not None
    made = RegistryAvroDecoder(schema, config.registry, config.avro_schema)
    for schema_id, writer in zip(IDS, (V1, V2, V3), strict=True):
        registered = RegisteredSchema(schema_id, json.dumps(writer))
        made.learn(schema_id, plan_reading(registered, config.avro_schema, list(config.fields), None))
    for schema_id in unknown:
        made.learn(schema_id, None)
    return made


def raw_batch(payloads: list[bytes | None]) -> RawBatch:
    return payload_batch(payloads, first_offset=500)


def resolved_by_fastavro(payload: bytes, version: int) -> dict[str, Any]:
    """The reference: fastavro's own writer -> reader resolution of one record, times as epoch ms."""
    body = io.BytesIO(payload[5:])
    record = fastavro.schemaless_reader(body, fastavro.parse_schema((V1, V2, V3)[version - 1]), READER)
    assert isinstance(record, dict)
    placed = record["placed_ms"]
    if isinstance(placed, datetime.datetime):
        record["placed_ms"] = int(placed.timestamp() * 1000)
    return record


def test_schema_ids_are_read_from_the_header_of_every_record() -> None:
    payloads = [framed(7, b"x"), None, b"\x00\x00\x00", b"{json}", framed(2**32 - 1, b""), framed(0, b"\x02")]

    ids = schema_ids(pa.array(payloads, pa.binary()))

    assert ids.tolist() == [7, NOT_WIRE_FORMAT, NOT_WIRE_FORMAT, NOT_WIRE_FORMAT, 2**32 - 1, 0]


def test_schema_ids_of_a_slice_start_at_the_slice() -> None:
    array = pa.array([framed(1, b"a"), framed(2, b"bb"), b"", framed(3, b"")], pa.binary())

    assert schema_ids(array.slice(1, 3)).tolist() == [2, NOT_WIRE_FORMAT, 3]


def test_three_writer_versions_read_as_the_reader_schema_in_offset_order() -> None:
    written = order_versions.records(300, IDS)

    decoded = decoder().decode(raw_batch([payload for _, payload in written]))

    assert decoded.dead_letter_count == 0
    rows = decoded.events.to_pylist()
    expected = [resolved_by_fastavro(payload, version) for version, payload in written]
    assert [{name: row[name] for name in FIELDS} for row in rows] == expected
    assert [row["_offset"] for row in rows] == list(range(500, 800))
    assert {row["channel"] for row in rows[0::3]} == {"web"}  # v1 has no channel: the reader's default
    assert rows[0]["currency"] == "EUR" and rows[0]["customer_id"] == "c000"  # default; customerId via its alias


def test_without_a_reader_schema_writer_fields_are_read_by_name() -> None:
    config = schema_config(
        avro_schema=None, fields={"order_id": "string", "customerId": "string"}, event_time_field=None
    )
    written = order_versions.records(6, IDS)

    decoded = decoder(config).decode(raw_batch([payload for _, payload in written]))

    rows = decoded.events.to_pylist()
    assert [row["customerId"] for row in rows] == ["c000", "c001", None, "c003", "c004", None]  # v3 renamed it


def test_the_type_column_gets_each_writers_record_name() -> None:
    registry = RegistryConfig(url="http://127.0.0.1:1", type_column="event_type")
    config = schema_config(registry=registry, fields={**FIELDS, "event_type": "string"})
    schema = EventSchema(config)
    made = RegistryAvroDecoder(schema, registry, READER)
    made.learn(5, plan_reading(RegisteredSchema(5, json.dumps(V2)), READER, list(config.fields), "event_type"))

    decoded = made.decode(raw_batch([order_versions.encoded(order_versions.order(1, 2), 2, 5)]))

    assert decoded.events.column("event_type").to_pylist() == ["shop.orders.OrderPlaced"]


def test_bad_records_are_dead_letters_with_their_own_error_types() -> None:
    good = order_versions.encoded(order_versions.order(1, 1), 1, IDS[0])
    unknown = order_versions.encoded(order_versions.order(2, 1), 1, 99)
    truncated = good[:9]
    incompatible_id = 21
    made = decoder(unknown=(99,))
    string_amount = {
        **V1,
        "fields": [{**f, "type": "string"} if f["name"] == "amount_cents" else f for f in V1["fields"]],
    }
    registered = RegisteredSchema(incompatible_id, json.dumps(string_amount))
    made.learn(incompatible_id, plan_reading(registered, READER, list(FIELDS), None))
    mismatched = framed(incompatible_id, b"\x00")
    payloads = [good, b'{"order_id": "json"}', unknown, truncated, None, mismatched, good]

    decoded = made.decode(raw_batch(payloads))

    assert decoded.events.column("_offset").to_pylist() == [500, 506]
    letters = pa.Table.from_batches(decoded.dead_letters).sort_by("offset").to_pylist()
    verdicts = [(row["offset"], row["error_type"]) for row in letters]
    assert verdicts == [
        (501, "undecodable"),
        (502, UNKNOWN_SCHEMA),
        (503, "undecodable"),
        (504, "undecodable"),
        (505, SCHEMA_MISMATCH),
    ]
    reasons = {row["offset"]: row["reason"] for row in letters}
    assert "schema id 99 is not in the schema registry" in reasons[502]
    assert "amount_cents" in reasons[505]  # names the field the reader cannot read
    assert letters[0]["payload"] == b'{"order_id": "json"}'  # the original bytes kept


def test_a_writer_the_reader_does_not_name_is_refused_with_both_names() -> None:
    other = {**V1, "name": "OrderCancelled"}
    plan = plan_reading(RegisteredSchema(3, json.dumps(other)), READER, list(FIELDS), None)

    assert plan.refusal is not None
    assert "shop.orders.OrderCancelled" in plan.refusal and "shop.orders.OrderPlaced" in plan.refusal


def test_a_protobuf_schema_is_refused_for_an_avro_input() -> None:
    plan = plan_reading(RegisteredSchema(4, "syntax = 'proto3';", "PROTOBUF"), READER, list(FIELDS), None)

    assert plan.refusal == "schema id 4 holds a schema of type PROTOBUF; this input reads Avro"


def test_decode_before_prepare_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="prepare"):
        decoder().decode(raw_batch([framed(404, b"")]))


def test_values_that_do_not_fit_a_column_are_invalid_not_lost() -> None:
    config = schema_config(
        avro_schema=None, fields={"order_id": "string", "amount_cents": "bool"}, event_time_field=None
    )
    written = order_versions.records(3, IDS)

    decoded = decoder(config).decode(raw_batch([payload for _, payload in written]))

    assert decoded.events.num_rows == 0
    letters = pa.Table.from_batches(decoded.dead_letters)
    assert set(letters.column("error_type").to_pylist()) == {"invalid"}
    assert np.array_equal(np.sort(letters.column("offset").to_numpy()), [500, 501, 502])


def upcasting_decoder(upcasters: str = "pipelines.examples.order_versions:UPCASTERS") -> RegistryAvroDecoder:
    registry = RegistryConfig(url="http://127.0.0.1:1", upcasters=upcasters)
    config = schema_config(registry=registry)
    made = RegistryAvroDecoder(EventSchema(config), registry, READER)
    for version, (schema_id, writer) in enumerate(zip(IDS, (V1, V2, V3), strict=True), start=1):
        plan = plan_reading(RegisteredSchema(schema_id, json.dumps(writer)), READER, list(FIELDS), None)
        made.learn(schema_id, replace(plan, version=version), topic="orders")  # upcasters: plans per topic
    return made


def test_upcasters_change_the_meaning_of_older_versions_only() -> None:
    written = order_versions.records(9, IDS)

    decoded = upcasting_decoder().decode(raw_batch([payload for _, payload in written]))

    channels = decoded.events.column("channel").to_pylist()
    assert channels[0::3] == ["pos"] * 3, "v1 came from the tills"
    assert channels[2::3] == ["web", "app", "web"], "v3 wrote its own"
    assert decoded.events.column("_offset").to_pylist() == list(range(500, 509))


BROKEN_UPCASTERS = {("OrderPlaced", 2): lambda orders: orders.slice(1)}


def test_an_upcaster_that_breaks_its_contract_dead_letters_its_records_only() -> None:
    written = order_versions.records(6, IDS)

    decoded = upcasting_decoder(f"{__name__}:BROKEN_UPCASTERS").decode(raw_batch([p for _, p in written]))

    assert decoded.events.column("_offset").to_pylist() == [500, 502, 503, 505]
    letters = pa.Table.from_batches(decoded.dead_letters).to_pylist()
    assert {(row["offset"], row["error_type"]) for row in letters} == {(501, "upcast"), (504, "upcast")}
    assert letters[0]["reason"] == "upcaster (OrderPlaced, 2) returned 1 rows for 2"


def test_upcasters_that_are_not_a_mapping_of_versions_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"is a function; expected a dict"):
        upcasting_decoder("pipelines.examples.order_versions:v1_from_the_tills")


NESTED_WRITER = {
    "type": "record",
    "name": "Shipment",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "grade", "type": {"type": "enum", "name": "Grade", "symbols": ["A", "B", "C"]}},
        {"name": "box", "type": {"type": "record", "name": "Box", "fields": [{"name": "x", "type": "int"}]}},
    ],
}
NESTED_READER = {
    "type": "record",
    "name": "Shipment",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "grade", "type": {"type": "enum", "name": "Grade", "symbols": ["A", "B", "UNKNOWN"],
                                   "default": "UNKNOWN"}},
        {"name": "box", "type": {"type": "record", "name": "Box", "fields": [
            {"name": "y", "type": "long", "aliases": ["x"]}, {"name": "z", "type": "int", "default": 7}]}},
    ],
}  # fmt: skip


def test_nested_records_and_enum_defaults_resolve_as_fastavro_resolves_them() -> None:
    registry = RegistryConfig(url="http://127.0.0.1:1")
    fields = {"id": "string", "grade": "string", "box": "struct<y: int64, z: int64>"}
    config = SchemaConfig(format="avro", avro_schema=NESTED_READER, registry=registry, fields=fields)
    made = RegistryAvroDecoder(EventSchema(config), registry, NESTED_READER)
    made.learn(8, plan_reading(RegisteredSchema(8, json.dumps(NESTED_WRITER)), NESTED_READER, list(fields), None))
    writer = fastavro.parse_schema(NESTED_WRITER)
    written = [{"id": "s1", "grade": "C", "box": {"x": 42}}, {"id": "s2", "grade": "A", "box": {"x": 1}}]
    payloads: list[bytes] = []
    for record in written:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer, record)
        payloads.append(framed(8, buffer.getvalue()))

    decoded = made.decode(raw_batch(list[bytes | None](payloads)))

    reference = [fastavro.schemaless_reader(io.BytesIO(p[5:]), writer, NESTED_READER) for p in payloads]
    assert decoded.events.select(list(fields)).to_pylist() == reference
    assert reference[0] == {"id": "s1", "grade": "UNKNOWN", "box": {"y": 42, "z": 7}}


def test_upcasters_with_the_type_column_named_event_type_keep_the_full_record_name() -> None:
    registry = RegistryConfig(
        url="http://127.0.0.1:1", type_column="event_type", upcasters="pipelines.examples.order_versions:UPCASTERS"
    )
    config = schema_config(registry=registry, fields={**FIELDS, "event_type": "string"})
    made = RegistryAvroDecoder(EventSchema(config), registry, READER)
    plan = plan_reading(RegisteredSchema(11, json.dumps(V1)), READER, list(config.fields), "event_type")
    made.learn(11, replace(plan, version=1), topic="orders")

    decoded = made.decode(raw_batch([order_versions.encoded(order_versions.order(0, 1), 1, 11)]))

    assert decoded.dead_letter_count == 0
    assert decoded.events.select(["event_type", "channel"]).to_pylist() == [
        {"event_type": "shop.orders.OrderPlaced", "channel": "pos"}
    ]


def test_without_a_reader_schema_a_writer_whose_values_would_truncate_is_refused() -> None:
    doubled = {**V1, "fields": [{**f, "type": "double"} if f["name"] == "amount_cents" else f for f in V1["fields"]]}
    registered = RegisteredSchema(31, json.dumps(doubled))

    plan = plan_reading(registered, None, ["order_id", "amount_cents"], None, {"amount_cents": "int64"})

    assert plan.refusal is not None and "amount_cents: int64, but the schema has it as double" in plan.refusal
