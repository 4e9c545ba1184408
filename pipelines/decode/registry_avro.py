"""The decoder of Avro records in the Confluent wire format, their writer schemas in a registry.

Two steps per fetch. :meth:`RegistryAvroDecoder.prepare` (async, in the source's event loop) reads the schema
ids of the fetch (:func:`~pipelines.schemas.wire_format.schema_ids`) and asks the registry, concurrently, for the
ids it has not seen; an unreachable registry is retried until ``registry.unavailable_s``, then the source fails
and recovers (no record is dead-lettered for the registry's fault). :meth:`~RegistryAvroDecoder.decode` then
works on what is known, without I/O: records grouped by schema id, each group read with its writer schema and
mapped column-wise to the input's columns (:mod:`pipelines.schemas.resolution`), the groups put back in offset
order.

Dead letters, each with its own error type: ``undecodable`` (not in the wire format, or a body its writer
schema does not read), ``unknown_schema`` (an id the registry does not know), ``schema_mismatch`` (a writer the
reader schema cannot read: the reason names the field and the rule), ``upcast`` (an upcaster failed on the
records of a type and version, :mod:`pipelines.schemas.upcasters`), ``invalid`` (values that do not fit the
columns, or fail the schema's checks).
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
from fastavro.read import SchemaResolutionError

from pipelines.config.registry import RegistryConfig
from pipelines.decode.binary_codecs import fitted_columns
from pipelines.decode.codecs import DecodedBatch, decode_within_limits
from pipelines.decode.schema import EventSchema
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegisteredSchema, RegistryClient, SchemaNotFound, with_retries
from pipelines.schemas.resolution import AvroSchema, ReadPlan, plan_reading
from pipelines.schemas.subjects import subject_name
from pipelines.schemas.upcasters import UPCAST_ERROR, Upcasters, load_upcasters, upcast_group
from pipelines.schemas.wire_format import HEADER_BYTES
from pipelines.schemas.writer_schemas import SCHEMA_MISMATCH, UNKNOWN_SCHEMA, WriterSchemas, rejected

__all__ = ["SCHEMA_MISMATCH", "UNKNOWN_SCHEMA", "RegistryAvroDecoder"]

_READ_ERRORS = (
    EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError, OverflowError, KeyError, SchemaResolutionError
)  # fmt: skip

log = logging.getLogger(__name__)


class RegistryAvroDecoder:
    """See the module docstring. ``reader``: the reader schema (None: writer fields by name)."""

    def __init__(self, schema: EventSchema, registry: RegistryConfig, reader: AvroSchema | None) -> None:
        self._schema = schema
        self._registry = registry
        self._reader = reader
        self._columns = list(schema.payload_schema.names)
        self._upcasters: Upcasters = {} if registry.upcasters is None else load_upcasters(registry.upcasters)
        self._writers = WriterSchemas(registry, self._plan_of, per_topic=bool(self._upcasters))

    async def prepare(self, raw: RawBatch) -> None:
        """Learn the writer schemas of every schema id in ``raw`` that is not known yet."""
        await self._writers.prepare(raw)

    async def close(self) -> None:
        await self._writers.close()

    def learn(self, schema_id: int, plan: ReadPlan | None, topic: str = "") -> None:
        """Teach the decoder what the registry says of ``schema_id`` (None: it does not know it) without asking
        it: a benchmark's warm cache, a unit test."""
        self._writers.learn(schema_id, plan, topic)

    def decode(self, raw: RawBatch, now_ms: int | None = None) -> DecodedBatch:
        """Screen, decode, attach metadata columns, validate. Never raises for bad records: they become dead
        letters. Every schema id of ``raw`` must have been through :meth:`prepare`."""
        return decode_within_limits(self._schema, raw, now_ms, self._read, json_nesting=False)

    async def _plan_of(self, client: RegistryClient, registered: RegisteredSchema, topic: str) -> ReadPlan:
        fields = self._schema.config.fields
        plan = plan_reading(registered, self._reader, self._columns, self._registry.type_column, fields)
        if not self._upcasters or plan.record_name is None:
            return plan
        version = await self._version_of(client, registered, topic, plan.record_name)
        if version is None:  # the upcasters could not say what its records mean: set aside, never guessed
            subject = subject_name(self._registry.subject_strategy, topic, plan.record_name)
            refusal = (f"schema id {registered.id} is not registered under subject {subject!r}, so its version, "
                       "which the upcasters need, is unknown (check schema.registry.subject_strategy)")  # fmt: skip
            return ReadPlan(registered.id, None, None, (), (), refusal=refusal)
        return replace(plan, version=version)

    async def _version_of(
        self, client: RegistryClient, registered: RegisteredSchema, topic: str, record_name: str
    ) -> int | None:
        """The writer schema's version under the topic's subject (None: not registered there)."""
        subject = subject_name(self._registry.subject_strategy, topic, record_name)
        try:
            found = await with_retries(lambda: client.lookup(subject, registered.schema), self._registry.unavailable_s)
        except SchemaNotFound:
            return None
        return found.version

    def _read(self, raw: RawBatch) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
        groups, letters = self._writers.sorted_out(raw)
        payloads = raw.payloads.to_pylist()
        tables: list[pa.Table] = []
        kept: list[list[int]] = []
        for group in groups:
            table, good, group_letters = self._read_group(raw, payloads, group.positions, group.plan)
            letters.extend(group_letters)
            tables.append(table)
            kept.append(good)
        table, kept_positions = _in_offset_order(self._schema.payload_schema, tables, kept, len(raw))
        return table, kept_positions, letters

    def _read_group(
        self, raw: RawBatch, payloads: list[Any], positions: np.ndarray, plan: ReadPlan
    ) -> tuple[pa.Table, list[int], list[pa.RecordBatch]]:
        """The records of one schema id: read, mapped to the columns, fitted to their types."""
        rows, good, bad = _read_records(payloads, positions.tolist(), plan.writer, plan.reader)
        letters: list[pa.RecordBatch] = []
        if bad:
            reasons = [f"undecodable Avro (schema id {plan.schema_id}): {why}" for _, why in bad]
            letters.append(rejected(raw, np.asarray([position for position, _ in bad]), reasons, "undecodable"))
        columns: dict[str, list[Any]] = {}
        type_column = self._registry.type_column
        for name, source, default in zip(self._columns, plan.sources, plan.defaults, strict=True):
            if name == type_column:
                columns[name] = [plan.record_name] * len(rows)
            elif source is None:
                columns[name] = [default] * len(rows)
            else:
                columns[name] = [row.get(source) for row in rows]
        table, good, misfits = fitted_columns(self._schema.payload_schema, columns, good)
        if misfits:
            letters.append(
                rejected(raw, np.asarray([p for p, _ in misfits]), [reason for _, reason in misfits], "invalid")
            )
        if self._upcasters and plan.version is not None and plan.record_name is not None and good:
            try:
                table = upcast_group(self._upcasters, plan.record_name, plan.version, table)
            except ValueError as error:
                letters.append(rejected(raw, np.asarray(good), str(error), UPCAST_ERROR))
                return self._schema.payload_schema.empty_table(), [], letters
        return table, good, letters


