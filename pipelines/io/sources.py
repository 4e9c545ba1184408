"""Sources: partitioned, offset-addressed inputs read as :class:`~pipelines.io.records.RawBatch` es.

Contract of a :class:`PartitionReader`:

- ``fetch(max_records)`` returns the next records of its partition in offset order, or ``None`` when nothing
  is available *right now*; it may wait briefly for I/O (it is async) but never for long.
- ``end_offset()`` is the partition's current log end (what has arrived), used for lag.
- ``backlog()`` is how many records are known to be waiting to be read (0: caught up), or ``None`` while the
  reader cannot tell yet (a Kafka partition before its first fetch response). A partition may stop holding the
  watermark only while it is caught up (ARCHITECTURE.md section 3): a backlog waiting for its turn is not idleness.
- ``freeze()`` makes the current end the last offset to read: a bounded drain of what has arrived.
- ``exhausted`` is true once the reader has returned everything up to its limit (frozen or bounded input).
- ``position`` is the next offset to read; it is what a checkpoint records.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config.pipeline import FileSourceConfig, GeneratorSourceConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.io.generator import generate_events
from pipelines.io.rate_profile import RateProfile
from pipelines.io.records import RawBatch, rows_as_dicts

__all__ = [
    "FileReader",
    "GeneratorReader",
    "PartitionReader",
    "file_partitions",
    "open_reader",
    "partition_count",
]

WallClock = Callable[[], float]  # seconds since the epoch (the generator releases events by wall time)
_NO_LIMIT = 1 << 62


class PartitionReader(Protocol):
    partition: int

    @property
    def position(self) -> int: ...

    async def fetch(self, max_records: int) -> RawBatch | None: ...

    def end_offset(self) -> int: ...

    def backlog(self) -> int | None: ...

    @property
    def limit_end(self) -> int | None: ...

    async def freeze(self) -> None: ...

    @property
    def exhausted(self) -> bool: ...

    async def close(self) -> None: ...


def _null_columns(count: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    return pa.nulls(count, pa.binary()), pa.nulls(count, pa.int64()), pa.nulls(count, pa.string())


class GeneratorReader:
    """One generator partition. Offsets become available at the configured rate from ``started_at_s``."""

    def __init__(
        self,
        config: GeneratorSourceConfig,
        partition: int,
        position: int,
        limit: int | None,
        started_at_s: float,
        start_time_ms: int,
        clock: WallClock = time.time,
    ) -> None:
        self.partition = partition
        self.position = position
        self._config = config
        self._limit = _NO_LIMIT if limit is None else position + limit
        self._started_at_s = started_at_s
        self._start_time_ms = start_time_ms
        self._clock = clock
        rate = config.rate_per_s
        self._profile = RateProfile(rate / config.partitions, config.bursts) if rate and config.bursts else None

    async def fetch(self, max_records: int) -> RawBatch | None:
        end = min(self.position + max_records, self.end_offset(), self._limit)
        if end <= self.position:
            return None
        events = generate_events(self._config, self.partition, self.position, end - self.position, self._start_time_ms)
        self.position = end
        keys, timestamps, traceparents = _null_columns(len(events.offsets))
        return RawBatch(
            topic="generator",
            partition=self.partition,
            offsets=pa.array(events.offsets),
            payloads=events.payloads,
            keys=keys,
            timestamps=timestamps,
            traceparents=traceparents,
        )

    def end_offset(self) -> int:
        if self._config.rate_per_s is None:
            return self._limit
        per_partition = self._config.rate_per_s / self._config.partitions
        elapsed_s = max(0.0, self._clock() - self._started_at_s)
        arrived = int(self._profile.arrived(elapsed_s) if self._profile else elapsed_s * per_partition)
        return min(arrived, self._limit)

    def backlog(self) -> int:
        """Caught up with the generator's clock (or its limit) when 0."""
        return max(0, min(self.end_offset(), self._limit) - self.position)

    async def freeze(self) -> None:
        self._limit = min(self._limit, max(self.end_offset(), self.position))

    @property
    def exhausted(self) -> bool:
        return self.position >= self._limit

    @property
    def limit_end(self) -> int | None:
        """The offset this reader stops at (a run's ``max_events`` share, or a freeze), None when unbounded."""
        return None if self._limit >= _NO_LIMIT else self._limit

    async def close(self) -> None:
        return None


class FileReader:
    """One file as one partition; the row number is the offset. JSONL lines become payloads; Parquet rows are
    re-encoded as JSON payloads so one decoder and one validation path serve every source."""

    def __init__(self, path: str, file_format: str, partition: int, position: int, limit: int | None) -> None:
        self.partition = partition
        self.position = position
        self._path = path
        self._payloads = _read_payloads(path, file_format)
        if limit is not None:
            self._payloads = self._payloads.slice(0, position + limit)

    async def fetch(self, max_records: int) -> RawBatch | None:
        end = min(self.position + max_records, len(self._payloads))
        if end <= self.position:
            return None
        payloads = self._payloads.slice(self.position, end - self.position)
        offsets = pa.array(np.arange(self.position, end, dtype=np.int64))
        self.position = end
        keys, timestamps, traceparents = _null_columns(len(payloads))
        return RawBatch(self._path, self.partition, offsets, payloads, keys, timestamps, traceparents)

    def end_offset(self) -> int:
        return len(self._payloads)

    def backlog(self) -> int:
        return len(self._payloads) - self.position

    async def freeze(self) -> None:
        return None

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self._payloads)

    @property
    def limit_end(self) -> int:
        return len(self._payloads)

    async def close(self) -> None:
        return None


def _read_payloads(path: str, file_format: str) -> pa.Array:
    if file_format == "parquet":
        import msgspec  # noqa: PLC0415 - only Parquet files need re-encoding

        rows = rows_as_dicts(pq.read_table(path))  # a map as a JSON object, as the JSON decoder reads maps
        return pa.array([msgspec.json.encode(row) for row in rows], pa.binary())
    lines = Path(path).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return pa.array(lines, pa.binary())


def file_partitions(config: FileSourceConfig) -> list[str]:
    """The files of a file source, sorted, one per partition; raise ConfigError if a pattern matches none."""
    files: list[str] = []
    for pattern in config.paths:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise ConfigError(f"source.paths: {pattern!r} matches no file")
        files.extend(matched)
    return files


def partition_count(config: GeneratorSourceConfig | FileSourceConfig) -> int:
    """Partitions of a source known without I/O to a broker (Kafka's are asked of the brokers)."""
    if isinstance(config, GeneratorSourceConfig):
        return config.partitions
    return len(file_partitions(config))


def open_reader(
    config: SourceConfig,
    partition: int,
    position: int,
    limit: int | None,
    started_at_s: float,
    start_time_ms: int,
) -> PartitionReader:
    """A reader for one partition of ``config``, positioned at ``position``."""
    if isinstance(config, GeneratorSourceConfig):
        return GeneratorReader(config, partition, position, limit, started_at_s, start_time_ms)
    if not isinstance(config, FileSourceConfig):
        raise TypeError("Kafka partitions are opened by the actor's Kafka session")
    return FileReader(file_partitions(config)[partition], config.format, partition, position, limit)
