"""Decoding raw payloads into Arrow record batches, columnar, with bad records split out.

The fast path hands a whole fetch to pyarrow's JSON reader as one newline-delimited buffer. Only when that
fails (an undecodable record, a payload with a newline, a type that does not fit the schema) does the slow path
look at records one by one to tell good from bad; the good ones are then decoded columnar again.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from pipelines.records import RawBatch, dead_letters
from pipelines.schema import EventSchema

__all__ = ["DecodedBatch", "JsonDecoder"]

_NEWLINE = b"\n"


@dataclass(frozen=True)
class DecodedBatch:
    """Valid events (payload + metadata columns) and dead letters (undecodable or invalid, with reasons)."""

    events: pa.RecordBatch
    dead_letters: list[pa.RecordBatch]

    @property
    def dead_letter_count(self) -> int:
        return sum(batch.num_rows for batch in self.dead_letters)


class JsonDecoder:
    """Decodes JSON object payloads to the schema's columns; extra JSON fields are ignored."""

    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema
        self._parse_options = pa_json.ParseOptions(
            explicit_schema=schema.payload_schema, unexpected_field_behavior="ignore"
        )
        self._read_options = pa_json.ReadOptions(use_threads=False, block_size=1 << 22)

    def decode(self, raw: RawBatch) -> DecodedBatch:
        """Decode, attach metadata columns, validate. Never raises for bad records: they become dead letters."""
        payload_table, good_indices, undecodable = self._read(raw)
        rejected = [undecodable] if undecodable is not None else []
        good_raw = raw if good_indices is None else raw.take(good_indices)
        events = self._with_metadata(payload_table, good_raw)
        outcome = self._schema.validate(events)
        if len(outcome.invalid_indices):
            rejected.append(dead_letters(good_raw, outcome.invalid_indices, outcome.invalid_reasons, "invalid"))
            events = events.take(outcome.valid_indices)
        return DecodedBatch(events=events, dead_letters=rejected)

    def _read(self, raw: RawBatch) -> tuple[pa.Table, pa.Array | None, pa.RecordBatch | None]:
        table = self._read_buffer(_ndjson(raw.payloads), len(raw))
        if table is not None:
            return table, None, None
        return self._read_one_by_one(raw)

    def _read_buffer(self, buffer: pa.Buffer | bytes, expected_rows: int) -> pa.Table | None:
        if expected_rows == 0:
            return self._schema.payload_schema.empty_table()
        try:
            table = pa_json.read_json(
                pa.BufferReader(buffer), read_options=self._read_options, parse_options=self._parse_options
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if table.num_rows != expected_rows:
            return None  # an empty or multi-line payload shifted the rows
        return table.select(self._schema.payload_schema.names)

    def _read_one_by_one(self, raw: RawBatch) -> tuple[pa.Table, pa.Array, pa.RecordBatch]:
        good: list[int] = []
        lines: list[bytes] = []
        bad: list[int] = []
        reasons: list[str] = []
        for index, payload in enumerate(raw.payloads.to_pylist()):
            reason, line = _check_record(payload)
            if reason is None:
                good.append(index)
                lines.append(line)
            else:
                bad.append(index)
                reasons.append(reason)
        table = self._read_buffer(_NEWLINE.join(lines), len(lines))
        if table is None:  # valid JSON, but some value does not fit its column's type: find which
            fits = [self._read_buffer(line, 1) is not None for line in lines]
            bad.extend(index for index, ok in zip(good, fits, strict=True) if not ok)
            reasons.extend("a value does not match the schema's column type" for ok in fits if not ok)
            lines = [line for line, ok in zip(lines, fits, strict=True) if ok]
            good = [index for index, ok in zip(good, fits, strict=True) if ok]
            table = self._read_buffer(_NEWLINE.join(lines), len(lines))
            assert table is not None, "records that decode one by one decode together"
        order = np.argsort(np.array(bad, dtype=np.int64), kind="stable")
        rejected = dead_letters(
            raw,
            pa.array(np.array(bad, dtype=np.int64)[order]),
            pa.array(reasons, pa.string()).take(order),
            "undecodable",
        )
        return table, pa.array(good, pa.int64()), rejected

    def _with_metadata(self, table: pa.Table, raw: RawBatch) -> pa.RecordBatch:
        config = self._schema.config
        columns = [table.column(name).combine_chunks() for name in table.column_names]
        timestamps = raw.timestamps
        if config.event_time_field is not None:
            timestamps = pc.coalesce(table.column(config.event_time_field).combine_chunks(), raw.timestamps)
        event_ids = pa.nulls(len(raw), pa.string())
        if config.event_id_field is not None:
            event_ids = pc.cast(table.column(config.event_id_field).combine_chunks(), pa.string())
        metadata = [
            pa.array(np.full(len(raw), raw.partition, dtype=np.int32)),
            raw.offsets,
            timestamps,
            raw.keys,
            raw.traceparents,
            event_ids,
        ]
        return pa.RecordBatch.from_arrays(columns + metadata, schema=self._schema.batch_schema.remove_metadata())


def _ndjson(payloads: pa.Array) -> pa.Buffer:
    """All payloads as one newline-separated buffer, built without a per-record Python loop."""
    if len(payloads) == 0:
        return pa.py_buffer(b"")
    joined = pc.binary_join_element_wise(pc.cast(payloads, pa.binary()), pa.scalar(b""), _NEWLINE)
    offsets = joined.buffers()[1]
    start, end = np.frombuffer(offsets, dtype=np.int32)[[joined.offset, joined.offset + len(joined)]]
    return joined.buffers()[2].slice(int(start), int(end - start))


def _check_record(payload: bytes | None) -> tuple[str | None, bytes]:
    """Why one record cannot be decoded (None if it can), and the record as a single JSON line."""
    if not payload:
        return "empty or null payload", b""
    try:
        decoded = msgspec.json.decode(payload)
    except msgspec.DecodeError as error:
        return f"undecodable JSON: {error}", b""
    if not isinstance(decoded, dict):
        return f"JSON value is a {type(decoded).__name__}, not an object", b""
    if _NEWLINE in payload:
        return None, msgspec.json.encode(decoded)
    return None, payload
