"""Avro and raw-bytes decoding: valid records become columns, bad ones dead letters with the original bytes."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from pipelines.config.pipeline import SchemaConfig
from pipelines.decode.binary_codecs import AvroDecoder, RawBytesDecoder
from pipelines.decode.schema import EventSchema
from pipelines.errors import ConfigError
from pipelines.io.records import RawBatch

WRITER = {
    "type": "record",
    "name": "OrderCreated",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "customer_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "event_time_ms", "type": "long"},
    ],
}
SCHEMA = SchemaConfig(
    format="avro",
    avro_schema=WRITER,
    fields={"event_id": "string", "customer_id": "string", "amount_cents": "int64", "event_time_ms": "int64"},
    required=["event_id"],
    checks=["amount_cents >= 0"],
    event_time_field="event_time_ms",
    event_id_field="event_id",
)


def avro(record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(WRITER), record)
    return buffer.getvalue()


def raw_batch(payloads: list[bytes | None]) -> RawBatch:
    count = len(payloads)
    return RawBatch(
        topic="orders",
        partition=3,
        offsets=pa.array(range(100, 100 + count), pa.int64()),
        payloads=pa.array(payloads, pa.binary()),
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )


def test_avro_records_become_columns_with_metadata() -> None:
    first = {"event_id": "e1", "customer_id": "c1", "amount_cents": 500, "event_time_ms": 1_000}
    second = {"event_id": "e2", "customer_id": "c2", "amount_cents": 700, "event_time_ms": 2_000}

    decoded = AvroDecoder(EventSchema(SCHEMA), WRITER).decode(raw_batch([avro(first), avro(second)]))

    assert decoded.dead_letter_count == 0
    rows = decoded.events.to_pylist()
    assert [(row["event_id"], row["amount_cents"], row["_offset"], row["_timestamp"]) for row in rows] == [
        ("e1", 500, 100, 1_000),
        ("e2", 700, 101, 2_000),
    ]
    assert {row["_event_id"] for row in rows} == {"e1", "e2"}


def test_bad_avro_records_are_dead_letters_with_their_bytes() -> None:
    good = avro({"event_id": "e1", "customer_id": "c1", "amount_cents": 5, "event_time_ms": 1})
    negative = avro({"event_id": "e2", "customer_id": "c1", "amount_cents": -5, "event_time_ms": 1})
    truncated = good[:3]

    decoded = AvroDecoder(EventSchema(SCHEMA), WRITER).decode(raw_batch([truncated, good, None, negative]))

    assert decoded.events.column("event_id").to_pylist() == ["e1"]
    dead = [row for batch in decoded.dead_letters for row in batch.to_pylist()]
    by_offset = {row["offset"]: row for row in dead}
    assert set(by_offset) == {100, 102, 103}
    assert by_offset[100]["payload"] == truncated and by_offset[100]["error_type"] == "undecodable"
    assert by_offset[102]["error_type"] == "undecodable"
    assert by_offset[103]["error_type"] == "invalid" and "amount_cents >= 0" in by_offset[103]["reason"]


def test_an_invalid_avro_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="avro_schema"):
        AvroDecoder(EventSchema(SCHEMA), {"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})


def test_raw_bytes_pass_through_unchanged() -> None:
    schema = EventSchema(SchemaConfig(format="raw", fields={"value": "binary"}))

    decoded = RawBytesDecoder(schema).decode(raw_batch([b"\x00\xff", b"", None]))

    assert decoded.events.column("value").to_pylist() == [b"\x00\xff", b"", None]
    assert decoded.events.column("_offset").to_pylist() == [100, 101, 102]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": "avro"}, "avro_schema goes with format: avro"),
        ({"format": "json", "avro_schema": WRITER}, "avro_schema goes with format: avro"),
        ({"format": "raw"}, "write fields: {value: binary}"),
    ],
)
def test_format_and_schema_must_fit(overrides: dict[str, Any], message: str) -> None:
    data = {"fields": {"event_id": "string"}, **overrides}
    with pytest.raises(ValueError, match=message):
        SchemaConfig.model_validate(data)


def test_an_avro_value_that_does_not_fit_its_column_is_a_dead_letter_not_a_crash() -> None:
    union_writer = {**WRITER, "fields": [
        {"name": "event_id", "type": "string"}, {"name": "customer_id", "type": ["long", "string"]},
    ]}  # fmt: skip
    schema = SchemaConfig(
        format="avro", avro_schema=union_writer, fields={"event_id": "string", "customer_id": "int64"}
    )

    def encoded(record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(union_writer), record)
        return buffer.getvalue()

    textual, numeric = encoded({"event_id": "e1", "customer_id": "c-1"}), encoded({"event_id": "e2", "customer_id": 17})

    decoded = AvroDecoder(EventSchema(schema), union_writer).decode(raw_batch([textual, numeric]))

    dead = [row for batch in decoded.dead_letters for row in batch.to_pylist()]
    assert [(row["offset"], row["error_type"]) for row in dead] == [(100, "invalid")]
    assert "does not fit" in dead[0]["reason"] and dead[0]["payload"] == textual
    assert decoded.events.to_pylist()[0]["customer_id"] == 17


def test_a_writer_double_into_an_int64_column_is_refused_before_anything_truncates_it() -> None:
    writer = {"type": "record", "name": "Price", "fields": [{"name": "amount", "type": ["null", "double"]}]}
    config = SchemaConfig(format="avro", avro_schema=writer, fields={"amount": "int64"})

    with pytest.raises(ConfigError, match=r"schema\.fields\.amount: int64, but the schema has it as double.*float64"):
        AvroDecoder(EventSchema(config), writer)
