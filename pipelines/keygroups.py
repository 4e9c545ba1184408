"""Key groups: the unit of keyed state, and how rows are routed to the actor that owns theirs.

A key's group is ``crc32(utf-8 key) % max_key_groups``: stable across processes, runs and Python versions
(never Python's salted ``hash()``), because key groups index checkpointed state. Hashing is done once per
distinct key of a batch (and cached), the per-row work is a numpy gather.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KeyGroupRouter", "key_group_of"]

_CACHE_LIMIT = 1 << 20


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
        self._cache: dict[str | None, int] = {}

    def key_groups(self, batch: pa.RecordBatch) -> np.ndarray:
        keys = pc.cast(batch.column(self._key_column), pa.string())
        encoded = pc.dictionary_encode(keys)
        groups_of_distinct = np.fromiter(
            (self._group(key) for key in encoded.dictionary.to_pylist()),
            dtype=np.int64,
            count=len(encoded.dictionary),
        )
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

    def _group(self, key: str | None) -> int:
        group = self._cache.get(key)
        if group is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            group = self._cache[key] = key_group_of(key, self._max_key_groups)
        return group
