"""Sinks: where results and dead letters go. They run in the actor that emits (ARCHITECTURE.md section 3).

Contract: ``write`` takes a table or batch and may buffer; ``flush`` makes everything written so far durable
(a file sink's data is on disk); ``close`` flushes and releases files. Sinks are single-threaded.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.config.pipeline import (
    ConsoleSinkConfig,
    DeadLetterConfig,
    JsonlSinkConfig,
    ParquetSinkConfig,
    PipelineConfig,
    SinkConfig,
)
from pipelines.io.records import rows_as_dicts
from pipelines.state.keygroups import crc32_of_strings

__all__ = [
    "ConsoleSink",
    "DeadLetterSink",
    "JsonlSink",
    "ParquetSink",
    "RowWriter",
    "Sink",
    "bucket_file_suffix",
    "bucket_of",
    "clear_previous_output",
    "open_sink",
]

Rows: TypeAlias = "pa.Table | pa.RecordBatch"


class RowWriter(Protocol):
    """What a stage writes its rows to: a sink, or an epoch output that buffers for the barrier."""

    def write(self, rows: Rows) -> None: ...


class Sink(RowWriter, Protocol):
    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per line, in ``<path>/part-<writer>.jsonl``; struct and map values are objects, lists
    arrays."""

    def __init__(self, directory: str, writer: str) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"part-{writer}.jsonl"
        self._file: IO[bytes] = self.path.open("wb")
        self._encoder = msgspec.json.Encoder()

    def write(self, rows: Rows) -> None:
        if rows.num_rows:
            lines = [self._encoder.encode(row) for row in self._rows(rows)]
            self._file.write(b"\n".join(lines) + b"\n")

    def _rows(self, rows: Rows) -> list[dict[str, Any]]:
        return rows_as_dicts(rows)  # nested values as nested JSON, a map as an object

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class DeadLetterSink(JsonlSink):
    """Dead letters as JSONL: the reason, where the record came from, and its original bytes in base64."""

    def _rows(self, rows: Rows) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = rows.to_pylist()
        for record in records:
            for field in ("payload", "key"):
                value = record.pop(field)
                record[f"{field}_base64"] = None if value is None else base64.b64encode(value).decode("ascii")
        return records


class ParquetSink:
    """Parquet files ``<path>/part-<writer>-<n>.parquet``. A Parquet file is readable only once its footer is
    written, so :meth:`flush` closes the current file (durable and readable) and the next write starts the next.

    With ``bucket_by``, rows are kept per bucket until :meth:`flush` (an exactly-once sink flushes once per epoch)
    and written then, one file per bucket (``...-<n>-b<bucket>.parquet``), sorted by the column in row groups of
    :data:`BUCKET_ROW_GROUP_ROWS`: each row group covers a narrow range of keys, so a reader of one key skips the
    others by their statistics."""

    def __init__(self, directory: str, writer: str, bucket_by: str | None = None, buckets: int = 1) -> None:
        self._folder = Path(directory)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._writer_name = writer
        self._bucket_by = bucket_by
        self._buckets = buckets
        self._files = 0
        self.path = self._folder
        self._writer: pq.ParquetWriter | None = None
        self._pending: dict[int, list[pa.Table]] = {}

    def write(self, rows: Rows) -> None:
        if rows.num_rows == 0:
            return
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
        if self._bucket_by is None:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._file(""), table.schema)
            self._writer.write_table(table)
            return
        buckets = bucket_of(table.column(self._bucket_by), self._buckets)
        for bucket in np.unique(buckets).tolist():
            self._pending.setdefault(bucket, []).append(table.filter(pa.array(buckets == bucket)))

    def _file(self, suffix: str) -> Path:
        return self._folder / f"part-{self._writer_name}-{self._files:05d}{suffix}.parquet"

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._files += 1
        if self._pending:
            for bucket, parts in sorted(self._pending.items()):
                rows = pa.concat_tables(parts).sort_by(self._bucket_by)  # stable: a key's rows keep their order
                pq.write_table(rows, self._file(bucket_file_suffix(bucket).removesuffix(".parquet")),
                               row_group_size=BUCKET_ROW_GROUP_ROWS)  # fmt: skip
            self._pending = {}
            self._files += 1

    def close(self) -> None:
        self.flush()


BUCKET_ROW_GROUP_ROWS = 4_096


def bucket_of(values: pa.ChunkedArray | pa.Array, buckets: int) -> npt.NDArray[np.int64]:
    """Each value's bucket: ``zlib.crc32(value as UTF-8 text) % buckets`` (a null is bucket 0)."""
    text = pc.cast(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values, pa.string())
    crcs = crc32_of_strings(pc.fill_null(text, ""))
    bucket: npt.NDArray[np.int64] = (crcs % np.uint32(buckets)).astype(np.int64)
    return bucket


def bucket_file_suffix(bucket: int) -> str:
    """How the files of ``bucket`` end (:class:`ParquetSink` with ``bucket_by``)."""
    return f"-b{bucket:04d}.parquet"


class ConsoleSink:
    """Keeps the top ``top`` rows by ``sort_by`` (or the latest rows) for the driver to print: actors have no
    terminal of their own."""

    def __init__(self, config: ConsoleSinkConfig) -> None:
        self._config = config
        self.latest: pa.Table | None = None

    def write(self, rows: Rows) -> None:
        if rows.num_rows == 0:
            return
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
        if self._config.columns is not None:
            shown = [*self._config.columns, *([self._config.sort_by] if self._config.sort_by else [])]
            table = table.select(list(dict.fromkeys(shown)))
        kept = table if self.latest is None else pa.concat_tables([self.latest, table])
        sort_by = self._config.sort_by
        if sort_by is not None and sort_by in kept.column_names:
            self.latest = kept.sort_by([(sort_by, "descending")]).slice(0, self._config.top)
        else:
            self.latest = kept.slice(max(0, kept.num_rows - self._config.top))

    def preview(self) -> list[dict[str, Any]]:
        return [] if self.latest is None else rows_as_dicts(self.latest)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def clear_previous_output(config: PipelineConfig) -> None:
    """Remove the ``part-*`` files an earlier run left in this pipeline's output directories, for inputs that
    are read again from their start (other files in those directories are left alone)."""
    directories = [sink.path for sink in config.sinks if isinstance(sink, JsonlSinkConfig | ParquetSinkConfig)]
    if isinstance(config.dead_letter, DeadLetterConfig):
        directories.append(config.dead_letter.path)
    for directory in directories:
        for stale in Path(directory).glob("part-*"):
            stale.unlink()


def open_sink(config: SinkConfig | DeadLetterConfig, writer: str) -> Sink:
    """A file or console sink; Kafka sinks live in ``actors.kafka`` (they do I/O with a client)."""
    if isinstance(config, DeadLetterConfig):
        return DeadLetterSink(config.path, writer)
    if isinstance(config, JsonlSinkConfig):
        return JsonlSink(config.path, writer)
    if isinstance(config, ParquetSinkConfig):
        return ParquetSink(config.path, writer, config.bucket_by, config.buckets)
    if isinstance(config, ConsoleSinkConfig):
        return ConsoleSink(config)
    raise TypeError(f"{type(config).__name__} is not a file or console sink")
