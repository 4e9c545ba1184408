"""Compressed record batches that cannot be read become dead letters instead of stopping a partition.

A Kafka record batch is compressed as a whole (gzip, snappy, lz4, zstd), so a batch of a few kilobytes can
decompress to gigabytes (a decompression bomb), and a corrupt one cannot be decompressed at all. aiokafka
decompresses a batch with no bound, and when its codec raises, the consumer fetches the same batch again, for
ever: the partition is stuck and the records before it in that fetch are lost.

:func:`install` (once per process, idempotent) makes aiokafka decompress every batch of a guarded partition
within its :class:`BatchGuard`'s cap (``schema.max_decompressed_batch_bytes``): decompressing stops at the cap
plus one byte, and a batch over the cap, or one its codec cannot decompress, is skipped; its offset range is
kept with a reason (:meth:`BatchGuard.take`). The reader turns each such batch into one refused record
(:func:`pipelines.io.kafka_records.raw_batch_from_records`), so it becomes one dead letter with error type
``limit`` whose reason names the batch's offsets; the partition reads on. Partitions no guard watches are
decompressed as aiokafka always did. Not skipped: a batch whose CRC fails (aiokafka fetches it again: it may
be a transfer error), and a record that cannot be parsed in a batch that decompressed (a broken producer: it
still stops its partition, as before).

aiokafka offers no hook for this, so :func:`install` replaces two of its internals, checked against aiokafka
0.14: ``PartitionRecords`` in :mod:`aiokafka.consumer.fetcher` (to see each batch before it is iterated) and the
``*_decode`` codec functions of both record-batch implementations (the C extension and the Python fallback).
Batches of the old message formats (v0/v1, removed in Kafka 4) are not guarded.

The cap bounds one record batch: aiokafka decompresses the batches of a fetch one at a time, as their records
are read. Guards are keyed by topic partition: one consumer per partition in a process (:meth:`BatchGuard.watch`
refuses a second). lz4 and zstd decompress into a buffer of cap + 1 bytes that its thread keeps.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka.record.default_records as python_records
import cramjam
import numpy as np
from aiokafka import TopicPartition, codec
from aiokafka.consumer import fetcher

from pipelines.decode.scratch import scratch
from pipelines.io.kafka_records import UnreadableBatch

__all__ = ["BatchGuard", "install"]

_Decode = Callable[[Any], bytes]
_UNGUARDED = -1  # the cap of a batch no guard watches: aiokafka's own codec, unbounded
_GZIP_WINDOW = 16 + zlib.MAX_WBITS  # a gzip header and trailer around a deflate stream
_CODEC_NAMES = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_XERIAL_HEADER = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"  # xerial snappy-java's framing, v1 (Java's)

_cap: contextvars.ContextVar[int | None] = contextvars.ContextVar("eventray_batch_cap", default=_UNGUARDED)
_guards: dict[TopicPartition, BatchGuard] = {}
_installed = threading.Lock()
_original_partition_records = fetcher.PartitionRecords
_gzip_decode: _Decode = codec.gzip_decode  # aiokafka's codecs, unbounded
_snappy_decode: _Decode = codec.snappy_decode


class _Unreadable(Exception):
    """A batch that cannot be decompressed within its cap; ``reason`` says why, without its bytes."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchGuard:
    """The cap for the batches of the partitions one consumer reads (None: no cap, corrupt batches are still
    skipped), and the offset ranges of the batches it skipped, per partition, until :meth:`take` hands them over."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self._skipped: dict[TopicPartition, list[UnreadableBatch]] = {}

    def watch(self, tps: list[TopicPartition]) -> None:
        """Guard the batches of ``tps``. Raises if another guard watches one of them: its consumer's skipped
        batches would be noted here, and its reader would pass them without dead letters."""
        install()
        taken = [str(tp) for tp in tps if _guards.get(tp, self) is not self]
        if taken:
            raise RuntimeError(f"another consumer in this process guards {', '.join(taken)}: forget them first")
        for tp in tps:
            _guards[tp] = self

    def forget(self, tps: list[TopicPartition]) -> None:
        """Stop watching ``tps``; what was skipped there is still for :meth:`take`."""
        for tp in tps:
            if _guards.get(tp) is self:
                del _guards[tp]

    def take(self, tp: TopicPartition) -> list[UnreadableBatch]:
        """The batches of ``tp`` skipped since the last call, in offset order."""
        return self._skipped.pop(tp, [])

    def note_skipped(self, tp: TopicPartition, batch: UnreadableBatch) -> None:
        """Keep ``batch`` for :meth:`take`, once: a fetch that failed after noting it reads it again."""
        skipped = self._skipped.setdefault(tp, [])
        if all(noted.first_offset != batch.first_offset for noted in skipped):
            skipped.append(batch)


def install() -> None:
    """Route aiokafka's batches and codecs through the guards (see the module docstring); idempotent."""
    with _installed:
        if fetcher.PartitionRecords is _GuardedPartitionRecords:
            return
        fetcher.PartitionRecords = _GuardedPartitionRecords
        for module in _record_modules():
            for name, capped in _CAPPED.items():
                setattr(module, name, capped)


def _record_modules() -> list[Any]:
    """The record-batch implementations: the Python one, and the C extension's where aiokafka was built with it."""
    c_records = sys.modules.get("aiokafka.record._crecords.default_records")
    return [python_records] if c_records is None else [python_records, c_records]


