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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import JoinConfig
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK
from pipelines.state.joins import (
    LATE_REASON,
    TIMESTAMP,
    JoinColumns,
    int64s,
    joined,
    restored_sides,
    split_sides,
)
from pipelines.state.keyed_operator import Added, StateMeaning
from pipelines.state.version_index import VersionIndex

__all__ = ["STATE_FORMAT", "TemporalJoin"]

STATE_FORMAT = "temporal-join/1"


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
        self._versions = VersionIndex(config.key)
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
        return (0 if self._waiting is None else self._waiting.num_rows) + self._versions.rows

    def add(self, batch: pa.RecordBatch) -> Added:
        """Store ``batch``'s versions and left rows (eager: join the left rows at once)."""
        watermark = self._watermark_ms if not self._eager and self._watermark_ms > NO_WATERMARK else None
        split = split_sides(batch, watermark)
        if split.right.num_rows:
            self._versions.add(split.right)
            if self._eager:
                self._versions.maintain(END_OF_TIME_MS)  # only the newest version of each key is ever met
        output = None
        if split.left.num_rows:
            if self._eager:
                output = self._join(split.left)
            else:
                self._waiting = split.left if self._waiting is None else pa.concat_tables([self._waiting, split.left])
        return Added(output=output, late=split.late, no_event_time=split.no_event_time, late_reason=LATE_REASON)

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
        self._versions.maintain(watermark_ms)
        return output

    def flush(self) -> pa.Table | None:
        """End of input: every waiting left row, joined."""
        return self.advance(END_OF_TIME_MS)

    def snapshot(self) -> pa.Table:
        """The waiting left rows and kept versions in one table, tagged ``temporal-join/1``."""
        parts = [table for table in (self._waiting, self._versions.table()) if table is not None]
        state = pa.concat_tables(parts) if parts else pa.table({self.key: pa.array([], pa.null())})
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace the state with (some of the rows of) snapshots of a temporal join of the same config."""
        self._meaning.check(state)
        self._watermark_ms = watermark_ms
        self._versions = VersionIndex(self._config.key)
        self._waiting, versions = restored_sides(state, "temporal join")
        if versions is not None:
            self._versions.add(versions)
            self._versions.maintain(END_OF_TIME_MS if self._eager else watermark_ms, force=True)

    def _join(self, left: pa.Table) -> pa.Table | None:
        """``left`` rows with the version each meets (``how: inner`` leaves out those that meet none): the one
        valid at its time, or eager the newest known."""
        times = np.full(left.num_rows, END_OF_TIME_MS) if self._eager else int64s(left.column(TIMESTAMP))
        positions = self._versions.lookup(left.column(self.key), times)
        if self._config.how == "inner":
            met = positions >= 0
            left, positions = left.filter(pa.array(met)), positions[met]
        result = joined(left, self._versions.table(), positions, self._columns)
        return result if result.num_rows else None

    @staticmethod
    def _in_time_order(rows: pa.Table) -> pa.Table:
        return rows.take(pc.sort_indices(rows.column(TIMESTAMP)))
