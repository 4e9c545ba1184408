"""The latest row per key: event-carried state transfer (current inventory per SKU, a customer's address).

Versions are ordered by ``_timestamp`` (event time), then by arrival: a version replaces the stored one when
its ``_timestamp`` is at least as new, and a version older than the stored one is *stale*: it is counted and
returned, never applied. With a delete column, a true value turns the key into a tombstone (payload columns
null, delete column true): :meth:`UpsertTable.table` and :meth:`UpsertTable.lookup` no longer see the key, but
the tombstone stays in state for ``tombstone_retention_ms`` of event time so that a stale version cannot bring
the key back; after that it is dropped, as Kafka drops tombstones from a compacted topic. Tombstones are dropped
only when the watermark moves forward (never by :meth:`UpsertTable.restore`), so the result of a sequence of
calls does not depend on how rows were cut into batches or whether a snapshot was taken in between.

Each batch is resolved column-wise (dictionary-encode the keys, sort by key, time and arrival with numpy,
take the last of each key); per-row Python never runs. The cost per batch is a hash lookup of its keys in the
state, which is built once per batch from the state's key column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import UpsertConfig
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.state.keyed_operator import Added, StateFormatError, StateMeaning
from pipelines.state.queryable import TableRows

__all__ = ["STATE_FORMAT", "UpsertTable", "Upserted"]

STATE_FORMAT = "upsert/1"
TIMESTAMP = "_timestamp"
METADATA_COLUMNS = frozenset({"_timestamp", "_partition", "_offset", "_key", "_traceparent"})
_COMBINE_AFTER_CHUNKS = 64

_Ints = npt.NDArray[np.int64]
_Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Upserted(Added):
    """:class:`Added` plus ``stale``: the versions older than the key's stored one, counted and not applied.

    ``output`` is the changelog: one row per key whose stored version changed, its newest version (a
    tombstone for a delete), in the arrival order of those versions.
    """

    stale: pa.RecordBatch | None = None

    @property
    def intended_drops(self) -> int:
        return 0 if self.stale is None else self.stale.num_rows


class UpsertTable:
    """Keyed state holding the newest version of each key; implements :class:`KeyedOperator`.

    Contract: :meth:`add` applies a batch and returns its changelog at once; :meth:`advance` only drops
    tombstones past retention and returns None; :meth:`flush` returns None. Rows with a null ``_timestamp``
    cannot be ordered and are returned as ``no_event_time``. A null key is a key like any other. Batches
    should share one schema (columns missing from some batches are filled with nulls).
    """

    def __init__(self, config: UpsertConfig) -> None:
        self._config = config
        self._meaning = StateMeaning(
            STATE_FORMAT, {"key": config.key, "delete_column": config.delete_column or "(none)"}
        )
        self._state: pa.Table | None = None
        self._watermark_ms = NO_WATERMARK
        self._stale_versions_dropped = 0

    @property
    def key(self) -> str:
        return self._config.key

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    @property
    def state_rows(self) -> int:
        """Stored versions, tombstones included."""
        return 0 if self._state is None else self._state.num_rows

    @property
    def stale_versions_dropped(self) -> int:
        """Stale versions seen since this object was made (a metric: not part of the snapshot)."""
        return self._stale_versions_dropped

    def add(self, batch: pa.RecordBatch) -> Upserted:
        """Apply the versions in ``batch``; return the changelog, the stale rows and rows without event time."""
        has_time = pc.is_valid(batch.column(TIMESTAMP))
        no_event_time = batch.filter(pc.invert(has_time)) if batch.column(TIMESTAMP).null_count else None
        rows = pa.Table.from_batches([batch.filter(has_time) if no_event_time is not None else batch])
        if rows.num_rows == 0:
            return Upserted(no_event_time=no_event_time)
        prior_positions = self._positions_in_state(rows.column(self.key))
        times = _int64s(rows.column(TIMESTAMP))
        prior_times = self._times_at(prior_positions)
        groups = _group_codes(rows.column(self.key))
        stale = _stale_mask(groups, times, prior_positions >= 0, prior_times)
        winners = _last_per_group(groups, times)
        accepted = np.sort(winners[~stale[winners]])
        changelog = self._as_versions(rows.take(pa.array(accepted, pa.int64())))
        self._replace(prior_positions[accepted], changelog)
        self._stale_versions_dropped += int(stale.sum())
        return Upserted(
            output=changelog if changelog.num_rows else None,
            stale=_stale_rows(rows, stale),
            no_event_time=no_event_time,
        )

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark forward and drop tombstones older than ``watermark_ms - tombstone_retention_ms``."""
        if watermark_ms <= self._watermark_ms:
            return None
        self._watermark_ms = watermark_ms
        self._drop_expired_tombstones()
        return None

    def flush(self) -> pa.Table | None:
        """Nothing to close: the changelog is emitted by :meth:`add`."""
        return None

    def lookup(self, keys: pa.Array) -> pa.Table:
        """The live rows of ``keys``, in the order of ``keys``; unknown and deleted keys are left out."""
        if self._state is None:
            return pa.table({self.key: keys.slice(0, 0)})
        positions = _positions(keys, self._state.column(self.key))
        found = self._state.take(pa.array(positions[positions >= 0], pa.int64()))
        return found.filter(pc.invert(self._deleted(found)))

    def view(self, frozen: bool) -> TableRows:
        """A reader of the live rows (the state is an immutable table: frozen or not, later batches replace it)."""
        return TableRows(self._state, self.key, self._config.delete_column)

    def table(self) -> pa.Table:
        """Every live row (tombstones left out), in no particular order."""
        if self._state is None:
            return pa.table({})
        return self._state.filter(pc.invert(self._deleted(self._state)))

    def snapshot(self) -> pa.Table:
        """The stored versions, tombstones included, tagged ``upsert/1``."""
        state = self._state if self._state is not None else pa.table({self.key: pa.array([], pa.null())})
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace the state with (some of the rows of) snapshots of an upsert table of the same config."""
        self._meaning.check(state)
        required = {self.key, TIMESTAMP} | ({self._config.delete_column} if self._config.delete_column else set())
        if state.num_rows and not required <= set(state.column_names):
            raise StateFormatError(
                f"upsert state lacks column(s) {sorted(required - set(state.column_names))}: it was written with "
                "another key or delete column. Operator action: restore with the config that wrote it"
            )
        self._state = state.replace_schema_metadata(None).combine_chunks() if state.num_rows else None
        self._watermark_ms = watermark_ms

    def _positions_in_state(self, keys: pa.ChunkedArray) -> _Ints:
        if self._state is None:
            return np.full(len(keys), -1, dtype=np.int64)
        return _positions(keys, self._state.column(self.key))

    def _times_at(self, positions: _Ints) -> _Ints:
        if self._state is None:
            return np.zeros(len(positions), dtype=np.int64)
        return _int64s(self._state.column(TIMESTAMP))[np.maximum(positions, 0)]

    def _as_versions(self, winners: pa.Table) -> pa.Table:
        """Winning rows as stored: a delete becomes a tombstone (payload null, delete column true)."""
        delete_column = self._config.delete_column
        if delete_column is None or delete_column not in winners.column_names:
            return winners
        deleted = pc.fill_null(winners.column(delete_column), False)
        if not pc.any(deleted).as_py():
            return winners
        kept = METADATA_COLUMNS | {self.key, delete_column}
        columns = [
            column if name in kept else pc.if_else(deleted, pa.nulls(winners.num_rows, column.type), column)
            for name, column in zip(winners.column_names, winners.columns, strict=True)
        ]
        return pa.table(columns, schema=winners.schema)

    def _replace(self, replaced_positions: _Ints, versions: pa.Table) -> None:
        """Drop the stored rows at ``replaced_positions`` (-1: none) and store ``versions``."""
        if self._state is None:
            self._state = versions if versions.num_rows else None
            return
        kept = self._state
        replaced = replaced_positions[replaced_positions >= 0]
        if len(replaced):
            keep = np.ones(kept.num_rows, dtype=bool)
            keep[replaced] = False
            kept = kept.filter(pa.array(keep))
        state = pa.concat_tables([kept, versions], promote_options="default") if versions.num_rows else kept
        if state.column(0).num_chunks > _COMBINE_AFTER_CHUNKS:
            state = state.combine_chunks()
        self._state = state if state.num_rows else None

    def _deleted(self, rows: pa.Table) -> pa.ChunkedArray | pa.Array:
        delete_column = self._config.delete_column
        if delete_column is None or delete_column not in rows.column_names:
            return pa.array(np.zeros(rows.num_rows, dtype=bool))
        return pc.fill_null(rows.column(delete_column), False)

    def _drop_expired_tombstones(self) -> None:
        if self._state is None or self._config.delete_column is None:
            return
        expired_before = self._watermark_ms - self._config.tombstone_retention_ms
        expired = pc.and_(self._deleted(self._state), pc.less(self._state.column(TIMESTAMP), expired_before))
        if pc.any(expired).as_py():
            kept = self._state.filter(pc.invert(expired))
            self._state = kept if kept.num_rows else None


def _stale_rows(rows: pa.Table, stale: _Bools) -> pa.RecordBatch | None:
    if not stale.any():
        return None
    return rows.filter(pa.array(stale)).combine_chunks().to_batches()[0]


def _int64s(column: pa.ChunkedArray | pa.Array) -> _Ints:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def _positions(keys: pa.ChunkedArray | pa.Array, stored_keys: pa.ChunkedArray) -> _Ints:
    """For each key, its row in ``stored_keys`` (unique), or -1; a null key matches a stored null key."""
    found = pc.index_in(keys, value_set=stored_keys.combine_chunks(), skip_nulls=False)
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _group_codes(keys: pa.ChunkedArray) -> _Ints:
    """One int per row, equal for equal keys (null included), numbered by first appearance."""
    encoded = pc.dictionary_encode(keys.combine_chunks(), null_encoding="encode")
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _stale_mask(groups: _Ints, times: _Ints, has_prior: _Bools, prior_times: _Ints) -> _Bools:
    """Rows older than a version of their key stored or arrived earlier in the batch.

    Within the batch this is a running maximum per group: times are replaced by their dense rank (from 1) and
    packed as ``group * width + rank``, so one cumulative maximum over rows sorted by group never carries a
    value across a group boundary into a comparison (the previous group's values are all below ``group *
    width``).
    """
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    distinct, ranks = np.unique(times[order], return_inverse=True)
    ranks = ranks.reshape(-1) + 1
    width = len(distinct) + 1
    running = np.maximum.accumulate(sorted_groups * width + ranks)
    newest_before = np.concatenate(([0], running[:-1])) - sorted_groups * width
    stale = np.empty(len(groups), dtype=bool)
    stale[order] = ranks < newest_before
    return stale | (has_prior & (times < prior_times))


def _last_per_group(groups: _Ints, times: _Ints) -> _Ints:
    """The row of each group with the newest time, the last arrived among equal times."""
    order = np.lexsort((np.arange(len(groups)), times, groups))
    sorted_groups = groups[order]
    last = np.append(sorted_groups[1:] != sorted_groups[:-1], True)
    return np.asarray(order[last], dtype=np.int64)
