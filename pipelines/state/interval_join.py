"""Interval and window joins: each left row meets every right row of its key in a span of event time.

* ``mode: interval``: a left row at ``t`` meets the right rows at ``s`` with ``t + lower_ms <= s <= t +
  upper_ms``;
* ``mode: window``: a left row meets the right rows in its tumbling window of ``size_ms`` (``[w, w + size_ms)``,
  ``w = t - t mod size_ms``), and its results carry ``window_start_ms`` and ``window_end_ms``.

One result row per pair, and with ``how: left`` one row with null right columns for a left row that meets none.

**Emitted on the watermark**: a left row waits until the stage's watermark (the minimum over both sides'
partitions) reaches the last millisecond of its span, when every right row it can meet has arrived, and is then
emitted with all its matches, so the output is the same whatever the partition counts, consumer speeds or a
replay. A row (either side) at or before the watermark when it arrives is *late*: it goes to the late output,
never into state. A right row is dropped once no waiting or later left row can meet it (interval: at ``s <=
watermark + lower_ms - max(upper_ms, 0)``; window: once the watermark reaches its window's last millisecond), in steps
of an eighth of the span (one copy of the kept rows a step, not a call).

State is one table in the stage's schema, the waiting left rows and the kept right rows told apart by
:data:`~pipelines.state.joins.SIDE`. Rows kept: about the rates of both sides times the span (``upper_ms -
lower_ms``, or ``size_ms``) plus the watermark's delay.
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
    Ints,
    JoinColumns,
    KeyCodes,
    int64s,
    joined,
    restored_sides,
    split_sides,
    tie_order,
)
from pipelines.state.keyed_operator import Added, StateMeaning
from pipelines.windows.plan import WINDOW_END, WINDOW_START

__all__ = ["STATE_FORMAT", "IntervalJoin"]

STATE_FORMAT = "interval-join/1"


class IntervalJoin:
    """Keyed state of an interval or window join; implements :class:`~pipelines.state.keyed_operator.KeyedOperator`.

    Contract: :meth:`add` stores the batch's rows and returns its late rows and rows without event time;
    :meth:`advance` returns the pairs of the left rows whose interval the watermark passed; :meth:`flush` those
    of every waiting left row. Rows come in the stage's schema, with :data:`~pipelines.state.joins.SIDE`;
    results have the columns of ``columns``, ordered by the left row's event time, then the right row's.
    """

    def __init__(self, config: JoinConfig, columns: JoinColumns) -> None:
        self._config = config
        self._columns = columns
        self._size_ms = config.size_ms
        if config.mode == "window":
            assert self._size_ms is not None  # JoinConfig checks mode window
            span = f"window {self._size_ms}"
        else:
            assert config.lower_ms is not None and config.upper_ms is not None  # JoinConfig checks mode interval
            span = f"[{config.lower_ms}, {config.upper_ms}]"
        self._lower_ms = config.lower_ms or 0
        self._upper_ms = config.upper_ms or 0
        self._meaning = StateMeaning(STATE_FORMAT, {"key": config.key, "left": config.left, "right": config.right,
                                                    "span": span})  # fmt: skip
        self._waiting: pa.Table | None = None
        self._right: pa.Table | None = None
        self._watermark_ms = NO_WATERMARK
        span_ms = self._size_ms if self._size_ms is not None else self._upper_ms - self._lower_ms
        self._drop_step_ms = max(1, span_ms // 8)
        self._dropped_before_ms = NO_WATERMARK

    @property
    def key(self) -> str:
        return self._config.key

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    @property
    def state_rows(self) -> int:
        """Waiting left rows and kept right rows."""
        return sum(table.num_rows for table in (self._waiting, self._right) if table is not None)

    def add(self, batch: pa.RecordBatch) -> Added:
        """Store ``batch``'s rows; return its late rows and those without event time."""
        sides = split_sides(batch, self._watermark_ms if self._watermark_ms > NO_WATERMARK else None)
        left, right = sides.left, sides.right
        if left.num_rows:
            self._waiting = left if self._waiting is None else pa.concat_tables([self._waiting, left])
        if right.num_rows:
            self._right = right if self._right is None else pa.concat_tables([self._right, right])
        return Added(late=sides.late, no_event_time=sides.no_event_time, late_reason=LATE_REASON)

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark forward; return the pairs of the left rows whose interval it passed."""
        if watermark_ms <= self._watermark_ms:
            return None
        self._watermark_ms = watermark_ms
        output = None
        if self._waiting is not None:
            _, ends = self._spans(int64s(self._waiting.column(TIMESTAMP)))
            due = ends <= watermark_ms
            if due.any():
                output = self._join(self._waiting.filter(pa.array(due)))
                rest = self._waiting.filter(pa.array(~due))
                self._waiting = rest if rest.num_rows else None
        first_needed = self._first_needed(watermark_ms)
        # right rows are dropped in steps of an eighth of the span: a copy of the kept rows per step, not per call
        if self._right is not None and first_needed - self._dropped_before_ms >= self._drop_step_ms:
            kept = self._right.filter(pc.greater_equal(self._right.column(TIMESTAMP), first_needed))
            self._right = kept if kept.num_rows else None
            self._dropped_before_ms = first_needed
        return output

    def _spans(self, times: Ints) -> tuple[Ints, Ints]:
        """The first and last millisecond of the right rows that left rows at ``times`` meet."""
        if self._size_ms is not None:
            starts = times - np.mod(times, self._size_ms)
            return starts, starts + (self._size_ms - 1)
        return times + self._lower_ms, times + self._upper_ms

    def _first_needed(self, watermark_ms: int) -> int:
        """The oldest right row a waiting or later left row can still meet at ``watermark_ms``: a later left row
        is after the watermark, and a waiting one's span ends after it."""
        if self._size_ms is not None:
            after = min(watermark_ms, END_OF_TIME_MS - 1) + 1
            return after - after % self._size_ms
        # a later left row (t > watermark) needs s >= t + lower_ms; a waiting one (t + upper_ms > watermark) needs
        # s >= t + lower_ms > watermark - upper_ms + lower_ms: the lower of the two, whatever the sign of upper_ms
        return watermark_ms + 1 + self._lower_ms - max(self._upper_ms, 0)

    def flush(self) -> pa.Table | None:
        """End of input: the pairs of every waiting left row."""
        return self.advance(END_OF_TIME_MS)

    def snapshot(self) -> pa.Table:
        """The waiting left rows and kept right rows in one table, tagged ``interval-join/1``."""
        parts = [table for table in (self._waiting, self._right) if table is not None]
        state = pa.concat_tables(parts) if parts else pa.table({self.key: pa.array([], pa.null())})
        return self._meaning.tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace the state with (some of the rows of) snapshots of an interval join of the same config."""
        self._meaning.check(state)
        self._watermark_ms = watermark_ms
        self._waiting, self._right = restored_sides(state, "interval join")
        self._dropped_before_ms = NO_WATERMARK

    def _join(self, left: pa.Table) -> pa.Table | None:
        """Every pair of a ``left`` row and a kept right row in its interval, by the left row's time, then the
        right row's (``how: left``: a left row in none, once, its right columns null)."""
        left = left.take(pc.sort_indices(left.column(TIMESTAMP)))
        left_rows, right_rows = self._pairs(left)
        if self._config.how == "left":
            alone = np.setdiff1d(np.arange(left.num_rows, dtype=np.int64), left_rows)
            order = np.lexsort((np.arange(len(left_rows) + len(alone)), np.concatenate([left_rows, alone])))
            left_rows = np.concatenate([left_rows, alone])[order]
            right_rows = np.concatenate([right_rows, np.full(len(alone), -1, dtype=np.int64)])[order]
        rows = left.take(pa.array(left_rows, pa.int64()))
        result = joined(rows, self._right, right_rows, self._columns)
        if self._columns.windowed:
            starts, ends = self._spans(int64s(rows.column(TIMESTAMP)))
            result = result.append_column(WINDOW_START, pa.array(starts)).append_column(WINDOW_END, pa.array(ends + 1))
        return result if result.num_rows else None

    def _pairs(self, left: pa.Table) -> tuple[Ints, Ints]:
        """Row numbers (left, right) of every pair in an interval, left rows in order, each one's right rows by
        time (:func:`tie_order`)."""
        empty = np.zeros(0, dtype=np.int64)
        if self._right is None:
            return empty, empty
        left_times = int64s(left.column(TIMESTAMP))
        starts, ends = self._spans(left_times)
        # only the right rows of these keys within these spans can pair: a hash lookup of each kept row's key,
        # then the sort and search over those few
        candidates = np.flatnonzero(
            np.asarray(
                pc.and_(
                    pc.is_in(self._right.column(self.key), value_set=pc.unique(left.column(self.key))),
                    pc.and_(pc.greater_equal(self._right.column(TIMESTAMP), int(starts.min())),
                            pc.less_equal(self._right.column(TIMESTAMP), int(ends.max()))),
                ).to_numpy(zero_copy_only=False),
                dtype=bool,
            )
        )  # fmt: skip
        if not len(candidates):
            return empty, empty
        right = self._right.take(pa.array(candidates))
        codes = KeyCodes.of(right.column(self.key), left.column(self.key))
        right_times = int64s(right.column(TIMESTAMP))
        order = tie_order(right, codes.first)
        # one sortable number per (key, time): the code times the number of distinct times, plus the time's rank
        distinct, ranks = np.unique(np.concatenate([right_times, starts, ends]), return_inverse=True)
        ranks = ranks.reshape(-1)
        width = len(distinct)
        count = len(right_times)
        right_points = (codes.first * width + ranks[:count])[order]
        first = np.searchsorted(right_points, codes.second * width + ranks[count : count + len(starts)], side="left")
        last = np.searchsorted(right_points, codes.second * width + ranks[count + len(starts) :], side="right")
        matches = np.where(codes.second >= 0, last - first, 0)
        left_rows = np.repeat(np.arange(left.num_rows, dtype=np.int64), matches)
        # the positions first[i] .. last[i]-1 of each left row i, in one array
        steps = np.arange(len(left_rows), dtype=np.int64) - np.repeat(np.cumsum(matches) - matches, matches)
        right_rows = candidates[order[np.repeat(first, matches) + steps]]
        return left_rows, np.asarray(right_rows, dtype=np.int64)
