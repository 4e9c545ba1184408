"""Keyed session windows on event time.

A session of a key is a maximal run of its events in which each is less than ``gap_ms`` after the previous
one (two events ``gap_ms`` or more apart are in different sessions). ``window_start_ms`` is the first event
time, ``window_end_ms`` the last event time plus ``gap_ms``; the session closes when the watermark reaches
its end. A new row may extend a session, start one, or bridge two (or more) into one. The lateness,
early-update and ``is_final`` rules of :mod:`pipelines.windows.tumbling` apply, with one addition: when a session
that has emitted a non-final result merges with an earlier one, its ``window_start_ms`` moves, so that
earlier result is superseded by the merged session's results under another upsert key (consumers that need
it retracted keep, per key, only sessions that do not overlap the latest one). A row is *late* when its own
single-event session would already have left state (``time + gap_ms + allowed_lateness_ms <= watermark``).

State is one row of merged partials per session (key, start, last event time). Merging is column-wise: the
sessions of the keys in a batch and the batch's rows are sorted by (key, start), a running maximum of the
end per key splits them where a start is at or after every earlier end, and the pieces are merged by the
shared :class:`AggregationPlan`; no per-event Python.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import AggregateConfig, SessionWindowConfig
from pipelines.state.keyed_operator import Added
from pipelines.windows.plan import (
    TOUCHED,
    AggregationPlan,
    EventTimeWindows,
    early_firing_due,
    key_codes,
    sort_results,
    split_event_time,
    split_late,
)
from pipelines.windows.plan import WINDOW_START_INTERNAL as _START

__all__ = ["SessionWindows"]

_LAST = "_last_event_time"


class SessionWindows(EventTimeWindows):
    """Keyed session windows with inactivity gap ``gap_ms`` (module doc)."""

    STATE_FORMAT = "session/2"  # 2: partials named by meaning

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        if not isinstance(config.window, SessionWindowConfig):
            raise TypeError(f"SessionWindows needs a session window config, not {config.window.type!r}")
        super().__init__(config, carry_trace)
        self.gap_ms = config.window.gap_ms
        self._sessions: pa.Table | None = None  # one row per session, TOUCHED all 0 between calls

    @property
    def state_rows(self) -> int:
        """Sessions in state: open, or closed but within allowed lateness."""
        return 0 if self._sessions is None else self._sessions.num_rows

    def add(self, batch: pa.RecordBatch) -> Added:
        """Merge ``batch``'s rows into sessions; updated results of closed sessions they touch are ``output``."""
        timed, no_event_time = split_event_time(batch)
        if timed.num_rows == 0:
            return Added(no_event_time=no_event_time)
        times = timed.column("_timestamp").to_numpy(zero_copy_only=False).astype(np.int64)
        closes = times + (self.gap_ms + self._lateness_ms)
        timed, times, late = split_late(timed, times, closes, self._watermark_ms)
        if timed.num_rows == 0:
            return Added(late=late, no_event_time=no_event_time)
        rows = pa.table(
            {
                self.key: timed.column(self.key),
                _START: pa.array(times, pa.int64()),
                **{name: timed.column(name) for name in self.plan.source_columns},
            }
        )
        singles = self.plan.partial_aggregate(rows)
        singles = singles.append_column(_LAST, singles.column(_START))
        singles = singles.append_column(TOUCHED, pa.array(np.ones(singles.num_rows, np.int8)))
        merged = self._merge_into_state(singles)
        ends = pc.add(merged.column(_LAST), self.gap_ms)
        updated = pc.and_(pc.equal(merged.column(TOUCHED), 1), pc.less_equal(ends, self._watermark_ms))
        output = sort_results([self._results(merged.filter(updated), is_final=False)], self.key)
        return Added(output=output, late=late, no_event_time=no_event_time)

    def _merge_into_state(self, singles: pa.Table) -> pa.Table:
        """Merge ``singles`` with the sessions of their keys; return the merged sessions of those keys."""
        if self._sessions is None:
            merged = _merge_sessions(self.plan, singles, self.gap_ms)
            unaffected = None
        else:
            affected_mask = pc.is_in(self._sessions.column(self.key), value_set=pc.unique(singles.column(self.key)))
            unaffected = self._sessions.filter(pc.invert(affected_mask))
            both = pa.concat_tables([self._sessions.filter(affected_mask), singles])
            merged = _merge_sessions(self.plan, both, self.gap_ms)
        kept = _untouched(merged)
        self._sessions = kept if unaffected is None or not unaffected.num_rows else pa.concat_tables([unaffected, kept])
        return merged

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark to ``watermark_ms`` (if later); return what that emits (module doc)."""
        previous = self._watermark_ms
        if watermark_ms <= previous:
            return None
        self._watermark_ms = watermark_ms
        if self._sessions is None:
            return None
        sessions = self._sessions
        ends = pc.add(sessions.column(_LAST), self.gap_ms)
        expiry = pc.add(ends, self._lateness_ms)
        early = early_firing_due(previous, watermark_ms, self._early_ms)
        if not early and pc.min(ends).as_py() > watermark_ms:
            return None
        closing = pc.and_(pc.greater(ends, previous), pc.less_equal(ends, watermark_ms))
        expired = pc.less_equal(expiry, watermark_ms)
        pieces = [
            self._results(sessions.filter(expired), is_final=True),
            self._results(sessions.filter(pc.and_(closing, pc.invert(expired))), is_final=False),
        ]
        if early:
            pieces.append(self._results(sessions.filter(pc.greater(ends, watermark_ms)), is_final=False))
        remaining = sessions.filter(pc.invert(expired))
        self._sessions = remaining if remaining.num_rows else None
        return sort_results(pieces, self.key)

    def _results(self, sessions: pa.Table, is_final: bool) -> pa.Table:
        ends = pc.add(sessions.column(_LAST), self.gap_ms)
        return self.plan.finalise(sessions, ends, is_final if self._updates else None)

    def snapshot(self) -> pa.Table:
        """One row per session: key, start, last event time, merged partials, TOUCHED; tagged."""
        if self._sessions is None:
            return self.state_meaning().tag(pa.table({self.key: pa.nulls(0), _START: pa.nulls(0, pa.int64())}))
        return self.state_meaning().tag(self._sessions)

    def restore(self, state: pa.Table, watermark_ms: int) -> None:
        """Replace state with (a subset of the rows of) snapshots of this operator, at ``watermark_ms``.

        Sessions past their lateness at ``watermark_ms`` are emitted (final) by the next :meth:`advance`.
        """
        self.state_meaning().check(state)
        self._watermark_ms = watermark_ms
        self._sessions = None
        if state.num_rows:
            pieces = self.plan.conform(state, [self.key, _START, _LAST, TOUCHED])
            self._sessions = _untouched(_merge_sessions(self.plan, pieces, self.gap_ms))


def _merge_sessions(plan: AggregationPlan, pieces: pa.Table, gap_ms: int) -> pa.Table:
    """Merge session pieces (key, start, last, partials, TOUCHED) into maximal sessions, one row each."""
    codes = key_codes(pieces.column(plan.key))
    starts = pieces.column(_START).to_numpy()
    ends = pieces.column(_LAST).to_numpy() + gap_ms
    order = np.lexsort((starts, codes))
    codes, starts, ends = codes[order], starts[order], ends[order]
    # dense ranks keep key * ranks + rank within int64; the running maximum then restarts at each key
    ranked, rank = np.unique(np.concatenate([starts, ends]), return_inverse=True)
    span = np.int64(len(ranked))
    start_at = codes * span + rank[: len(starts)]
    running_end = np.maximum.accumulate(codes * span + rank[len(starts) :])
    new_session = np.ones(len(starts), bool)
    new_session[1:] = start_at[1:] >= running_end[:-1]
    first_piece = np.maximum.accumulate(np.where(new_session, np.arange(len(starts)), 0))
    sorted_pieces = pieces.take(pa.array(order))
    session_starts = pa.array(starts[first_piece], pa.int64())
    sorted_pieces = sorted_pieces.set_column(sorted_pieces.schema.get_field_index(_START), _START, session_starts)
    return plan.merge(sorted_pieces, extra=[(_LAST, "max"), (TOUCHED, "max")])


def _untouched(sessions: pa.Table) -> pa.Table:
    index = sessions.schema.get_field_index(TOUCHED)
    return sessions.set_column(index, TOUCHED, pa.array(np.zeros(sessions.num_rows, np.int8)))
