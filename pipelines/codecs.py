"""Decoding raw payloads into Arrow record batches, columnar, with bad records split out.

The fast path hands a whole fetch to pyarrow's JSON reader as one newline-delimited buffer, but only after a
columnar guard (:func:`_one_object_per_line`) has shown that every payload is valid UTF-8 and one line shaped
like one JSON object. pyarrow's reader must not see anything else: it segfaults on a leading top-level ``null``
(apache/arrow#47409, pyarrow 26), reads a ``null`` line as a row of nulls, skips empty lines (shifting rows
onto the wrong offsets) and does not check UTF-8. When the guard or the reader fails (an undecodable record, a
payload with a newline, a type that does not fit the schema), the slow path looks at records one by one to
tell good from bad; the good ones are then decoded columnar again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from pipelines.records import RawBatch, dead_letters
from pipelines.schema import EventSchema

__all__ = ["DecodedBatch", "Decoder", "JsonDecoder", "validated", "with_metadata"]

_NEWLINE = b"\n"
_JSON_WHITESPACE = " \t\r\n"
_TYPE_MISMATCH = "a value does not match the schema's column type"

_Rejection = tuple[int, str, str]  # record index, error type, reason


@dataclass(frozen=True)
class DecodedBatch:
    """Valid events (payload + metadata columns) and dead letters (undecodable or invalid, with reasons)."""

    events: pa.RecordBatch
    dead_letters: list[pa.RecordBatch]

    @property
    def dead_letter_count(self) -> int:
        return sum(batch.num_rows for batch in self.dead_letters)


class Decoder(Protocol):
    """Turns a fetch into valid events and dead letters. Contract: never raises for a bad record."""

    def decode(self, raw: RawBatch) -> DecodedBatch: ...


class JsonDecoder:
    """Decodes JSON object payloads to the schema's columns; extra JSON fields are ignored.

    A record is a dead letter of error type ``undecodable`` when it is not one JSON object in valid UTF-8, and
    ``invalid`` when a value does not fit its column's type or the schema's rules (required, checks) reject it.
    The verdict on a record does not depend on the other records of its batch.
    """

    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema
        self._parse_options = _parse_options(schema.payload_schema)
        self._column_parse_options = {field.name: _parse_options(pa.schema([field])) for field in schema.payload_schema}
        self._read_options = pa_json.ReadOptions(use_threads=False, block_size=1 << 22)

    def decode(self, raw: RawBatch) -> DecodedBatch:
        """Decode, attach metadata columns, validate. Never raises for bad records: they become dead letters."""
        payload_table, good_indices, rejected = self._read(raw)
        good_raw = raw if good_indices is None else raw.take(good_indices)
        return validated(self._schema, payload_table, good_raw, rejected)

    def _read(self, raw: RawBatch) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
        """The payload columns of the decodable records, their indices in ``raw`` (None: all), dead letters."""
        lines = _one_object_per_line(raw.payloads)
        if lines is not None:
            table = self._read_lines(_ndjson(lines), len(raw))
            if table is not None:
                return table, None, []
        return self._read_one_by_one(raw)

    def _read_lines(self, buffer: pa.Buffer | bytes, expected_rows: int) -> pa.Table | None:
        """Read ``buffer``, which must hold one JSON object per line (see the module docstring); None if it
        does not fit the schema or yields a number of rows other than ``expected_rows``."""
        if expected_rows == 0:
            return self._schema.payload_schema.empty_table()
        table = _read_json(buffer, self._read_options, self._parse_options)
        if table is None or table.num_rows != expected_rows:
            return None  # with the guard, a line yields at least one row, so an equal count means one each
        return table.select(self._schema.payload_schema.names)

    def _read_one_by_one(self, raw: RawBatch) -> tuple[pa.Table, pa.Array, list[pa.RecordBatch]]:
        good, lines, rejected = _split_decodable(raw.payloads)
        table = self._read_lines(_NEWLINE.join(lines), len(lines))
        if table is None:  # JSON objects, but some value does not fit its column's type: find which
            fits = [self._read_lines(line, 1) is not None for line in lines]
            rejected += [
                (index, "invalid", self._mismatch_reason(line))
                for index, line, fit in zip(good, lines, fits, strict=True)
                if not fit
            ]
            lines = [line for line, fit in zip(lines, fits, strict=True) if fit]
            good = [index for index, fit in zip(good, fits, strict=True) if fit]
            table = self._read_lines(_NEWLINE.join(lines), len(lines))
            assert table is not None, "records that decode one by one decode together"
        return table, pa.array(good, pa.int64()), _dead_letter_batches(raw, rejected)

    def _mismatch_reason(self, line: bytes) -> str:
        """Why pyarrow's reader rejects ``line`` (one JSON object): the first column whose value does not fit the
        column's type, found by reading each column on its own (Arrow's messages are not used: some quote the
        value, and reasons never quote payloads)."""
        for name, options in self._column_parse_options.items():
            if _read_json(line, self._read_options, options) is None:
                return f"{_TYPE_MISMATCH}: {name!r} must be {self._schema.config.fields[name]}"
        return _TYPE_MISMATCH


def validated(schema: EventSchema, payload: pa.Table, raw: RawBatch, rejected: list[pa.RecordBatch]) -> DecodedBatch:
    """Attach the metadata columns to decoded payload columns (row i of ``payload`` is record i of ``raw``),
    then split off the rows the schema's rules reject as ``invalid`` dead letters. Shared by every decoder."""
    events = with_metadata(schema, payload, raw)
    outcome = schema.validate(events)
    if len(outcome.invalid_indices):
        rejected = [*rejected, dead_letters(raw, outcome.invalid_indices, outcome.invalid_reasons, "invalid")]
        events = events.take(outcome.valid_indices)
    return DecodedBatch(events=events, dead_letters=rejected)


