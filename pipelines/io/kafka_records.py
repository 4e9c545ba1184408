"""The pure parts of the Kafka connector: consumer records to RawBatches, Arrow rows to producer records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.at_rest import sealed_key_id
from pipelines.io.records import RawBatch, rows_as_dicts
from pipelines.io.trace_context import is_valid_traceparent, valid_traceparents

__all__ = [
    "DEAD_LETTER_HEADER_PREFIX",
    "DEFAULT_DEAD_LETTER_RECORD_BYTES",
    "TRIMMED_HEADER",
    "OutgoingRecord",
    "UnreadableBatch",
    "dead_letter_records",
    "encode_rows",
    "raw_batch_from_records",
    "traceparent_of",
]

DEAD_LETTER_HEADER_PREFIX = "eventray."
TRIMMED_HEADER = f"{DEAD_LETTER_HEADER_PREFIX}payload_trimmed"
# Kafka's default max.message.bytes (topic) is 1,048,588 and aiokafka's max_request_size 1,048,576: this leaves
# room for the record batch's framing and the producer's per-record overhead.
DEFAULT_DEAD_LETTER_RECORD_BYTES = 1_000_000
_NOT_IN_PAYLOAD = ("_key", "_traceparent")


@dataclass(frozen=True)
class OutgoingRecord:
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]


_Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class UnreadableBatch:
    """A record batch whose records could not be read (see :mod:`actors.kafka.batch_guard`): it spans the
    offsets from ``first_offset`` up to ``next_offset`` (exclusive); ``reason`` says why (and names them)."""

    first_offset: int
    next_offset: int
    reason: str

    def first_within(self, start: int, end: int) -> int | None:
        """Its first offset within ``[start, end)`` (a reader may start inside a batch), if any."""
        first = max(self.first_offset, start)
        return first if first < min(self.next_offset, end) else None


@dataclass(frozen=True)
class _UnreadRecord:
    """Stands for an unreadable batch: the offset it is known by, and nothing read."""

    offset: int
    value: None = None
    key: None = None
    timestamp: None = None
    headers: tuple[()] = ()


def traceparent_of(headers: _Headers | None) -> str | None:
    """The W3C trace context of a record: its first non-empty ``traceparent`` header, if that is a valid one
    (the rules are in :mod:`pipelines.io.trace_context`), else None; a later header never stands in for a malformed
    first one. A malformed value is never returned, so never used or copied."""
    _, _, text, _ = _header_facts(headers)
    return text if text is not None and is_valid_traceparent(text) else None


def raw_batch_from_records(
    topic: str,
    partition: int,
    records: Sequence[Any],
    unreadable: Sequence[UnreadableBatch] = (),
    offsets: tuple[int, int] = (0, 1 << 62),
) -> RawBatch:
    """Columns from aiokafka ``ConsumerRecord`` s of one partition (the per-record loop of the edge), with the
    records' header counts and sizes for the schema's header limits, valid traceparents only, and the count of
    records whose traceparent was dropped as malformed.

    Each of the ``unreadable`` batches within ``offsets`` (first, end) joins the records, in offset order, as
    one refused record at its first offset there (no payload; the batch's reason, which names its offsets, in
    ``refusals``), so it becomes one dead letter: its records were never read, and a batch of millions of
    empty records must not become millions of rows."""
    refusals = None
    if unreadable:
        reasons = {first: batch.reason for batch in unreadable if (first := batch.first_within(*offsets)) is not None}
        records = sorted([*records, *map(_UnreadRecord, reasons)], key=lambda record: record.offset)
        refusals = pa.array([reasons.get(record.offset) for record in records], pa.string())
    counts, sizes, traceparents, dropped = _header_columns([record.headers for record in records])
    return RawBatch(
        topic=topic,
        partition=partition,
        offsets=pa.array([record.offset for record in records], pa.int64()),
        payloads=pa.array([record.value for record in records], pa.binary()),
        keys=pa.array([record.key for record in records], pa.binary()),
        timestamps=pa.array([record.timestamp for record in records], pa.int64()),
        traceparents=traceparents,
        header_counts=counts,
        header_bytes=sizes,
        dropped_traceparents=dropped,
        traceparents_checked=True,
        refusals=refusals,
    )


def _header_columns(headers: list[_Headers | None]) -> tuple[pa.Array, pa.Array, pa.Array, int]:
    """Per record, its header count (int32), header bytes (int64) and valid traceparent (string); and how many
    traceparents were dropped as malformed. The traceparents are validated as a column, once, as
    :func:`traceparent_of` would one by one: a regex per record would cost more than the rest of the edge."""
    if not any(headers):  # a topic without headers pays one pass
        count = len(headers)
        return pa.array(np.zeros(count, np.int32)), pa.array(np.zeros(count, np.int64)), pa.nulls(count, pa.string()), 0
    counts, sizes, texts, unreadable = zip(*map(_header_facts, headers), strict=True)
    traceparents, refused = valid_traceparents(pa.array(texts, pa.string()))
    return pa.array(counts, pa.int32()), pa.array(sizes, pa.int64()), traceparents, refused + sum(unreadable)


def _header_facts(headers: _Headers | None) -> tuple[int, int, str | None, bool]:
    """A record's header count, header bytes (names in UTF-8 and values), its first non-empty ``traceparent``
    value as text (not yet validated), and whether that value was there but not ASCII (so dropped already).
    One plain loop, without calls: it runs for every record a consumer reads."""
    if not headers:
        return 0, 0, None, False
    size = 0
    first: bytes | None = None
    for name, value in headers:
        size += len(name) if name.isascii() else len(name.encode())
        if value:
            size += len(value)
            if first is None and name == "traceparent":
                first = value
    if first is None:
        return len(headers), size, None, False
    try:
        return len(headers), size, first.decode("ascii"), False
    except UnicodeDecodeError:
        return len(headers), size, None, True


UNROUTED_HEADER = "eventray.unrouted"  # on a row whose topic column named no listed topic: what it named
Rows: TypeAlias = "pa.Table | pa.RecordBatch"


def route_rows(
    rows: Rows, topic: str, topic_column: str | None, topics: Sequence[str]
) -> list[tuple[str, Rows, list[Any] | None]]:
    """``rows`` split by the topic each goes to (a Kafka sink's ``topic_column``): rows whose column names one of
    ``topics`` go there, in their order; the others (null, or naming another) go to ``topic``, with what they
    named (None: nothing), for the :data:`UNROUTED_HEADER`. Routed parts carry None instead of that list."""
    if topic_column is None:
        return [(topic, rows, None)]
    named = pc.cast(rows.column(topic_column), pa.string())  # a column of another type names topics as text
    routed = pc.fill_null(pc.is_in(named, value_set=pa.array(list(topics), pa.string())), False)
    parts: list[tuple[str, Rows, list[Any] | None]] = []
    for route in dict.fromkeys(topics):
        mask = pc.and_(routed, pc.fill_null(pc.equal(named, route), False))
        if pc.any(mask).as_py():
            parts.append((route, rows.filter(mask), None))
    unrouted = pc.invert(routed)
    if pc.any(unrouted).as_py():
        parts.append((topic, rows.filter(unrouted), named.filter(unrouted).to_pylist()))
    return parts


def encode_rows(
    rows: pa.Table | pa.RecordBatch,
    key_column: str | None,
    by_source_partition: bool,
    partitions: int,
    encoded: list[bytes] | None = None,
) -> list[OutgoingRecord]:
    """One JSON record per row (or the row's ``encoded`` value, e.g. Avro). ``_key``/``_traceparent`` become
    the key (when no key column) and a header; a ``_traceparent`` an operator made invalid is not written (a
    malformed one is never copied onto outputs)."""
    if encoded is None:
        encoder = msgspec.json.Encoder()
        payload_columns = [name for name in rows.column_names if name not in _NOT_IN_PAYLOAD]
        encoded = [encoder.encode(value) for value in rows_as_dicts(rows.select(payload_columns))]
    keys = _column(rows, key_column) if key_column else _column(rows, "_key")
    traceparents = _valid_traceparents(rows)
    sources = _column(rows, "_partition") if by_source_partition else [None] * rows.num_rows
    return [
        OutgoingRecord(
            value=value,
            key=None if key is None else (key if isinstance(key, bytes) else str(key).encode()),
            partition=None if source is None else int(source) % partitions,
            headers=[] if trace is None else [("traceparent", trace.encode("ascii"))],
        )
        for value, key, trace, source in zip(encoded, keys, traceparents, sources, strict=True)
    ]


def dead_letter_records(
    dead: pa.RecordBatch, pipeline: str, max_record_bytes: int = DEFAULT_DEAD_LETTER_RECORD_BYTES
) -> list[OutgoingRecord]:
    """Dead letters keep their original key and bytes; where and why they failed goes into headers.

    A record whose key, value and headers would exceed ``max_record_bytes`` (an oversize record, which is often
    why it is a dead letter) keeps only the head of its value that fits, and says so in the header
    ``eventray.payload_trimmed`` (the original value's size in bytes): a dead letter that did not fit its topic
    would fail its produce on every restart and stop the pipeline.
    """
    records = []
    for row in dead.to_pylist():
        headers = [
            (f"{DEAD_LETTER_HEADER_PREFIX}{name}", str(row[field]).encode())
            for name, field in (
                ("reason", "reason"),
                ("error_type", "error_type"),
                ("source.topic", "topic"),
                ("source.partition", "partition"),
                ("source.offset", "offset"),
            )
        ]
        headers.append((f"{DEAD_LETTER_HEADER_PREFIX}pipeline", pipeline.encode()))
        if row["traceparent"]:
            headers.append(("traceparent", row["traceparent"].encode("ascii")))
        value, key = _fitted(row["payload"], row["key"], headers, max_record_bytes)
        records.append(OutgoingRecord(value=value, key=key, partition=None, headers=headers))
    return records


def _fitted(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], max_record_bytes: int
) -> tuple[bytes | None, bytes | None]:
    """``value`` and ``key`` trimmed so the record fits ``max_record_bytes``; ``headers`` gains the trim header."""
    size = _record_bytes(value, key, headers)
    if size <= max_record_bytes:
        return value, key
    original = len(value or b"") + len(key or b"")
    headers.append((TRIMMED_HEADER, str(original).encode()))
    # a sealed value (dead_letter: encrypted) cut short could never be opened: it is left out whole, and the
    # source offset in the headers still finds the event
    value, key = (None if _sealed(value) else value), (None if _sealed(key) else key)
    room = max(0, max_record_bytes - _record_bytes(b"", b"", headers))
    key = None if key is None else key[: room // 2] if value else key[:room]
    value = None if value is None else value[: max(0, room - len(key or b""))]
    return value, key


def _sealed(value: bytes | None) -> bool:
    return value is not None and sealed_key_id(value) is not None


def _record_bytes(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """The bytes a record's parts take (Kafka's own framing adds a few dozen more per record)."""
    return len(value or b"") + len(key or b"") + sum(len(name) + len(data) for name, data in headers)


def _valid_traceparents(rows: pa.Table | pa.RecordBatch) -> list[str | None]:
    """The ``_traceparent`` column with the values an operator made invalid as None (checked columnar)."""
    index = rows.schema.get_field_index("_traceparent")
    if index < 0:
        return [None] * rows.num_rows
    column = rows.column(index)
    valid, _ = valid_traceparents(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    traceparents: list[str | None] = valid.to_pylist()
    return traceparents


def _column(rows: pa.Table | pa.RecordBatch, name: str) -> list[Any]:
    index = rows.schema.get_field_index(name)
    return [None] * rows.num_rows if index < 0 else rows.column(index).to_pylist()
