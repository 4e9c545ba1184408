"""A temporal (as-of) stream-table join: each left row meets the version of its key valid at its event time.

The right side is a versioned table: every right row is a version of its key, valid from its ``_timestamp``
until the key's next version. A left row at time ``t`` meets the key's version with the newest ``_timestamp``
at or before ``t``; versions at one time are ordered by ``_partition`` and ``_offset`` (then arrival), and the
last one wins, so the choice does not depend on the order the rows arrived in.

**Emitted on the watermark** (``emit: watermark``): a left row waits in state until the stage's watermark (the
minimum over both sides' partitions) reaches its ``t``: by then every version at or before ``t`` has arrived,
so the result is the same whatever the partition counts, consumer speeds or a replay. A table side that lags
holds the left rows back instead of giving them nulls. A row at or before the watermark when it arrives is
*late*: it goes to the late output, never into state. Once the watermark passes them, old versions are dropped
but the newest one at or before the watermark, which later left rows may still meet.

**Eager** (``emit: eager``): a left row is emitted at once with the newest version known then, and each key
keeps only its newest version; nothing is late. Lower latency; a result that depends on arrival order.

State is one table in the stage's schema: the waiting left rows and the kept versions, told apart by
:data:`~pipelines.state.joins.SIDE`. Rows kept: waiting left rows (the left rate times the watermark's delay)
plus, per key, the versions newer than the watermark and one more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import JoinConfig
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK
from pipelines.state.joins import (
    LATE_REASON,
    LEFT,
    RIGHT,
    SIDE,
    TIMESTAMP,
    Ints,
    JoinColumns,
    KeyCodes,
    int64s,
    joined,
    tie_order,
)
from pipelines.state.keyed_operator import Added, StateFormatError, StateMeaning

__all__ = ["STATE_FORMAT", "TemporalJoin"]

STATE_FORMAT = "temporal-join/1"


@dataclass(frozen=True)
class _Split:
    """A batch's rows with an event time, by side, and the rest."""

    left: pa.Table
    right: pa.Table
    late: pa.Table | None
    no_event_time: pa.RecordBatch | None