class _GuardedPartitionRecords(_original_partition_records):  # type: ignore[misc, valid-type]
    """aiokafka's ``PartitionRecords``, whose batches of a guarded partition are iterated within its cap."""

    def __init__(self, tp: TopicPartition, records: Any, *rest: Any) -> None:
        guard = _guards.get(tp)
        super().__init__(tp, records if guard is None else _GuardedRecords(records, tp, guard), *rest)


class _GuardedRecords:
    """A fetch's ``MemoryRecords`` whose batches are :class:`_GuardedBatch` es."""

    def __init__(self, records: Any, tp: TopicPartition, guard: BatchGuard) -> None:
        self._records = records
        self._tp = tp
        self._guard = guard

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        return None if batch is None else _GuardedBatch(batch, self._tp, self._guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)


class _GuardedBatch:
    """One record batch, decompressed within the guard's cap when it is iterated. A batch that cannot be
    decompressed so is noted as skipped and yields no record: aiokafka moves its position past the batch."""

    def __init__(self, batch: Any, tp: TopicPartition, guard: BatchGuard) -> None:
        self._batch = batch
        self._tp = tp
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        token = _cap.set(self._guard.cap)
        try:
            return iter(self._batch)  # both implementations decompress the batch here (aiokafka 0.14)
        except _Unreadable as unreadable:
            batch = self._batch
            codec_name = _CODEC_NAMES.get(batch.compression_type, str(batch.compression_type))
            reason = f"record batch at offsets {batch.base_offset:,}-{batch.next_offset - 1:,} ({codec_name}) "
            skipped = UnreadableBatch(batch.base_offset, batch.next_offset, reason + unreadable.reason)
            self._guard.note_skipped(self._tp, skipped)
            return iter(())
        finally:
            _cap.reset(token)

    def __next__(self) -> Any:  # aiokafka reads a control batch's one record with next(); never compressed
        return next(self._batch)


# --- codecs within a cap ------------------------------------------------------------------------------------


def _over(cap: int) -> _Unreadable:
    return _Unreadable(f"decompresses to more than schema.max_decompressed_batch_bytes ({cap:,})")


def _corrupt() -> _Unreadable:
    return _Unreadable("is corrupt: it cannot be decompressed")


def _gzip_within(payload: Any) -> bytes:
    cap = _cap.get()
    if cap == _UNGUARDED:
        return _gzip_decode(payload)
    parts: list[bytes] = []
    total = 0
    rest = bytes(payload)
    try:
        while rest:  # a gzip stream may hold several members, back to back
            inflater = zlib.decompressobj(_GZIP_WINDOW)
            part = inflater.decompress(rest) if cap is None else inflater.decompress(rest, cap + 1 - total)
            total += len(part)
            if cap is not None and total > cap:
                raise _over(cap)
            if not inflater.eof:
                raise _corrupt()  # the stream ends inside a member (the cap was not reached)
            parts.append(part)
            rest = inflater.unused_data.lstrip(b"\0")  # zero padding after a member, as GzipFile allows
    except zlib.error:
        raise _corrupt() from None
    return b"".join(parts)


def _snappy_within(payload: Any) -> bytes:
    cap = _cap.get()
    if cap == _UNGUARDED:
        return _snappy_decode(payload)
    try:
        if cap is not None and _snappy_size(bytes(payload)) > cap:
            raise _over(cap)
        return _snappy_decode(payload)
    except (cramjam.DecompressionError, ValueError):
        raise _corrupt() from None


def _snappy_size(payload: bytes) -> int:
    """The decompressed size of a raw snappy block, or of the blocks of a xerial-framed stream (Java's)."""
    if not (len(payload) > len(_XERIAL_HEADER) and payload.startswith(_XERIAL_HEADER)):
        return int(cramjam.snappy.decompress_raw_len(payload))
    view = memoryview(payload)[16:]
    size, cursor = 0, 0
    while cursor < len(view):
        block = int.from_bytes(view[cursor : cursor + 4], "big", signed=True)
        if block < 0 or cursor + 4 + block > len(view):
            raise ValueError("a xerial block runs past the stream")
        size += int(cramjam.snappy.decompress_raw_len(view[cursor + 4 : cursor + 4 + block]))
        cursor += 4 + block
    return size


def _within_buffer(decode_into: Callable[[Any, Any], int], unbounded: _Decode) -> _Decode:
    """A codec that decompresses into a buffer of cap + 1 bytes: a batch that fills it is over the cap. The
    buffer is reused by its thread (:func:`pipelines.decode.scratch.scratch`): only the pages a batch writes cost
    memory."""

    def decode(payload: Any) -> bytes:
        cap = _cap.get()
        if cap == _UNGUARDED:
            return unbounded(payload)
        if cap is None:
            try:
                return unbounded(payload)
            except cramjam.DecompressionError:
                raise _corrupt() from None
        buffer = scratch("decompressed batch", cap + 1, np.uint8)
        try:
            written = decode_into(bytes(payload), buffer)
        except cramjam.DecompressionError:
            # cramjam says only that it failed: a full buffer and corrupt bytes look alike here
            raise _Unreadable(
                f"is corrupt, or decompresses to more than schema.max_decompressed_batch_bytes ({cap:,})"
            ) from None
        if written > cap:
            raise _over(cap)
        return buffer[:written].tobytes()

    return decode


_CAPPED: dict[str, _Decode] = {
    "gzip_decode": _gzip_within,
    "snappy_decode": _snappy_within,
    "lz4_decode": _within_buffer(cramjam.lz4.decompress_into, codec.lz4_decode),
    "zstd_decode": _within_buffer(cramjam.zstd.decompress_into, codec.zstd_decode),
}