def _read_records(
    payloads: list[Any], positions: list[int], writer: Any, reader: Any
) -> tuple[list[Any], list[int], list[tuple[int, str]]]:
    """The bodies at ``positions`` read with ``writer`` (past the header; resolved to ``reader`` if not None):
    the records, their positions, and the positions that do not read with why. The hot loop of the decoder:
    nothing per record but the read."""
    read = fastavro.schemaless_reader
    rows: list[Any] = []
    append = rows.append
    bad: list[tuple[int, str]] = []
    for position in positions:
        body = io.BytesIO(payloads[position])
        body.seek(HEADER_BYTES)
        try:
            append(read(body, writer, reader))  # a dict: the writer is a record schema (resolution refuses others)
        except _READ_ERRORS as error:
            bad.append((position, type(error).__name__))
    if not bad:
        return rows, positions, []
    unread = {position for position, _ in bad}
    return rows, [position for position in positions if position not in unread], bad


def _in_offset_order(
    payload_schema: pa.Schema, tables: list[pa.Table], kept: list[list[int]], count: int
) -> tuple[pa.Table, pa.Array | None]:
    """The groups' rows merged back into the order of the fetch, and their positions in it (None: all)."""
    if not tables:
        return payload_schema.empty_table(), pa.array([], pa.int64())
    if len(tables) == 1:
        table, positions = tables[0], np.asarray(kept[0], dtype=np.int64)
    else:
        merged = np.concatenate([np.asarray(group, dtype=np.int64) for group in kept])
        order = np.argsort(merged, kind="stable")
        table, positions = pa.concat_tables(tables).take(pa.array(order)), merged[order]
    if len(positions) == count:
        return table, None
    return table, pa.array(positions, pa.int64())