class TemporalJoin:
    """Keyed state of a temporal join; implements :class:`~pipelines.state.keyed_operator.KeyedOperator`.

    Contract: :meth:`add` stores the batch's rows and returns its late rows and rows without event time (and,
    eager, the joined left rows); :meth:`advance` returns the left rows the watermark reached, joined;
    :meth:`flush` returns every waiting left row, joined. Rows come in the stage's schema, with
    :data:`~pipelines.state.joins.SIDE`; results have the columns of ``columns``.
    """

    def __init__(self, config: JoinConfig, columns: JoinColumns) -> None:
        self._config = config
        self._columns = columns
        self._eager = config.emit == "eager"
        facts = {"key": config.key, "left": config.left, "right": config.right, "emit": config.emit}
        self._meaning = StateMeaning(STATE_FORMAT, facts)
        self._waiting: pa.Table | None = None
        self._versions: pa.Table | None = None
        self._watermark_ms = NO_WATERMARK

    @property
    def key(self) -> str:
        return self._config.key

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    @property
    def state_rows(self) -> int:
        """Waiting left rows and kept versions."""
        return sum(table.num_rows for table in (self._waiting, self._versions) if table is not None)

    def add(self, batch: pa.RecordBatch) -> Added:
        """Store ``batch``'s versions and left rows (eager: join the left rows at once)."""
        split = self._split(batch)
        if split.right.num_rows:
            versions = split.right if self._versions is None else pa.concat_tables([self._versions, split.right])
            self._versions = self._newest_only(versions) if self._eager else versions
        output = None
        if split.left.num_rows:
            if self._eager:
                output = self._join(split.left)
            else:
                self._waiting = split.left if self._waiting is None else pa.concat_tables([self._waiting, split.left])
        late = None if split.late is None else split.late.combine_chunks().to_batches()[0]
        return Added(output=output, late=late, no_event_time=split.no_event_time, late_reason=LATE_REASON)

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark forward; return the waiting left rows at or before it, joined."""
        if watermark_ms <= self._watermark_ms:
            return None
        self._watermark_ms = watermark_ms
        if self._eager:
            return None
        output = None
        if self._waiting is not None:
            due = pc.less_equal(self._waiting.column(TIMESTAMP), watermark_ms)
            if pc.any(due).as_py():
                output = self._join(self._in_time_order(self._waiting.filter(due)))
                rest = self._waiting.filter(pc.invert(due))
                self._waiting = rest if rest.num_rows else None
        if self._versions is not None:
            self._versions = self._dropped_before(self._versions, watermark_ms)
        return output

    def flush(self) -> pa.Table | None:
        """End of input: every waiting left row, joined."""
        return self.advance(END_OF_TIME_MS)

    def snapshot(self) -> pa.Table:
        """The waiting left rows and kept versions in one table, tagged ``temporal-join/1``."""
        parts = [table for table in (self._waiting, self._versions) if table is not None]
        state = pa.concat_tables(parts) if parts else pa.table({self.key: pa.array([], pa.null())})
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace the state with (some of the rows of) snapshots of a temporal join of the same config."""
        self._meaning.check(state)
        self._watermark_ms = watermark_ms
        if not state.num_rows:
            self._waiting = self._versions = None
            return
        if SIDE not in state.column_names or TIMESTAMP not in state.column_names:
            raise StateFormatError("temporal join state lacks its _side or _timestamp column: it is not a join's")
        rows = state.replace_schema_metadata(None).combine_chunks()
        sides = rows.column(SIDE)
        waiting, versions = rows.filter(pc.equal(sides, LEFT)), rows.filter(pc.equal(sides, RIGHT))
        self._waiting = waiting if waiting.num_rows else None
        self._versions = versions if versions.num_rows else None

    def _split(self, batch: pa.RecordBatch) -> _Split:
        rows = pa.Table.from_batches([batch])
        times = rows.column(TIMESTAMP)
        no_event_time = None
        if times.null_count:
            no_event_time = batch.filter(pc.is_null(batch.column(TIMESTAMP)))
            rows = rows.filter(pc.is_valid(times))
        late = None
        if not self._eager and self._watermark_ms > NO_WATERMARK:
            is_late = pc.less_equal(rows.column(TIMESTAMP), self._watermark_ms)
            if pc.any(is_late).as_py():
                late = rows.filter(is_late)
                rows = rows.filter(pc.invert(is_late))
        sides = rows.column(SIDE)
        return _Split(rows.filter(pc.equal(sides, LEFT)), rows.filter(pc.equal(sides, RIGHT)), late, no_event_time)

    def _join(self, left: pa.Table) -> pa.Table | None:
        """``left`` rows with the version each meets (``how: inner`` leaves out those that meet none)."""
        positions = self._newest_versions(left) if self._eager else self._valid_versions(left)
        if self._config.how == "inner":
            met = positions >= 0
            left, positions = left.filter(pa.array(met)), positions[met]
        result = joined(left, self._versions, positions, self._columns)
        return result if result.num_rows else None

    def _valid_versions(self, left: pa.Table) -> Ints:
        """For each left row, the row of ``_versions`` valid at its time: the last, in :func:`tie_order`, of its
        key's versions at or before its time; -1 when there is none."""
        versions = self._versions
        if versions is None:
            return np.full(left.num_rows, -1, dtype=np.int64)
        codes = KeyCodes.of(versions.column(self.key), left.column(self.key))
        version_times, left_times = int64s(versions.column(TIMESTAMP)), int64s(left.column(TIMESTAMP))
        order = tie_order(versions, codes.first)
        # one sortable number per (key, time): the code times the number of distinct times, plus the time's rank
        distinct, ranks = np.unique(np.concatenate([version_times, left_times]), return_inverse=True)
        ranks = ranks.reshape(-1)
        width = len(distinct)
        version_points = (codes.first * width + ranks[: len(version_times)])[order]
        left_points = codes.second * width + ranks[len(version_times) :]
        found = np.searchsorted(version_points, left_points, side="right") - 1
        candidates = order[np.maximum(found, 0)]
        met = (found >= 0) & (codes.first[candidates] == codes.second) & (codes.second >= 0)
        return np.where(met, candidates, -1)

    def _newest_versions(self, left: pa.Table) -> Ints:
        """Eager: for each left row, the row of its key's one kept version; -1 when there is none."""
        if self._versions is None:
            return np.full(left.num_rows, -1, dtype=np.int64)
        found = pc.index_in(left.column(self.key), value_set=self._versions.column(self.key).combine_chunks())
        return int64s(pc.fill_null(found, -1))

    def _dropped_before(self, versions: pa.Table, watermark_ms: int) -> pa.Table | None:
        """``versions`` without those the watermark has passed, except the newest of each key among those."""
        codes = KeyCodes.of(versions.column(self.key), versions.column(self.key).slice(0, 0)).first
        order = tie_order(versions, codes)
        passed = int64s(versions.column(TIMESTAMP))[order] <= watermark_ms
        sorted_codes = codes[order]
        superseded = np.append((sorted_codes[1:] == sorted_codes[:-1]) & passed[1:], False) & passed
        if not superseded.any():
            return versions
        kept = np.sort(order[~superseded])
        return versions.take(pa.array(kept)) if len(kept) else None

    def _newest_only(self, versions: pa.Table) -> pa.Table | None:
        """Eager: each key's newest version only."""
        return self._dropped_before(versions, END_OF_TIME_MS)

    @staticmethod
    def _in_time_order(rows: pa.Table) -> pa.Table:
        return rows.take(pc.sort_indices(rows.column(TIMESTAMP)))