def with_metadata(schema: EventSchema, table: pa.Table, raw: RawBatch) -> pa.RecordBatch:
    """The payload columns followed by ``_partition``, ``_offset``, ``_timestamp``, ``_key``, ``_traceparent``,
    ``_event_id`` (DESIGN section 2)."""
    config = schema.config
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
    return pa.RecordBatch.from_arrays(columns + metadata, schema=schema.batch_schema.remove_metadata())


def _parse_options(schema: pa.Schema) -> pa_json.ParseOptions:
    return pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")


def _read_json(
    buffer: pa.Buffer | bytes, read_options: pa_json.ReadOptions, parse_options: pa_json.ParseOptions
) -> pa.Table | None:
    """pyarrow's JSON reader on ``buffer``, or None if it reports invalid input."""
    try:
        return pa_json.read_json(pa.BufferReader(buffer), read_options=read_options, parse_options=parse_options)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _one_object_per_line(payloads: pa.Array) -> pa.Array | None:
    """The payloads as binary, each one line starting with ``{`` and ending with ``}`` (JSON whitespace around
    it trimmed), or None if a payload is null, not valid UTF-8, not shaped so, or spans lines.

    Columnar and cheap (about 0.1 ms for 4096 payloads of 200 bytes). It does not prove that a line holds
    exactly one object (``{} {}`` passes): the reader's row count shows that, as no such line yields zero rows.
    """
    binary = payloads if payloads.type == pa.binary() else pc.cast(payloads, pa.binary())
    if binary.null_count:
        return None
    text = binary.view(pa.string())
    try:
        text.validate(full=True)  # checks UTF-8, which pyarrow's JSON reader does not
    except pa.ArrowInvalid:
        return None
    if _each_is_one_braced_line(text):
        return binary
    trimmed = pc.ascii_trim(text, characters=_JSON_WHITESPACE)
    return trimmed.view(pa.binary()) if _each_is_one_braced_line(trimmed) else None


def _each_is_one_braced_line(text: pa.Array) -> bool:
    braced = pc.all(pc.and_(pc.starts_with(text, "{"), pc.ends_with(text, "}")), min_count=0).as_py()
    return bool(braced) and not bool((np.frombuffer(_values(text), dtype=np.uint8) == ord(_NEWLINE)).any())


def _values(array: pa.Array) -> pa.Buffer:
    """The bytes of all values of a (non-large) string or binary array, back to back, without copying."""
    data = array.buffers()[2]
    if data is None:
        return pa.py_buffer(b"")
    start, end = np.frombuffer(array.buffers()[1], dtype=np.int32)[[array.offset, array.offset + len(array)]]
    return data.slice(int(start), int(end - start))


def _ndjson(payloads: pa.Array) -> pa.Buffer:
    """All (binary) payloads as one newline-separated buffer, built without a per-record Python loop."""
    return _values(pc.binary_join_element_wise(payloads, pa.scalar(b""), _NEWLINE))


def _split_decodable(payloads: pa.Array) -> tuple[list[int], list[bytes], list[_Rejection]]:
    """Indices and single-line JSON of the records that are JSON objects, and the rejections of the rest."""
    good: list[int] = []
    lines: list[bytes] = []
    rejected: list[_Rejection] = []
    for index, payload in enumerate(payloads.to_pylist()):
        reason, line = _check_record(payload)
        if reason is None:
            good.append(index)
            lines.append(line)
        else:
            rejected.append((index, "undecodable", reason))
    return good, lines, rejected


def _check_record(payload: bytes | None) -> tuple[str | None, bytes]:
    """Why one record cannot be decoded (None if it can), and the record as a single JSON line."""
    if not payload:
        return "empty or null payload", b""
    if not _is_utf8(payload):  # checked here: the reason is eventray's, whatever msgspec's version says
        return "payload is not valid UTF-8", b""
    try:
        decoded = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:  # the library's detail only as a suffix
        return f"undecodable JSON: {error}", b""
    if not isinstance(decoded, dict):
        return f"JSON value is a {type(decoded).__name__}, not an object", b""
    if _NEWLINE in payload:
        return None, msgspec.json.encode(decoded)
    return None, payload


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _dead_letter_batches(raw: RawBatch, rejected: list[_Rejection]) -> list[pa.RecordBatch]:
    """One dead-letter batch per error type, its rows in offset order."""
    batches = []
    for error_type in sorted({error_type for _, error_type, _ in rejected}):
        picked = sorted((index, reason) for index, kind, reason in rejected if kind == error_type)
        indices = pa.array([index for index, _ in picked], pa.int64())
        batches.append(dead_letters(raw, indices, pa.array([reason for _, reason in picked], pa.string()), error_type))
    return batches
