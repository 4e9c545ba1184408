"""JSON Schema producers' records (the Confluent wire format around JSON) against a real registry: the decoder
asks the registry about each id in a fetch, reads the bodies of JSON schemas, and dead-letters ids of Avro
schemas and ids the registry does not know."""

from __future__ import annotations

import asyncio
import json
import uuid

import pyarrow as pa

from pipelines.config.pipeline import SchemaConfig
from pipelines.config.registry import RegistryConfig
from pipelines.decode.codecs import DecodedBatch
from pipelines.decode.registry_json import RegistryJsonDecoder
from pipelines.decode.schema import EventSchema
from pipelines.examples.order_versions import V1
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegistryClient
from pipelines.schemas.wire_format import framed
from tests.raw_batches import payload_batch

ORDER_SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}, "amount_cents": {"type": "integer"}}}


async def registered(url: str) -> tuple[int, int]:
    """A JSON schema and an Avro schema registered under subjects of their own: their ids."""
    run = uuid.uuid4().hex[:8]
    async with RegistryClient(RegistryConfig(url=url)) as registry:
        json_id = await registry.register(f"json-{run}-value", json.dumps(ORDER_SCHEMA), "JSON")
        avro_id = await registry.register(f"avro-{run}-value", json.dumps(V1))
    return json_id, avro_id


async def decoded(decoder: RegistryJsonDecoder, raw: RawBatch) -> DecodedBatch:
    await decoder.prepare(raw)
    try:
        return decoder.decode(raw)
    finally:
        await decoder.close()


def test_json_schema_records_read_and_other_ids_dead_lettered(schema_registry_url: str) -> None:
    json_id, avro_id = asyncio.run(registered(schema_registry_url))
    unknown_id = max(json_id, avro_id) + 10_000
    payloads = [
        framed(json_id, b'{"order_id": "o1", "amount_cents": 100}'),
        framed(avro_id, b"\x04o2"),
        framed(unknown_id, b"{}"),
        framed(json_id, b'{"order_id": "o3", "amount_cents": 300}'),
    ]
    raw = payload_batch(payloads, topic="orders-json")
    registry = RegistryConfig(url=schema_registry_url)
    config = SchemaConfig(format="json", registry=registry, fields={"order_id": "string", "amount_cents": "int64"})

    result = asyncio.run(decoded(RegistryJsonDecoder(EventSchema(config), registry), raw))

    assert result.events.select(["order_id", "amount_cents"]).to_pylist() == [
        {"order_id": "o1", "amount_cents": 100},
        {"order_id": "o3", "amount_cents": 300},
    ]
    letters = pa.Table.from_batches(result.dead_letters).sort_by("offset").to_pylist()
    assert [(row["offset"], row["error_type"]) for row in letters] == [(1, "schema_mismatch"), (2, "unknown_schema")]
    assert letters[0]["reason"] == f"schema id {avro_id} holds a schema of type AVRO; this input reads JSON"
