"""Drop events whose id was already seen: idempotent consumers over at-least-once input.

The state is one Arrow table of (id, ``last_seen_ms``). An id is *remembered* while ``watermark <= last_seen_ms
+ ttl_ms``; a row whose id is remembered, or that repeats an id earlier in the same batch, is a duplicate:
dropped from the output, counted, and returned to the caller (never lost without a count). ``last_seen_ms`` is
the newest sighting of the id, duplicates included, each sighting at ``max(_timestamp, watermark)``, so a late
event's id is still remembered for ``ttl_ms`` of event time after it is seen. :meth:`Dedup.advance` forgets
ids once the watermark passes ``last_seen_ms + ttl_ms``.

Each batch is resolved column-wise (``is_in`` against the state, first occurrences by dictionary encoding,
the newest sighting per id by hash aggregation); per-row Python never runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import DedupConfig
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.state.keyed_operator import Added, StateFormatError, StateMeaning

__all__ = ["LAST_SEEN", "STATE_FORMAT", "Dedup", "Deduplicated"]

STATE_FORMAT = "dedup/1"
LAST_SEEN = "last_seen_ms"
TIMESTAMP = "_timestamp"


@dataclass(frozen=True)
class Deduplicated(Added):
    """:class:`Added` plus ``duplicates``: the rows dropped as duplicates, whole, for the caller's metrics.

    ``output`` holds the first occurrences (and rows with a null id, which cannot be deduplicated), in batch
    order.
    """

    duplicates: pa.RecordBatch | None = None

    @property
    def duplicates_dropped(self) -> int:
        return 0 if self.duplicates is None else self.duplicates.num_rows

    @property
    def intended_drops(self) -> int:
        return self.duplicates_dropped


class Dedup:
    """Keyed by the id column; implements :class:`KeyedOperator`.

    Contract: :meth:`add` returns the first occurrences at once; :meth:`advance` forgets expired ids and
    returns None; :meth:`flush` returns None. Rows with a null ``_timestamp`` are returned as
    ``no_event_time`` (their id could not expire) and not remembered. Rows with a null id pass through
    uncounted as duplicates (counted in :attr:`rows_without_id`): a schema should make the id required.
    """

    def __init__(self, config: DedupConfig) -> None:
        self._config = config
        self._meaning = StateMeaning(STATE_FORMAT, {"id_column": config.id_column})
        self._state: pa.Table | None = None
        self._watermark_ms = NO_WATERMARK
        self._duplicates_dropped = 0
        self._rows_without_id = 0

    @property
    def key(self) -> str:
        return self._config.id_column

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    @property
    def state_rows(self) -> int:
        """Ids remembered."""
        return 0 if self._state is None else self._state.num_rows

    @property
    def duplicates_dropped(self) -> int:
        """Duplicates dropped since this object was made (a metric: not part of the snapshot)."""
        return self._duplicates_dropped

    @property
    def rows_without_id(self) -> int:
        """Rows with a null id passed through since this object was made."""
        return self._rows_without_id

    def add(self, batch: pa.RecordBatch) -> Deduplicated:
        """Pass the first occurrence of each id not remembered; return the duplicates and rows without time."""
        has_time = pc.is_valid(batch.column(TIMESTAMP))
        no_event_time = batch.filter(pc.invert(has_time)) if batch.column(TIMESTAMP).null_count else None
        rows = batch.filter(has_time) if no_event_time is not None else batch
        if rows.num_rows == 0:
            return Deduplicated(no_event_time=no_event_time)
        ids = rows.column(self.key)
        has_id = np.asarray(pc.is_valid(ids).to_numpy(zero_copy_only=False), dtype=bool)
        duplicate = has_id & (self._remembered(ids) | ~_first_occurrences(ids))
        self._remember(rows.filter(pa.array(has_id)))
        self._duplicates_dropped += int(duplicate.sum())
        self._rows_without_id += int((~has_id).sum())
        return Deduplicated(
            output=pa.Table.from_batches([rows.filter(pa.array(~duplicate))]),
            duplicates=rows.filter(pa.array(duplicate)) if duplicate.any() else None,
            no_event_time=no_event_time,
        )

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark forward and forget ids with ``last_seen_ms + ttl_ms < watermark_ms``."""
        if watermark_ms <= self._watermark_ms:
            return None
        self._watermark_ms = watermark_ms
        self._forget_expired()
        return None

    def flush(self) -> pa.Table | None:
        """Nothing to close: first occurrences are emitted by :meth:`add`."""
        return None

    def snapshot(self) -> pa.Table:
        """The remembered ids as (id column, ``last_seen_ms``), tagged ``dedup/1``."""
        state = self._state
        if state is None:
            state = pa.table({self.key: pa.array([], pa.null()), LAST_SEEN: pa.array([], pa.int64())})
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace the state with (some of the rows of) dedup snapshots; ids already expired are forgotten."""
        self._meaning.check(state)
        if not {self.key, LAST_SEEN} <= set(state.column_names):
            raise StateFormatError(
                f"dedup state has columns {state.column_names}, expected [{self.key!r}, {LAST_SEEN!r}]: it was "
                "written with another id column. Operator action: restore with the config that wrote it"
            )
        restored = state.select([self.key, LAST_SEEN]).replace_schema_metadata(None).combine_chunks()
        self._state = restored if restored.num_rows else None
        self._watermark_ms = watermark_ms
        self._forget_expired()

    def _remembered(self, ids: pa.Array) -> np.ndarray:
        if self._state is None:
            return np.zeros(len(ids), dtype=bool)
        found = pc.is_in(ids, value_set=self._state.column(self.key).combine_chunks())
        return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)

    def _remember(self, rows: pa.RecordBatch) -> None:
        """Set ``last_seen_ms`` of each id of ``rows`` (no null id) to its newest sighting."""
        if rows.num_rows == 0:
            return
        seen_at = pc.max_element_wise(rows.column(TIMESTAMP), pa.scalar(self._watermark_ms, pa.int64()))
        sightings = pa.table({self.key: rows.column(self.key), LAST_SEEN: pc.cast(seen_at, pa.int64())})
        if self._state is not None:
            sightings = pa.concat_tables([self._state, sightings], promote_options="default")
        newest = sightings.group_by(self.key, use_threads=False).aggregate([(LAST_SEEN, "max")])
        self._state = pa.table({self.key: newest.column(self.key), LAST_SEEN: newest.column(f"{LAST_SEEN}_max")})

    def _forget_expired(self) -> None:
        if self._state is None:
            return
        expired = pc.less(pc.add(self._state.column(LAST_SEEN), self._config.ttl_ms), self._watermark_ms)
        if pc.any(expired).as_py():
            kept = self._state.filter(pc.invert(expired))
            self._state = kept if kept.num_rows else None


def _first_occurrences(ids: pa.Array) -> np.ndarray:
    """True at the first row of each distinct value of ``ids`` (null is a value here)."""
    codes = pc.dictionary_encode(ids, null_encoding="encode").indices.to_numpy(zero_copy_only=False)
    first = np.zeros(len(ids), dtype=bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return first
