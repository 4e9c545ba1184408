"""Versions of keys, found by (key, time) at a cost that grows with the rows looked up, not with the table.

A temporal join's right side can hold a version of each of millions of keys while each batch looks up a few
thousand. The versions are kept in two parts:

- the **base**: sorted by key, then event time, then ``_partition`` and ``_offset`` (when the rows have them),
  then arrival; a lookup is a binary search for the key's run, then a binary search in the run for the last
  time at or before the wanted one, both numpy over the rows looked up (``O(rows log versions)``);
- the **delta**: the versions added since the base was built, in arrival order, searched as a whole (it stays
  small: when it outgrows a quarter of the base, both are merged into a new base, :meth:`VersionIndex.maintain`,
  so each version is sorted ``O(log)`` times over its life).

A lookup takes the later of the two candidates (by time, then ``_partition``, ``_offset``; the delta's on a full
tie, as it arrived later). Old versions are dropped when a base is built, so between builds some superseded
versions are kept a little longer; they are never chosen over a newer one, so results do not depend on when a
build happens. Versions with a null key are not kept: they meet nothing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.state.joins import TIMESTAMP, Ints, KeyCodes, int64s, tie_order

__all__ = ["VersionIndex"]

_TIE_COLUMNS = ("_partition", "_offset")
_MIN_DELTA_ROWS = 8_192


class VersionIndex:
    """The versions of the keys in column ``key``: :meth:`add`, :meth:`lookup`, :meth:`maintain`."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._base: pa.Table | None = None
        self._base_keys: np.ndarray = np.zeros(0)
        self._base_times: Ints = np.zeros(0, dtype=np.int64)
        self._base_ties: dict[str, Ints] = {}  # the base's time and tie columns, as numpy
        self._delta: pa.Table | None = None

    @property
    def rows(self) -> int:
        return sum(part.num_rows for part in (self._base, self._delta) if part is not None)

    def table(self) -> pa.Table | None:
        """Every kept version (the base, then the delta): what :meth:`lookup`'s positions index."""
        parts = [part for part in (self._base, self._delta) if part is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def add(self, versions: pa.Table) -> None:
        """Keep ``versions`` (rows with an event time)."""
        versions = versions.filter(pc.is_valid(versions.column(self._key)))
        if versions.num_rows:
            self._delta = versions if self._delta is None else pa.concat_tables([self._delta, versions])

    def maintain(self, watermark_ms: int, force: bool = False) -> None:
        """Merge the delta into a new base when it has grown (or ``force``), dropping the versions the watermark
        has passed but the newest of each key among them (a later time can still meet it)."""
        delta = 0 if self._delta is None else self._delta.num_rows
        base = 0 if self._base is None else self._base.num_rows
        if not delta or (not force and delta < max(_MIN_DELTA_ROWS, base // 4)):
            return
        merged = self.table()
        assert merged is not None  # the delta has rows
        ordered = merged.take(_sort_order(merged, self._key)).combine_chunks()
        keys = _searchable(ordered.column(self._key))
        times = int64s(ordered.column(TIMESTAMP))
        passed = times <= watermark_ms
        # superseded: passed, and the next row is of the same key and passed too
        superseded = np.append((keys[1:] == keys[:-1]) & passed[1:], False) & passed
        if superseded.any():
            kept = np.flatnonzero(~superseded)
            ordered, keys, times = ordered.take(pa.array(kept)), keys[kept], times[kept]
        self._base = ordered if ordered.num_rows else None
        self._base_keys, self._base_times = keys, times
        self._base_ties = {TIMESTAMP: times} | {name: _ints(ordered.column(name)) for name in _TIE_COLUMNS
                                                if name in ordered.column_names}  # fmt: skip
        self._delta = None

    def lookup(self, keys: pa.ChunkedArray, times: Ints) -> Ints:
        """For each (key, time), the row of :meth:`table` of the key's version valid then: the latest at or before
        ``time``; -1 when there is none (or the key is null)."""
        found = np.full(len(times), -1, dtype=np.int64)
        if self._base is not None:
            found = self._in_base(keys, times)
        if self._delta is None:
            return found
        offset = 0 if self._base is None else self._base.num_rows
        in_delta = _in_table(self._delta, self._key, keys, times)
        later = _later(self._delta, in_delta, self._base_ties, found)
        return np.where(later, in_delta + offset, found)

    def _in_base(self, keys: pa.ChunkedArray, times: Ints) -> Ints:
        assert self._base is not None  # the caller checks
        valid = np.asarray(pc.is_valid(keys).to_numpy(zero_copy_only=False), dtype=bool)
        # a null key finds nothing: search with a key the base has, and discard the answer
        wanted = _searchable(pc.fill_null(keys, self._base.column(self._key)[0]) if not valid.all() else keys)
        start = np.searchsorted(self._base_keys, wanted, side="left")
        low, high = start, np.searchsorted(self._base_keys, wanted, side="right")
        # the first row of the key's run whose time is after the wanted one, by bisection of all runs at once
        while (open_ := low < high).any():
            middle = (low + high) // 2
            at_or_before = open_ & (self._base_times[np.minimum(middle, len(self._base_times) - 1)] <= times)
            low = np.where(at_or_before, middle + 1, low)
            high = np.where(open_ & ~at_or_before, middle, high)
        return np.where(valid & (low > start), low - 1, -1)


def _sort_order(rows: pa.Table, key: str) -> pa.Array:
    ties = [(name, "ascending") for name in _TIE_COLUMNS if name in rows.column_names]
    return pc.sort_indices(rows, sort_keys=[(key, "ascending"), (TIMESTAMP, "ascending"), *ties])


def _searchable(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Keys as a numpy array that sorts as Arrow sorts them (text and bytes as Python objects, numbers as numbers)."""
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _in_table(rows: pa.Table, key: str, keys: pa.ChunkedArray, times: Ints) -> Ints:
    """The version valid at each (key, time) among ``rows`` (unsorted), by :func:`tie_order`; -1: none."""
    codes = KeyCodes.of(rows.column(key), keys)
    version_times = int64s(rows.column(TIMESTAMP))
    order = tie_order(rows, codes.first)
    distinct, ranks = np.unique(np.concatenate([version_times, times]), return_inverse=True)
    ranks = ranks.reshape(-1)
    width = len(distinct)
    points = (codes.first * width + ranks[: len(version_times)])[order]
    found = np.searchsorted(points, codes.second * width + ranks[len(version_times) :], side="right") - 1
    candidates = order[np.maximum(found, 0)]
    met = (found >= 0) & (codes.first[candidates] == codes.second) & (codes.second >= 0)
    return np.where(met, candidates, -1)


def _later(delta: pa.Table, in_delta: Ints, base_ties: dict[str, Ints], in_base: Ints) -> np.ndarray:
    """Where the delta's candidate is the one to take: it exists, and the base has none or one not later (by
    time, then ``_partition``, ``_offset``; on a full tie the delta's, which arrived later)."""
    found = in_delta >= 0
    both = found & (in_base >= 0)
    if not both.any():
        return found
    delta_at, base_at = np.maximum(in_delta, 0), np.maximum(in_base, 0)
    not_later = np.ones(len(in_delta), dtype=bool)
    decided = np.zeros(len(in_delta), dtype=bool)
    for name, theirs in base_ties.items():
        if name not in delta.column_names:
            continue
        mine = _ints(delta.column(name))[delta_at]
        not_later = np.where(decided, not_later, mine >= theirs[base_at])
        decided |= mine != theirs[base_at]
    return found & (~both | not_later)


def _ints(column: pa.ChunkedArray) -> Ints:
    return int64s(pc.fill_null(column, -1))
