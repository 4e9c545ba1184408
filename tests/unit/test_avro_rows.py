"""Rows to Avro in the Confluent wire format (a Kafka sink's ``format: avro``), read back by the registry
decoder; a row the writer schema cannot hold is refused naming its fields, never quoting its values; and the
schemaless decoder reads logical timestamps as the epoch ms a timestamp_ms column holds."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from pipelines.config.pipeline import SchemaConfig
from pipelines.config.registry import RegistryConfig
from pipelines.decode.binary_codecs import AvroDecoder
from pipelines.decode.registry_avro import RegistryAvroDecoder
from pipelines.decode.schema import EventSchema
from pipelines.examples.order_versions import READER, V3
from pipelines.io.avro_rows import AvroEncodingError, AvroRowEncoder, missing_writer_fields
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegisteredSchema
from pipelines.schemas.resolution import plan_reading
from tests.raw_batches import payload_batch

FIELDS: dict[str, Any] = {
    "order_id": "string",
    "customer_id": "string",
    "amount_cents": "int64",
    "placed_ms": "timestamp_ms",
}
ROWS = pa.table(
    {
        "order_id": ["o1", "o2"],
        "customer_id": ["c1", "c2"],
        "amount_cents": [100, 250],
        "placed_ms": [1_700_000_000_000, 1_700_000_000_123],
        "_offset": [7, 8],  # metadata columns are not written
    }
)


def raw(payloads: list[bytes]) -> RawBatch:
    return payload_batch(payloads, topic="out")


def test_rows_written_with_the_schema_id_read_back_with_defaults_filled() -> None:
    encoded = AvroRowEncoder(V3).encode(ROWS, schema_id=42)

    assert all(record[:5] == b"\x00\x00\x00\x00\x2a" for record in encoded)
    config = SchemaConfig(
        format="avro", avro_schema=READER, registry=RegistryConfig(url="http://127.0.0.1:1"),
        fields={**FIELDS, "currency": "string", "channel": "string"}, max_future_ms=None,
    )  # fmt: skip
    decoder = RegistryAvroDecoder(EventSchema(config), RegistryConfig(url="http://127.0.0.1:1"), READER)
    decoder.learn(42, plan_reading(RegisteredSchema(42, json.dumps(V3)), READER, list(config.fields), None))
    rows = decoder.decode(raw(encoded)).events.select([*FIELDS, "currency", "channel"]).to_pylist()
    assert rows == [
        {"order_id": "o1", "customer_id": "c1", "amount_cents": 100, "placed_ms": 1_700_000_000_000,
         "currency": "EUR", "channel": "web"},
        {"order_id": "o2", "customer_id": "c2", "amount_cents": 250, "placed_ms": 1_700_000_000_123,
         "currency": "EUR", "channel": "web"},
    ]  # fmt: skip


def test_a_row_the_schema_cannot_hold_names_the_field_not_the_value() -> None:
    rows = ROWS.set_column(2, "amount_cents", pa.array([100, None], pa.int64()))

    with pytest.raises(AvroEncodingError) as refused:
        AvroRowEncoder(V3).encode(rows, schema_id=1)

    message = str(refused.value)
    assert "row 1" in message and "['amount_cents']" in message and "nullable" in message
    assert "o2" not in message and "c2" not in message


def test_writer_fields_without_default_must_be_columns() -> None:
    assert missing_writer_fields(V3, ["order_id", "customer_id", "amount_cents", "placed_ms"]) == []
    assert missing_writer_fields(V3, ["order_id", "customer_id"]) == ["amount_cents", "placed_ms"]


def test_the_schemaless_decoder_reads_a_logical_timestamp_as_epoch_ms() -> None:
    writer = {"type": "record", "name": "Tick", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}  # fmt: skip
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), {"at": 1_700_000_000_456})
    config = SchemaConfig(format="avro", avro_schema=writer, fields={"at": "timestamp_ms"}, event_time_field="at",
                          max_future_ms=None)  # fmt: skip

    decoded = AvroDecoder(EventSchema(config), writer).decode(raw([buffer.getvalue()]))

    assert decoded.dead_letter_count == 0, "before: every such record was an invalid dead letter"
    assert decoded.events.column("at").to_pylist() == [1_700_000_000_456]
