"""Compressed batches read within a cap, through aiokafka's own record batches and fetch iteration (no broker):
a batch over the cap or corrupt is skipped with its offsets and a reason; the others read as before."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiokafka import TopicPartition, codec
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_UNCOMMITTED
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from actors.kafka import batch_guard
from actors.kafka.batch_guard import BatchGuard
from pipelines.config.pipeline import SchemaConfig
from pipelines.decode.input_limits import LIMIT, screen_input
from pipelines.io.kafka_records import UnreadableBatch, raw_batch_from_records

GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
CAP = 100_000
_BASE_OFFSET = struct.Struct(">q")


def _batch(base_offset: int, values: list[bytes], compression: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 1 << 30)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1_000 + delta, key=None, value=value, headers=[])
    built = bytearray(builder.build())
    built[:8] = _BASE_OFFSET.pack(base_offset)  # not covered by the CRC
    return bytes(built)


def _read(tp: TopicPartition, fetch: bytes, guard: BatchGuard | None, fetch_offset: int = 0) -> tuple[list[int], int]:
    """The offsets aiokafka yields for ``fetch`` and its position after it, with ``guard`` watching ``tp``."""
    if guard is not None:
        guard.watch([tp])
    try:
        records = fetcher.PartitionRecords(
            tp, MemoryRecords(fetch), [], fetch_offset, None, None, True, READ_UNCOMMITTED
        )
        offsets = [record.offset for record in records]
        return offsets, records.next_fetch_offset
    finally:
        if guard is not None:
            guard.forget([tp])


@pytest.fixture
def tp(request: pytest.FixtureRequest) -> Iterator[TopicPartition]:
    yield TopicPartition(f"guarded-{request.node.name}", 0)


BOMB = b"\0" * (CAP + 1)


@pytest.mark.parametrize("compression", [GZIP, SNAPPY, LZ4, ZSTD], ids=["gzip", "snappy", "lz4", "zstd"])
def test_a_batch_over_the_cap_is_skipped_with_its_offsets_and_the_partition_reads_on(
    tp: TopicPartition, compression: int
) -> None:
    fetch = (
        _batch(0, [b'{"n":0}', b'{"n":1}'], compression)
        + _batch(2, [BOMB, b'{"n":3}'], compression)
        + _batch(4, [b'{"n":4}'], compression)
    )
    guard = BatchGuard(CAP)

    offsets, position = _read(tp, fetch, guard)

    assert offsets == [0, 1, 4]
    assert position == 5
    [skipped] = guard.take(tp)
    assert (skipped.first_offset, skipped.next_offset) == (2, 4)
    assert f"more than schema.max_decompressed_batch_bytes ({CAP:,})" in skipped.reason
    assert skipped.reason.startswith("record batch at offsets 2-3 (")
    assert guard.take(tp) == []  # handed over once


@pytest.mark.parametrize("compression", [GZIP, SNAPPY, LZ4, ZSTD], ids=["gzip", "snappy", "lz4", "zstd"])
def test_a_batch_at_the_cap_reads_in_full(tp: TopicPartition, compression: int) -> None:
    values = [b"x" * 40_000, b"y" * 40_000]
    guard = BatchGuard(CAP)

    offsets, _ = _read(tp, _batch(0, values, compression), guard)

    assert offsets == [0, 1]
    assert guard.take(tp) == []


def test_a_corrupt_batch_is_skipped_even_without_a_cap(tp: TopicPartition) -> None:
    """A batch whose CRC holds but whose compressed bytes are not gzip (a broken producer): aiokafka's codec
    raises, and without the guard the consumer would fetch it again for ever."""
    builder = DefaultRecordBatchBuilder(2, GZIP, 0, -1, -1, -1, 1 << 30)
    builder.append(0, timestamp=1, key=None, value=b"v" * 100, headers=[])
    good = bytearray(builder.build())
    header = 61  # the v2 batch header; the compressed records follow it
    good[header:] = b"\x1f\x8b" + b"\xff" * (len(good) - header - 2)
    corrupt = _with_crc(bytes(good))
    guard = BatchGuard(None)

    offsets, position = _read(tp, corrupt + _batch(1, [b"ok"]), guard)

    assert offsets == [1]
    assert position == 2
    [skipped] = guard.take(tp)
    assert (skipped.first_offset, skipped.next_offset, "is corrupt" in skipped.reason) == (0, 1, True)


def _with_crc(batch: bytes) -> bytes:
    """``batch`` with its CRC-32C (over the bytes from the attributes on) recomputed, as aiokafka checks it."""
    return batch[:17] + struct.pack(">I", calc_crc32c(batch[21:])) + batch[21:]


def test_a_partition_no_guard_watches_reads_as_aiokafka_always_did(tp: TopicPartition) -> None:
    offsets, position = _read(tp, _batch(0, [BOMB], ZSTD), guard=None)

    assert (offsets, position) == ([0], 1)


def test_gzip_with_several_members_reads_whole_within_the_cap() -> None:
    """Two gzip members back to back, as some producers write: read in full, as aiokafka's GzipFile reads them;
    the cap counts both."""
    two_members = gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600)

    with _capped(1_200):
        assert batch_guard._CAPPED["gzip_decode"](two_members) == b"a" * 600 + b"b" * 600
    with _capped(1_199), pytest.raises(batch_guard._Unreadable, match=r"more than .* \(1,199\)"):
        batch_guard._CAPPED["gzip_decode"](two_members)
    with _capped(1_200), pytest.raises(batch_guard._Unreadable, match="is corrupt"):
        batch_guard._CAPPED["gzip_decode"](two_members[:-10])  # ends inside the second member


def test_xerial_framed_snappy_is_sized_by_its_blocks() -> None:
    """Java producers frame snappy xerial-style, in blocks: the decompressed size is the sum of the blocks'."""
    payload = b"z" * 100_000
    framed = codec.snappy_encode(payload, xerial_compatible=True, xerial_blocksize=32 * 1024)

    with _capped(100_000):
        assert batch_guard._CAPPED["snappy_decode"](framed) == payload
    with _capped(99_999), pytest.raises(batch_guard._Unreadable, match="more than"):
        batch_guard._CAPPED["snappy_decode"](framed)


