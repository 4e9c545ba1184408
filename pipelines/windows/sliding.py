"""Keyed sliding windows on event time (as Kafka Streams' sliding windows, one window per distinct event time).

For each key and each distinct event time ``t`` of its rows there is one window: that key's rows with event
time in ``(t - size_ms, t]``, reported as ``window_start_ms = t - size_ms + 1`` and ``window_end_ms = t + 1``
(the same half-open ``[start, end)`` as tumbling windows). It closes when ``watermark >= t + 1``, and the
lateness, early-update and ``is_final`` rules of :mod:`pipelines.windows.tumbling` apply. Ties: the ``first`` trace
context is the row with the earliest event time, then the earliest to arrive.

State is the rows themselves (key, event time, source columns), kept only while a window that could still
be emitted needs them: a row at ``r`` is in the windows ``t`` in ``[r, r + size_ms)``, so it stays while
``r + size_ms + allowed_lateness_ms > watermark`` and is *late* when it arrives after that. A row whose own
window has expired but that falls in later windows is counted there, and no window of its time is created.
Windows are evaluated only when they emit: rows sorted by (key, time), each window's row range found with
``searchsorted``, the ranges exploded and aggregated by the shared :class:`AggregationPlan`; no per-event
Python.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import AggregateConfig, SlidingWindowConfig
from pipelines.state.keyed_operator import Added
from pipelines.windows.plan import (
    TRACEPARENT,
    WINDOW_START_INTERNAL,
    EventTimeWindows,
    early_firing_due,
    key_codes,
    sort_results,
    split_event_time,
    split_late,
)

__all__ = ["SlidingWindows"]

_TIME = "_event_time"


class _SortedRows:
    """State rows sorted by (key, event time), stable, with the numpy views the range queries need."""

    def __init__(self, rows: pa.Table) -> None:
        codes = key_codes(rows.column(0))
        times = rows.column(_TIME).to_numpy()
        self.order = np.lexsort((times, codes))
        self.table = rows.take(pa.array(self.order))
        self.codes, self.times = codes[self.order], times[self.order]
        first = np.ones(len(self.times), bool)
        first[1:] = (self.codes[1:] != self.codes[:-1]) | (self.times[1:] != self.times[:-1])
        self.window_rows = np.flatnonzero(first)
        """The first row of each distinct (key, time): one per window."""

    def ranges(self, windows: np.ndarray, size_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges ``[lo, hi)`` of the windows whose first rows are ``windows``: same key, time in
        ``(t - size_ms, t]``. Times are replaced by dense ranks so ``key * ranks + rank`` cannot overflow."""
        ends = self.times[windows]
        ranked, rank = np.unique(np.concatenate([self.times, ends, ends - size_ms]), return_inverse=True)
        span = np.int64(len(ranked))
        count, queries = len(self.times), len(windows)
        composite = self.codes * span + rank[:count]
        window_codes = self.codes[windows] * span
        hi = np.searchsorted(composite, window_codes + rank[count : count + queries], side="right")
        lo = np.searchsorted(composite, window_codes + rank[count + queries :], side="right")
        return lo, hi


