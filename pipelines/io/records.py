"""What moves between stages: raw fetches, decoded batches with their dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["DEAD_LETTER_SCHEMA", "RawBatch", "dead_letters", "empty_dead_letters", "rows_as_dicts"]


@dataclass(frozen=True)
class RawBatch:
    """Undecoded records of one partition, in offset order, as a source fetched them.

    All arrays have the same length. ``timestamps`` are the records' own timestamps in epoch ms (Kafka's
    record timestamp); they may be null. ``keys`` and ``traceparents`` may be null per record.

    ``header_counts`` (int32) and ``header_bytes`` (int64, names and values together) describe each record's
    headers; None when the source has no headers (a null entry: that record has none). ``dropped_traceparents``
    counts the records whose malformed ``traceparent`` the source already replaced by null: a count for the
    whole fetch, so :meth:`take` does not carry it. ``traceparents_checked``: the source validated
    ``traceparents`` already (the Kafka edge does), so decoding does not validate them again.

    ``refusals`` (string) holds, per record, why the source could not read it (an unreadable compressed batch:
    the record has no payload), null for a record read; None when every record was read. A refused record is a
    dead letter with that reason, before any other check.
    """

    topic: str
    partition: int
    offsets: pa.Array
    payloads: pa.Array
    keys: pa.Array
    timestamps: pa.Array
    traceparents: pa.Array
    header_counts: pa.Array | None = None
    header_bytes: pa.Array | None = None
    dropped_traceparents: int = 0
    traceparents_checked: bool = False
    refusals: pa.Array | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def next_offset(self) -> int:
        """The offset to read next in this partition after this batch."""
        return int(self.offsets[-1].as_py()) + 1

    def take(self, indices: pa.Array) -> RawBatch:
        return RawBatch(
            topic=self.topic,
            partition=self.partition,
            offsets=self.offsets.take(indices),
            payloads=self.payloads.take(indices),
            keys=self.keys.take(indices),
            timestamps=self.timestamps.take(indices),
            traceparents=self.traceparents.take(indices),
            header_counts=None if self.header_counts is None else self.header_counts.take(indices),
            header_bytes=None if self.header_bytes is None else self.header_bytes.take(indices),
            traceparents_checked=self.traceparents_checked,
            refusals=None if self.refusals is None else self.refusals.take(indices),
        )


#: One row per event that could not be processed, with its original bytes; reasons never quote payloads.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("payload", pa.binary()),
        pa.field("traceparent", pa.string()),
    ]
)


def dead_letters(raw: RawBatch, indices: pa.Array, reasons: pa.Array, error_type: str) -> pa.RecordBatch:
    """Dead-letter rows for the records of ``raw`` at ``indices``, each with its reason. Only the columns a dead
    letter keeps are taken."""
    count = len(indices)
    return pa.RecordBatch.from_arrays(
        [
            reasons,
            pa.array([error_type] * count, pa.string()),
            pa.array([raw.topic] * count, pa.string()),
            pa.array(np.full(count, raw.partition, dtype=np.int32)),
            raw.offsets.take(indices),
            raw.keys.take(indices),
            raw.payloads.take(indices),
            raw.traceparents.take(indices),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def empty_dead_letters() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=DEAD_LETTER_SCHEMA)


def rows_as_dicts(rows: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """One dict per row, for the encoders of outputs (JSON, Avro): nested values as dicts and lists, a map value
    as a dict (``{"k": 1}``, as JSON writes an object; pyarrow's default is a list of pairs). A map holding a key
    twice, which eventray's decoders never make, keeps the last value (with a warning)."""
    records: list[dict[str, Any]] = rows.to_pylist(maps_as_pydicts="lossy")
    return records