@contextmanager
def _capped(cap: int) -> Iterator[None]:
    """Decode as a guarded batch with ``cap`` is (the codecs read the cap of the batch being iterated)."""
    token = batch_guard._cap.set(cap)
    try:
        yield
    finally:
        batch_guard._cap.reset(token)


def test_an_unreadable_batch_is_one_limit_dead_letter_in_offset_order() -> None:
    class Record:
        def __init__(self, offset: int) -> None:
            self.offset, self.value, self.key, self.timestamp, self.headers = offset, b'{"n":1}', None, 5, ()

    skipped = UnreadableBatch(2, 5, "record batch at offsets 2-4 (zstd) is corrupt: it cannot be decompressed")

    raw = raw_batch_from_records("t", 0, [Record(0), Record(1), Record(5)], [skipped], (0, 6))

    assert raw.offsets.to_pylist() == [0, 1, 2, 5]  # one refused record stands for the batch, at its first offset
    assert raw.refusals is not None
    assert raw.refusals.to_pylist() == [None, None, skipped.reason, None]
    screening = screen_input(SchemaConfig(fields={"n": "int64"}), raw, json_nesting=True)
    assert screening.within.offsets.to_pylist() == [0, 1, 5]
    [dead] = screening.dead_letters
    assert dead.column("offset").to_pylist() == [2]
    assert dead.column("error_type").to_pylist() == [LIMIT]
    assert dead.column("reason").to_pylist() == [skipped.reason]
    assert dead.column("payload").null_count == 1


def test_a_reader_inside_an_unreadable_batch_refuses_it_at_its_own_position() -> None:
    """After a restore to offset 3, inside the batch of offsets 2-4: the batch's dead letter is at 3, once;
    a batch wholly before the position, or from the reader's limit on, is not its business."""
    inside = UnreadableBatch(2, 5, "inside")
    assert raw_batch_from_records("t", 0, [], [inside], (3, 10)).offsets.to_pylist() == [3]
    assert raw_batch_from_records("t", 0, [], [inside], (5, 10)).offsets.to_pylist() == []
    assert raw_batch_from_records("t", 0, [], [inside], (0, 2)).offsets.to_pylist() == []


def test_a_batch_of_a_million_empty_records_is_one_dead_letter() -> None:
    """A bomb of many tiny records: its refusal costs one row, not one per offset."""
    bomb = UnreadableBatch(0, 1_000_000, "record batch at offsets 0-999,999 (zstd) decompresses to more than ...")

    raw = raw_batch_from_records("t", 0, [], [bomb])

    assert len(raw) == 1


def test_a_partition_is_guarded_by_one_consumer_of_a_process() -> None:
    tp = TopicPartition("guarded-once", 0)
    first, second = BatchGuard(CAP), BatchGuard(CAP)
    first.watch([tp])
    try:
        first.watch([tp])  # the same guard again (a partition assigned back): fine
        with pytest.raises(RuntimeError, match="another consumer in this process guards"):
            second.watch([tp])
    finally:
        first.forget([tp])
    second.watch([tp])
    second.forget([tp])


def test_a_batch_noted_twice_is_handed_over_once(tp: TopicPartition) -> None:
    """A fetch that fails after a batch was skipped reads that batch again: one dead letter, not two."""
    guard = BatchGuard(CAP)
    guard.note_skipped(tp, UnreadableBatch(2, 4, "why"))
    guard.note_skipped(tp, UnreadableBatch(2, 4, "why"))
    assert guard.take(tp) == [UnreadableBatch(2, 4, "why")]


def test_gzip_with_zero_padding_reads_as_aiokafka_reads_it() -> None:
    padded = codec.gzip_encode(b"x" * 100) + b"\0" * 8
    assert codec.gzip_decode(padded) == b"x" * 100
    with _capped(CAP):
        assert batch_guard._CAPPED["gzip_decode"](padded) == b"x" * 100
