"""The decoder of JSON records in the Confluent wire format (JSON Schema producers: Confluent's
``KafkaJsonSchemaSerializer``, Apicurio's and Karapace's in their compatible mode).

The registry is asked about each schema id (:class:`~pipelines.schemas.writer_schemas.WriterSchemas`): an id it
does not know is an ``unknown_schema`` dead letter, an id of another kind of schema (Avro, Protobuf) a
``schema_mismatch``; the bodies of the others, past the 5-byte header, are read by the JSON decoder into
``fields`` as any JSON input is (by name; ``required`` and ``checks`` validate them: the JSON Schema itself is
not evaluated per record). Dead letters keep the record's original bytes, header included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.registry import RegistryConfig
from pipelines.decode.codecs import DecodedBatch, JsonDecoder
from pipelines.decode.schema import EventSchema
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegisteredSchema, RegistryClient
from pipelines.schemas.resolution import ReadPlan
from pipelines.schemas.wire_format import HEADER_BYTES
from pipelines.schemas.writer_schemas import WriterSchemas

__all__ = ["RegistryJsonDecoder", "json_plan"]


async def json_plan(client: RegistryClient, registered: RegisteredSchema, topic: str) -> ReadPlan:
    """Records of a JSON schema are read by field name; those of another kind are refused."""
    if registered.schema_type.upper() != "JSON":
        refusal = f"schema id {registered.id} holds a schema of type {registered.schema_type}; this input reads JSON"
        return ReadPlan(registered.id, None, None, (), (), refusal=refusal)
    return ReadPlan(registered.id, None, None, (), ())


class RegistryJsonDecoder:
    def __init__(self, schema: EventSchema, registry: RegistryConfig) -> None:
        self._json = JsonDecoder(schema)
        self._writers = WriterSchemas(registry, json_plan)

    async def prepare(self, raw: RawBatch) -> None:
        await self._writers.prepare(raw)

    async def close(self) -> None:
        await self._writers.close()

    def learn(self, schema_id: int, plan: ReadPlan | None) -> None:
        self._writers.learn(schema_id, plan)

    def decode(self, raw: RawBatch, now_ms: int | None = None) -> DecodedBatch:
        """The records of JSON schemas decoded as JSON, the others dead letters (see the module docstring)."""
        groups, letters = self._writers.sorted_out(raw)
        if not groups:
            return DecodedBatch(self._json.decode(raw.take(pa.array([], pa.int64())), now_ms).events, letters)
        positions = np.sort(np.concatenate([group.positions for group in groups]))
        framed = raw.take(pa.array(positions, pa.int64()))
        payloads = framed.payloads.cast(pa.binary())
        longest = pc.max(pc.binary_length(payloads)).as_py() or HEADER_BYTES
        bodies = pc.binary_slice(payloads, HEADER_BYTES, longest)  # pyarrow 26 fails without a stop
        decoded = self._json.decode(_with_payloads(framed, bodies), now_ms)
        originals = [_with_original_payloads(batch, framed) for batch in decoded.dead_letters]
        return DecodedBatch(decoded.events, [*letters, *originals], decoded.dropped_traceparents)


def _with_payloads(raw: RawBatch, payloads: pa.Array) -> RawBatch:
    return replace(raw, payloads=payloads)


def _with_original_payloads(letters: pa.RecordBatch, framed: RawBatch) -> pa.RecordBatch:
    """Dead letters of the bodies, carrying the records' original bytes (header included) instead."""
    positions = pc.index_in(letters.column("offset"), value_set=framed.offsets)
    index = letters.schema.get_field_index("payload")
    field = letters.schema.field(index)
    return letters.set_column(index, field, framed.payloads.take(positions).cast(field.type))
