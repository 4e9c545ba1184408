"""The pure parts of the Kafka connector: consumer records to RawBatches, Arrow rows to producer records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from pipelines.records import RawBatch

__all__ = [
    "DEAD_LETTER_HEADER_PREFIX",
    "OutgoingRecord",
    "dead_letter_records",
    "encode_rows",
    "raw_batch_from_records",
    "traceparent_of",
]

DEAD_LETTER_HEADER_PREFIX = "eventray."
_NOT_IN_PAYLOAD = ("_key", "_traceparent")


@dataclass(frozen=True)
class OutgoingRecord:
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]


def traceparent_of(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The W3C ``traceparent`` header of a record, if it has a readable one."""
    for name, value in headers or ():
        if name == "traceparent" and value:
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def raw_batch_from_records(topic: str, partition: int, records: Sequence[Any]) -> RawBatch:
    """Columns from aiokafka ``ConsumerRecord`` s of one partition (the per-record loop of the edge)."""
    return RawBatch(
        topic=topic,
        partition=partition,
        offsets=pa.array([record.offset for record in records], pa.int64()),
        payloads=pa.array([record.value for record in records], pa.binary()),
        keys=pa.array([record.key for record in records], pa.binary()),
        timestamps=pa.array([record.timestamp for record in records], pa.int64()),
        traceparents=pa.array([traceparent_of(record.headers) for record in records], pa.string()),
    )


def encode_rows(
    rows: pa.Table | pa.RecordBatch, key_column: str | None, by_source_partition: bool, partitions: int
) -> list[OutgoingRecord]:
    """One JSON record per row. ``_key``/``_traceparent`` become the key (when no key column) and a header."""
    encoder = msgspec.json.Encoder()
    payload_columns = [name for name in rows.column_names if name not in _NOT_IN_PAYLOAD]
    values = rows.select(payload_columns).to_pylist()
    keys = _column(rows, key_column) if key_column else _column(rows, "_key")
    traceparents = _column(rows, "_traceparent")
    sources = _column(rows, "_partition") if by_source_partition else [None] * rows.num_rows
    return [
        OutgoingRecord(
            value=encoder.encode(value),
            key=None if key is None else (key if isinstance(key, bytes) else str(key).encode()),
            partition=None if source is None else int(source) % partitions,
            headers=[] if trace is None else [("traceparent", trace.encode("ascii"))],
        )
        for value, key, trace, source in zip(values, keys, traceparents, sources, strict=True)
    ]


def dead_letter_records(dead: pa.RecordBatch, pipeline: str) -> list[OutgoingRecord]:
    """Dead letters keep their original key and bytes; where and why they failed goes into headers."""
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
        records.append(OutgoingRecord(value=row["payload"], key=row["key"], partition=None, headers=headers))
    return records


def _column(rows: pa.Table | pa.RecordBatch, name: str) -> list[Any]:
    index = rows.schema.get_field_index(name)
    return [None] * rows.num_rows if index < 0 else rows.column(index).to_pylist()
