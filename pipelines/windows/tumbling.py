"""Keyed event-time windows, aggregated column-wise: tumbling and hopping here, sliding and session apart.

State is a set of *partial aggregates* per (key, window start): each incoming batch is grouped once with
pyarrow's hash aggregation and its partials are appended; when the watermark passes a window's end, the
partials are merged (count and sum add, min and max combine), the window is finalised (mean = sum / count)
and emitted. Per-event Python never runs. The aggregator (:class:`AggregationPlan`) is separate from the
window mechanics, and the clock is the watermark passed in, so everything here runs without Ray.

Result semantics, shared by every window kind (see :class:`~pipelines.state.keyed_operator.KeyedOperator`):

* A window *closes* when the watermark reaches its end (``watermark >= window_end_ms``) and is emitted then.
  It stays in state until ``watermark >= window_end_ms + allowed_lateness_ms``; a row for it until then is
  counted and the window's updated result is emitted right away, from :meth:`add`. A row that can be counted
  in no window still in state (or still to come) is returned as ``late``, never counted (as Flink, a row of
  several windows is late only when every one of them has expired).
* ``early_update_ms``: each time the watermark crosses a multiple of it, the current result of every window
  not yet closed is emitted (aligned to event time, not to the last firing, so a restored operator fires
  exactly where an uninterrupted one would).
* With lateness and early updates off, each window is emitted exactly once and results have the columns key,
  ``window_start_ms``, ``window_end_ms``, the aggregations and, with ``carry_trace``, ``_traceparent``. With
  either on they also have ``is_final`` (before ``_traceparent``), and (key, ``window_start_ms``) is an upsert
  key: a window emits zero or more ``is_final`` false results (early, on close when lateness is allowed,
  after each late update) and then exactly one ``is_final`` true result, when it leaves state (on close when
  there is no lateness). The true one is complete: nothing changes that window afterwards.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import AggregateConfig, HoppingWindowConfig, SessionWindowConfig, TumblingWindowConfig
from pipelines.state.keyed_operator import Added, KeyedOperator
from pipelines.windows.plan import (
    IS_FINAL,
    TOUCHED,
    WINDOW_END,
    WINDOW_START,
    AggregationPlan,
    EventTimeWindows,
    early_firing_due,
    sort_results,
    split_event_time,
    split_late,
)
from pipelines.windows.plan import WINDOW_START_INTERNAL as _START
from pipelines.windows.session import SessionWindows
from pipelines.windows.sliding import SlidingWindows

__all__ = [
    "IS_FINAL",
    "WINDOW_END",
    "WINDOW_START",
    "AggregationPlan",
    "HoppingWindows",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "open_windows",
]

"""Deprecated name of :class:`Added`, kept while tests/unit/test_plan.py still imports it."""


def open_windows(config: AggregateConfig, carry_trace: bool = False) -> KeyedOperator:
    """The window operator ``config.window`` describes (tumbling, hopping, sliding or session)."""
    window = config.window
    if isinstance(window, TumblingWindowConfig):
        return TumblingWindows(config, carry_trace)
    if isinstance(window, HoppingWindowConfig):
        return HoppingWindows(config, carry_trace)
    if isinstance(window, SessionWindowConfig):
        return SessionWindows(config, carry_trace)
    return SlidingWindows(config, carry_trace)


class _AlignedWindows(EventTimeWindows):
    """Windows ``[start, start + size_ms)`` with starts at multiples of ``hop_ms`` (hop == size: tumbling).

    State: partials of windows not closed yet (``end > watermark``), appended per batch and merged lazily;
    and, with allowed lateness, the merged partials of closed windows still taking late rows.
    """

    STATE_FORMAT: ClassVar[str]
    _COMPACT_AFTER = 64

    def __init__(self, config: AggregateConfig, carry_trace: bool, size_ms: int, hop_ms: int) -> None:
        super().__init__(config, carry_trace)
        self.size_ms = size_ms
        self.hop_ms = hop_ms
        self._partials: list[pa.Table] = []
        self._earliest_open_end: int | None = None
        self._closed: pa.Table | None = None  # merged, with TOUCHED; only when lateness is allowed

    @property
    def state_rows(self) -> int:
        """Windows in state: not closed yet, or closed but within allowed lateness."""
        open_rows = self._compact().num_rows if self._partials else 0
        return open_rows + (0 if self._closed is None else self._closed.num_rows)

    def add(self, batch: pa.RecordBatch) -> Added:
        """Fold ``batch`` (``_timestamp`` in epoch ms) into state; updates of closed windows are ``output``."""
        timed, no_event_time = split_event_time(batch)
        output, late = self._fold(timed)
        return Added(output=output, late=late, no_event_time=no_event_time)

    def _fold(self, batch: pa.RecordBatch) -> tuple[pa.Table | None, pa.RecordBatch | None]:
        if batch.num_rows == 0:
            return None, None
        times = batch.column("_timestamp").to_numpy(zero_copy_only=False).astype(np.int64)
        last_starts = times - np.mod(times, self.hop_ms)
        closes = last_starts + (self.size_ms + self._lateness_ms)
        batch, last_starts, late = split_late(batch, last_starts, closes, self._watermark_ms)
        if batch.num_rows == 0:
            return None, late
        rows = self._assign(batch, last_starts)
        if not self._lateness_ms:  # no row of a closed window passes the late check: the fast path
            self._append(rows)
            return None, late
        starts = rows.column(_START).to_numpy()
        closed_mask = starts + self.size_ms <= self._watermark_ms
        if not closed_mask.any():
            self._append(rows)
            return None, late
        if not closed_mask.all():
            self._append(rows.filter(pa.array(~closed_mask)))
        return self._update_closed(rows.filter(pa.array(closed_mask))), late

    def _assign(self, batch: pa.RecordBatch, last_starts: np.ndarray) -> pa.Table:
        """Rows (key, window start, source columns): one per row and window of it still in state."""
        sources = {name: batch.column(name) for name in self.plan.source_columns}
        key = batch.column(self.plan.key)
        per_row = self.size_ms // self.hop_ms
        if per_row == 1:
            return pa.table({self.plan.key: key, _START: pa.array(last_starts, pa.int64()), **sources})
        index = np.repeat(np.arange(batch.num_rows), per_row)
        starts = np.repeat(last_starts, per_row) - np.tile(
            np.arange(per_row, dtype=np.int64) * self.hop_ms, len(last_starts)
        )
        expired = starts + (self.size_ms + self._lateness_ms) <= self._watermark_ms
        if expired.any():
            index, starts = index[~expired], starts[~expired]
        taken = pa.array(index)
        return pa.table(
            {
                self.plan.key: key.take(taken),
                _START: pa.array(starts, pa.int64()),
                **{name: column.take(taken) for name, column in sources.items()},
            }
        )

    def _append(self, rows: pa.Table) -> None:
        self._partials.append(self.plan.partial_aggregate(rows))
        earliest_end = int(pc.min(rows.column(_START)).as_py()) + self.size_ms
        if self._earliest_open_end is None or earliest_end < self._earliest_open_end:
            self._earliest_open_end = earliest_end
        if len(self._partials) > self._COMPACT_AFTER:
            self._compact()

    def _update_closed(self, rows: pa.Table) -> pa.Table | None:
        """Count rows of closed windows still in state; return those windows' updated (not final) results."""
        partial = self.plan.partial_aggregate(rows)
        partial = partial.append_column(TOUCHED, pa.array(np.ones(partial.num_rows, np.int8)))
        both = partial if self._closed is None else pa.concat_tables([self._closed, partial])
        merged = self.plan.merge(both, extra=[(TOUCHED, "max")])
        touched = pc.equal(merged.column(TOUCHED), 1)
        self._closed = _untouched(merged)
        return sort_results([self._results(merged.filter(touched), is_final=False)], self.key)

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark to ``watermark_ms`` (if later); return what that emits (see the module doc)."""
        previous = self._watermark_ms
        if watermark_ms <= previous:
            return None
        self._watermark_ms = watermark_ms
        pieces = []
        if self._closed is not None:
            pieces.append(self._expire(watermark_ms))
        if self._earliest_open_end is not None and self._earliest_open_end <= watermark_ms:
            pieces.extend(self._close(watermark_ms))
        if self._partials and early_firing_due(previous, watermark_ms, self._early_ms):
            pieces.append(self._results(self._compact(), is_final=False))
        return sort_results(pieces, self.key) if pieces else None

    def _expire(self, watermark_ms: int) -> pa.Table:
        """Remove closed windows past their lateness; return their final results."""
        assert self._closed is not None
        expired = pc.less_equal(pc.add(self._closed.column(_START), self.size_ms + self._lateness_ms), watermark_ms)
        final = self._closed.filter(expired)
        remaining = self._closed.filter(pc.invert(expired))
        self._closed = remaining if remaining.num_rows else None
        return self._results(final, is_final=True)

    def _close(self, watermark_ms: int) -> list[pa.Table]:
        state = self._compact()
        closing_mask = pc.less_equal(pc.add(state.column(_START), self.size_ms), watermark_ms)
        closing = state.filter(closing_mask)
        remaining = state.filter(pc.invert(closing_mask))
        self._partials = [remaining] if remaining.num_rows else []
        self._earliest_open_end = (
            int(pc.min(remaining.column(_START)).as_py()) + self.size_ms if remaining.num_rows else None
        )
        if not self._lateness_ms:
            return [self._results(closing, is_final=True)]
        final_mask = pc.less_equal(pc.add(closing.column(_START), self.size_ms + self._lateness_ms), watermark_ms)
        kept = closing.filter(pc.invert(final_mask))
        if kept.num_rows:
            kept = _untouched(kept)
            self._closed = kept if self._closed is None else pa.concat_tables([self._closed, kept])
        return [self._results(closing.filter(final_mask), is_final=True), self._results(kept, is_final=False)]

    def _results(self, merged: pa.Table, is_final: bool) -> pa.Table:
        ends = pc.add(merged.column(_START), self.size_ms)
        return self.plan.finalise(merged, ends, is_final if self._updates else None)

    def snapshot(self) -> pa.Table:
        """Every window in state: key, window start, merged partials and TOUCHED, tagged with its meaning."""
        pieces = [_untouched(self._compact())] if self._partials else []
        pieces += [] if self._closed is None else [self._closed]
        state = (
            pa.concat_tables(pieces) if pieces else pa.table({self.key: pa.nulls(0), _START: pa.nulls(0, pa.int64())})
        )
        return self.state_meaning().tag(state)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace state with (a subset of the rows of) snapshots of this operator, at ``watermark_ms``.

        Windows the watermark has already closed are kept as closed; those past their lateness are emitted
        (final) by the next :meth:`advance`.
        """
        self.state_meaning().check(state)
        self._watermark_ms = watermark_ms
        self._partials, self._closed, self._earliest_open_end = [], None, None
        if not state.num_rows:
            return
        merged = self.plan.merge(self.plan.conform(state, [self.key, _START, TOUCHED]), extra=[(TOUCHED, "max")])
        open_mask = pc.greater(pc.add(merged.column(_START), self.size_ms), watermark_ms)
        still_open = merged.filter(open_mask).drop_columns([TOUCHED])
        closed = merged.filter(pc.invert(open_mask))
        if still_open.num_rows:
            self._partials = [still_open]
            self._earliest_open_end = int(pc.min(still_open.column(_START)).as_py()) + self.size_ms
        self._closed = closed if closed.num_rows else None

    def _compact(self) -> pa.Table:
        if not self._partials:
            return pa.table({})  # pragma: no cover - callers check for state first
        if len(self._partials) > 1:
            self._partials = [self.plan.merge(pa.concat_tables(self._partials))]
        return self._partials[0]


def _untouched(partials: pa.Table) -> pa.Table:
    zeros = pa.array(np.zeros(partials.num_rows, np.int8))
    index = partials.schema.get_field_index(TOUCHED)
    return partials.append_column(TOUCHED, zeros) if index < 0 else partials.set_column(index, TOUCHED, zeros)


class TumblingWindows(_AlignedWindows):
    """Keyed tumbling event-time windows ``[n * size_ms, (n + 1) * size_ms)``: each row is in exactly one."""

    STATE_FORMAT = "tumbling/2"  # 2: partials named by meaning

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        if not isinstance(config.window, TumblingWindowConfig):
            raise TypeError(f"TumblingWindows needs a tumbling window config, not {config.window.type!r}")
        super().__init__(config, carry_trace, config.window.size_ms, config.window.size_ms)


class HoppingWindows(_AlignedWindows):
    """Windows of ``size_ms`` starting at every multiple of ``hop_ms``: each row is in ``size_ms / hop_ms``."""

    STATE_FORMAT = "hopping/2"

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        if not isinstance(config.window, HoppingWindowConfig):
            raise TypeError(f"HoppingWindows needs a hopping window config, not {config.window.type!r}")
        super().__init__(config, carry_trace, config.window.size_ms, config.window.hop_ms)
