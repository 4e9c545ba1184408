"""Key groups: the unit of keyed state, and how rows are routed to the actor that owns theirs.

A key's group is ``crc32(utf-8 key) % max_key_groups``: stable across processes, runs and Python versions
(never Python's salted ``hash()``), because key groups index checkpointed state. Hashing is done once per
distinct key of a batch, columnar (:func:`crc32_of_strings`, bit for bit ``zlib.crc32``); the per-row work is a
numpy gather.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KeyGroupRouter", "assign_key_groups", "crc32_of_strings", "key_group_of", "owner_of_group"]

_Crcs = npt.NDArray[np.uint32]
_FEW_LEFT = 8  # keys still being hashed byte by byte, below which zlib finishes them one by one


def _crc_table() -> _Crcs:
    """zlib's CRC-32 table (the reflected polynomial 0xEDB88320): the CRC of each byte value."""
    crcs = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crcs = np.where(crcs & 1, (crcs >> 1) ^ np.uint32(0xEDB88320), crcs >> 1).astype(np.uint32)
    return crcs


_CRC_TABLE = _crc_table()


def key_group_of(key: str | None, max_key_groups: int) -> int:
    """The key group of one key; null keys all go to group 0."""
    if key is None:
        return 0
    return zlib.crc32(key.encode("utf-8")) % max_key_groups


class KeyGroupRouter:
    """Splits batches by the owner of each row's key group.

    ``owner_of_group[g]`` is the index of the destination that owns key group ``g``.
    """

    def __init__(self, key_column: str, max_key_groups: int, owner_of_group: Sequence[int]) -> None:
        if len(owner_of_group) != max_key_groups:
            raise ValueError(f"owner_of_group has {len(owner_of_group)} entries, expected {max_key_groups}")
        self._key_column = key_column
        self._max_key_groups = max_key_groups
        self._owners = np.asarray(owner_of_group, dtype=np.int64)

    def key_groups(self, batch: pa.RecordBatch) -> np.ndarray:
        keys = pc.cast(batch.column(self._key_column), pa.string())
        encoded = pc.dictionary_encode(keys)
        groups_of_distinct = crc32_of_strings(encoded.dictionary).astype(np.int64) % self._max_key_groups
        indices = encoded.indices
        if indices.null_count:
            indices = pc.fill_null(indices, -1)
        positions = indices.to_numpy(zero_copy_only=False).astype(np.int64)
        return np.where(
            positions < 0, 0, groups_of_distinct[np.maximum(positions, 0)] if len(groups_of_distinct) else 0
        )

    def split(self, batch: pa.RecordBatch) -> dict[int, pa.RecordBatch]:
        """Rows per owner, each part in the batch's row order; owners with no rows are left out."""
        if batch.num_rows == 0:
            return {}
        owners = self._owners[self.key_groups(batch)]
        order = np.argsort(owners, kind="stable")
        sorted_owners = owners[order]
        boundaries = np.flatnonzero(np.diff(sorted_owners)) + 1
        starts = np.concatenate(([0], boundaries))
        ends = np.concatenate((boundaries, [len(order)]))
        return {
            int(sorted_owners[start]): batch.take(pa.array(order[start:end]))
            for start, end in zip(starts, ends, strict=True)
        }


def crc32_of_strings(strings: pa.Array) -> _Crcs:
    """``zlib.crc32`` of each string's UTF-8 bytes (0 for a null), columnar: the table-driven CRC advanced one
    byte position at a time over all strings still that long (longest first, so they are a prefix), so a
    batch of distinct keys costs a few numpy passes per byte of its keys' length, not a Python call per key.
    The few longest keys left are finished by zlib, so one long key does not cost a pass per byte."""
    binary = pc.cast(strings, pa.binary())
    count = len(binary)
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int32)[binary.offset : binary.offset + count + 1]
    lengths = np.diff(offsets).astype(np.int64)
    if binary.null_count:
        lengths[pc.is_null(binary).to_numpy(zero_copy_only=False)] = 0
    data = binary.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    order = np.argsort(-lengths, kind="stable")  # longest first: the keys at least j + 1 bytes long lead
    starts = offsets[:-1].astype(np.int64)[order]
    longest_first = lengths[order]
    crcs = np.full(count, 0xFFFFFFFF, dtype=np.uint32)
    position = 0
    while (longer := int(np.searchsorted(-longest_first, -position, side="left"))) > _FEW_LEFT:
        state = crcs[:longer]
        byte = values[starts[:longer] + position]
        crcs[:longer] = _CRC_TABLE[(state ^ byte) & 0xFF] ^ (state >> 8)
        position += 1
    crcs ^= np.uint32(0xFFFFFFFF)
    for index in range(longer):  # continue each from the CRC of its first ``position`` bytes
        start = int(starts[index])
        crcs[index] = zlib.crc32(
            values[start + position : start + int(longest_first[index])].tobytes(), int(crcs[index])
        )
    result = np.empty(count, dtype=np.uint32)
    result[order] = crcs
    return result


def assign_key_groups(max_key_groups: int, actors: int) -> list[list[int]]:
    """Contiguous ranges of key groups per actor, sizes differing by at most one."""
    if not 1 <= actors <= max_key_groups:
        raise ValueError(f"actors must be between 1 and max_key_groups ({max_key_groups}), got {actors}")
    base, extra = divmod(max_key_groups, actors)
    ranges: list[list[int]] = []
    start = 0
    for index in range(actors):
        size = base + (1 if index < extra else 0)
        ranges.append(list(range(start, start + size)))
        start += size
    return ranges


def owner_of_group(assignment: list[list[int]], max_key_groups: int) -> list[int]:
    """Invert an assignment: entry ``g`` is the index of the actor owning key group ``g``."""
    owners = [-1] * max_key_groups
    for actor, groups in enumerate(assignment):
        for group in groups:
            owners[group] = actor
    if -1 in owners:
        raise ValueError(f"key group {owners.index(-1)} has no owner")
    return owners