class SlidingWindows(EventTimeWindows):
    """Keyed sliding event-time windows of ``size_ms``, one per key and distinct event time (module doc)."""

    STATE_FORMAT = "sliding/2"  # 2: the state records its meaning

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        if not isinstance(config.window, SlidingWindowConfig):
            raise TypeError(f"SlidingWindows needs a sliding window config, not {config.window.type!r}")
        super().__init__(config, carry_trace)
        self.size_ms = config.window.size_ms
        self._rows: list[pa.Table] = []
        self._min_time: int | None = None

    @property
    def _held_columns(self) -> frozenset[str]:
        """The event columns a snapshot must hold: the aggregations' (not the trace context's, which restore
        adds as nulls when tracing was turned on since)."""
        return frozenset(column for column in self.plan.source_columns if column != TRACEPARENT)

    @property
    def state_rows(self) -> int:
        """Rows kept for windows that may still be emitted."""
        return sum(rows.num_rows for rows in self._rows)

    def add(self, batch: pa.RecordBatch) -> Added:
        """Keep ``batch``'s rows; updated results of closed windows they fall in are ``output``."""
        timed, no_event_time = split_event_time(batch)
        if timed.num_rows == 0:
            return Added(no_event_time=no_event_time)
        times = timed.column("_timestamp").to_numpy(zero_copy_only=False).astype(np.int64)
        closes = times + (self.size_ms + self._lateness_ms)
        timed, times, late = split_late(timed, times, closes, self._watermark_ms)
        if timed.num_rows == 0:
            return Added(late=late, no_event_time=no_event_time)
        columns = {self.key: timed.column(self.key), _TIME: pa.array(times, pa.int64())}
        self._rows.append(pa.table({**columns, **{name: timed.column(name) for name in self.plan.source_columns}}))
        earliest = int(times.min())
        self._min_time = earliest if self._min_time is None else min(self._min_time, earliest)
        output = None
        if self._lateness_ms and earliest < self._watermark_ms:  # some window of the rows may have closed
            output = self._updated(new_rows=len(times))
        return Added(output=output, late=late, no_event_time=no_event_time)

    def _updated(self, new_rows: int) -> pa.Table | None:
        """Results of closed windows still in state that the last ``new_rows`` rows fall in (not final)."""
        rows = self._sorted()
        watermark = self._watermark_ms
        ends = rows.times[rows.window_rows] + 1
        closed = rows.window_rows[(ends <= watermark) & (ends + self._lateness_ms > watermark)]
        if not len(closed):
            return None
        lo, hi = rows.ranges(closed, self.size_ms)
        new = np.concatenate([[0], np.cumsum(rows.order >= rows.table.num_rows - new_rows)])
        touched = closed[new[hi] > new[lo]]
        return sort_results([self._results(rows, touched, is_final=False)], self.key)

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark to ``watermark_ms`` (if later); return what that emits (module doc)."""
        previous = self._watermark_ms
        if watermark_ms <= previous:
            return None
        self._watermark_ms = watermark_ms
        early = early_firing_due(previous, watermark_ms, self._early_ms)
        if self._min_time is None or (self._min_time + 1 > watermark_ms and not early):
            return None
        rows = self._sorted()
        ends = rows.times[rows.window_rows] + 1
        expiry = ends + self._lateness_ms
        existing = expiry > previous
        closing = existing & (ends > previous) & (ends <= watermark_ms)
        windows = rows.window_rows
        pieces = [
            self._results(rows, windows[closing & (expiry <= watermark_ms)], is_final=True),
            self._results(rows, windows[closing & (expiry > watermark_ms)], is_final=False),
            self._results(rows, windows[existing & ~closing & (expiry <= watermark_ms)], is_final=True),
        ]
        if early:
            pieces.append(self._results(rows, windows[ends > watermark_ms], is_final=False))
        self._prune(rows)
        return sort_results(pieces, self.key)

    def _prune(self, rows: _SortedRows) -> None:
        needed = rows.times + (self.size_ms + self._lateness_ms) > self._watermark_ms
        kept = rows.table if needed.all() else rows.table.filter(pa.array(needed))
        self._rows = [kept] if kept.num_rows else []
        self._min_time = int(rows.times[needed].min()) if kept.num_rows else None

    def _sorted(self) -> _SortedRows:
        rows = _SortedRows(self._rows[0] if len(self._rows) == 1 else pa.concat_tables(self._rows))
        self._rows = [rows.table]
        return rows

    def _results(self, rows: _SortedRows, windows: np.ndarray, is_final: bool) -> pa.Table:
        """Finalised results of ``windows`` (first row indices), each over its whole row range."""
        if not len(windows):
            return pa.table({})
        lo, hi = rows.ranges(windows, self.size_ms)
        lengths = hi - lo
        window_ids = np.repeat(np.arange(len(windows), dtype=np.int64), lengths)
        members = pa.array(np.arange(int(lengths.sum())) + np.repeat(lo - (np.cumsum(lengths) - lengths), lengths))
        exploded = pa.table(
            {
                self.key: rows.table.column(self.key).take(members),
                WINDOW_START_INTERNAL: window_ids,
                **{name: rows.table.column(name).take(members) for name in self.plan.source_columns},
            }
        )
        partials = self.plan.partial_aggregate(exploded).sort_by(WINDOW_START_INTERNAL)
        ids = partials.column(WINDOW_START_INTERNAL).to_numpy()
        times = rows.times[windows][ids]
        start = partials.schema.get_field_index(WINDOW_START_INTERNAL)
        partials = partials.set_column(start, WINDOW_START_INTERNAL, pa.array(times - self.size_ms + 1))
        return self.plan.finalise(partials, pa.array(times + 1), is_final if self._updates else None)

    def snapshot(self) -> pa.Table:
        """The rows in state (key, ``_event_time``, source columns), tagged with their meaning."""
        meaning = self.state_meaning(self._held_columns)
        if not self._rows:
            return meaning.tag(pa.table({self.key: pa.nulls(0), _TIME: pa.nulls(0, pa.int64())}))
        return meaning.tag(self._sorted().table)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace state with (a subset of the rows of) snapshots of this operator, at ``watermark_ms``."""
        self.state_meaning(self._held_columns).check(state)
        self._watermark_ms = watermark_ms
        state = state.replace_schema_metadata(None)
        if state.num_rows and TRACEPARENT in self.plan.source_columns and TRACEPARENT not in state.column_names:
            state = state.append_column(TRACEPARENT, pa.nulls(state.num_rows, pa.string()))  # tracing turned on since
        self._rows = [state.select([self.key, _TIME, *self.plan.source_columns])] if state.num_rows else []
        self._min_time = int(pc.min(state.column(_TIME)).as_py()) if state.num_rows else None
