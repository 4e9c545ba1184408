"""JSON in the Confluent wire format (JSON Schema producers): bodies past the header read as JSON, ids the
registry does not know or of another kind of schema dead-lettered, and every dead letter keeps its original
bytes, header included."""

from __future__ import annotations

import pyarrow as pa

from pipelines.config.pipeline import SchemaConfig
from pipelines.config.registry import RegistryConfig
from pipelines.decode.registry_json import RegistryJsonDecoder
from pipelines.decode.schema import EventSchema
from pipelines.io.records import RawBatch
from pipelines.schemas.resolution import ReadPlan
from pipelines.schemas.wire_format import framed
from tests.raw_batches import payload_batch

REGISTRY = RegistryConfig(url="http://127.0.0.1:1")
CONFIG = SchemaConfig(
    format="json", registry=REGISTRY, fields={"order_id": "string", "amount_cents": "int64"}, required=["order_id"]
)


def decoder() -> RegistryJsonDecoder:
    made = RegistryJsonDecoder(EventSchema(CONFIG), REGISTRY)
    made.learn(1, ReadPlan(1, None, None, (), ()))
    refusal = "schema id 2 holds a schema of type AVRO; this input reads JSON"
    made.learn(2, ReadPlan(2, None, None, (), (), refusal=refusal))
    made.learn(3, None)
    return made


def raw(payloads: list[bytes | None]) -> RawBatch:
    return payload_batch(payloads, topic="orders-json", partition=1, first_offset=10)


def test_bodies_of_known_json_schemas_are_read_and_the_rest_dead_lettered_with_their_bytes() -> None:
    payloads: list[bytes | None] = [
        framed(1, b'{"order_id": "o1", "amount_cents": 5}'),
        framed(2, b'{"order_id": "avro?"}'),
        framed(3, b'{"order_id": "unknown"}'),
        b'{"order_id": "no header"}',
        framed(1, b'{"amount_cents": 7}'),  # required order_id missing
        framed(1, b"not json"),
        framed(1, b'{"order_id": "o2", "amount_cents": 6}'),
    ]

    decoded = decoder().decode(raw(payloads))

    assert decoded.events.select(["order_id", "amount_cents", "_offset"]).to_pylist() == [
        {"order_id": "o1", "amount_cents": 5, "_offset": 10},
        {"order_id": "o2", "amount_cents": 6, "_offset": 16},
    ]
    letters = {row["offset"]: row for row in pa.Table.from_batches(decoded.dead_letters).to_pylist()}
    assert {offset: row["error_type"] for offset, row in letters.items()} == {
        11: "schema_mismatch",
        12: "unknown_schema",
        13: "undecodable",
        14: "invalid",
        15: "undecodable",
    }
    assert all(row["payload"] == payloads[offset - 10] for offset, row in letters.items()), "original bytes"


def test_a_fetch_without_a_readable_schema_has_no_events_and_loses_nothing() -> None:
    decoded = decoder().decode(raw([framed(3, b"{}"), b"{}"]))

    assert decoded.events.num_rows == 0
    assert decoded.dead_letter_count == 2
