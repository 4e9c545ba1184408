"""Keyed tumbling windows on event time, aggregated column-wise.

State is a set of *partial aggregates* per (key, window start): each incoming batch is grouped once with
pyarrow's hash aggregation and its partials are appended; when the watermark passes a window's end, the
partials are merged (count and sum add, min and max combine), the closed windows are finalised (mean = sum /
count) and removed from state. Per-event Python never runs.

The aggregator (what is computed: :class:`AggregationPlan`) is separate from the window mechanics
(:class:`TumblingWindows`), and the clock is the watermark passed in, so everything here runs without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import AggregateConfig

__all__ = ["WINDOW_END", "WINDOW_START", "AggregationPlan", "Rejected", "TumblingWindows"]

WINDOW_START = "window_start_ms"
WINDOW_END = "window_end_ms"
_START = "_window_start"
_MERGE = {"count_all": "sum", "count": "sum", "sum": "sum", "min": "min", "max": "max", "first": "first"}
TRACEPARENT = "_traceparent"
_NO_WATERMARK = -(1 << 62)


@dataclass(frozen=True)
class _Partial:
    name: str
    source: str | None
    function: str

    @property
    def merge(self) -> str:
        return _MERGE[self.function]


class AggregationPlan:
    """Which partial columns an aggregation set needs, and how partials become final values."""

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        """``carry_trace``: results keep the ``_traceparent`` of their first contributing event (DESIGN 6)."""
        self.key = config.key
        self._final: dict[str, tuple[str, ...]] = {}
        partials: dict[tuple[str | None, str], _Partial] = {}

        def partial(source: str | None, function: str) -> str:
            spec = partials.setdefault((source, function), _Partial(f"__p{len(partials)}", source, function))
            return spec.name

        for name, aggregation in config.aggregations.items():
            if aggregation.fn == "count":
                self._final[name] = ("count", partial(None, "count_all"))
            elif aggregation.fn == "mean":
                self._final[name] = (
                    "mean",
                    partial(aggregation.column, "sum"),
                    partial(aggregation.column, "count"),
                )
            else:
                self._final[name] = (aggregation.fn, partial(aggregation.column, aggregation.fn))
        if carry_trace:
            self._final[TRACEPARENT] = ("first", partial(TRACEPARENT, "first"))
        self.partials = tuple(partials.values())
        self.source_columns = sorted({spec.source for spec in self.partials if spec.source is not None})

    def partial_aggregate(self, rows: pa.Table) -> pa.Table:
        """Group raw rows (key, window start, source columns) into one partial row per (key, window)."""
        grouped = rows.group_by([self.key, _START], use_threads=False).aggregate(
            [([] if spec.source is None else spec.source, spec.function) for spec in self.partials]
        )
        return self._rename(grouped, merged=False)

    def merge(self, partials: pa.Table) -> pa.Table:
        grouped = partials.group_by([self.key, _START], use_threads=False).aggregate(
            [(spec.name, spec.merge) for spec in self.partials]
        )
        return self._rename(grouped, merged=True)

    def _rename(self, grouped: pa.Table, merged: bool) -> pa.Table:
        """pyarrow names aggregates ``{column}_{function}`` (``count_all`` alone); name them by partial."""
        columns = {self.key: grouped.column(self.key), _START: grouped.column(_START)}
        for spec in self.partials:
            if merged:
                produced = f"{spec.name}_{spec.merge}"
            else:
                produced = spec.function if spec.source is None else f"{spec.source}_{spec.function}"
            columns[spec.name] = grouped.column(produced)
        return pa.table(columns)

    def finalise(self, merged: pa.Table, size_ms: int) -> pa.Table:
        starts = merged.column(_START)
        columns: dict[str, pa.Array] = {
            self.key: merged.column(self.key),
            WINDOW_START: starts,
            WINDOW_END: pc.add(starts, size_ms),
        }
        for name, (function, *inputs) in self._final.items():
            if function == "mean":
                total, count = (merged.column(column) for column in inputs)
                columns[name] = pc.divide(pc.cast(total, pa.float64()), pc.cast(count, pa.float64()))
            else:
                columns[name] = merged.column(inputs[0])
        return pa.table(columns).sort_by([(WINDOW_START, "ascending"), (self.key, "ascending")])


@dataclass(frozen=True)
class Rejected:
    """Rows :meth:`TumblingWindows.add` did not count, whole (every column), each kind None when there is none.

    ``late``: their window had already been emitted. ``no_event_time``: ``_timestamp`` is null, so they have no
    window at all (possible when the schema's event-time field is not required and the record had no
    timestamp). The caller dead-letters both, with different reasons.
    """

    late: pa.RecordBatch | None = None
    no_event_time: pa.RecordBatch | None = None


class TumblingWindows:
    """Keyed tumbling event-time windows of ``size_ms``, closed when the watermark reaches their end.

    Contract: :meth:`add` never emits; :meth:`advance` emits each window exactly once, after which rows for it
    are *late* and returned by :meth:`add` instead of being counted. Rows without an event time are returned
    by :meth:`add` too, never counted. Watermarks only move forward.
    """

    _COMPACT_AFTER = 64

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        self.plan = AggregationPlan(config, carry_trace)
        self.size_ms = config.window.size_ms
        self.watermark_ms = _NO_WATERMARK
        self._partials: list[pa.Table] = []
        self._earliest_open_end: int | None = None

    @property
    def open_windows(self) -> int:
        self._compact()
        return sum(table.num_rows for table in self._partials)

    def add(self, batch: pa.RecordBatch) -> Rejected:
        """Fold ``batch`` (with ``_timestamp`` in epoch ms) into state; return the rows it did not count."""
        timestamps = batch.column("_timestamp")
        if not timestamps.null_count:
            return Rejected(late=self._fold(batch))
        has_time = pc.is_valid(timestamps)
        timed = batch.filter(has_time)
        return Rejected(
            late=self._fold(timed),
            no_event_time=batch.filter(pc.invert(has_time)),
        )

    def _fold(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """Count ``batch`` (no null ``_timestamp``) into state, except its late rows, which are returned."""
        if batch.num_rows == 0:
            return None
        times = batch.column("_timestamp").to_numpy(zero_copy_only=False).astype(np.int64)
        starts = times - np.mod(times, self.size_ms)
        late_mask = starts + self.size_ms <= self.watermark_ms
        late = None
        if late_mask.any():
            late = batch.filter(pa.array(late_mask))
            batch = batch.filter(pa.array(~late_mask))
            starts = starts[~late_mask]
            if batch.num_rows == 0:
                return late
        rows = pa.table(
            {
                self.plan.key: batch.column(self.plan.key),
                _START: pa.array(starts, pa.int64()),
                **{name: batch.column(name) for name in self.plan.source_columns},
            }
        )
        self._partials.append(self.plan.partial_aggregate(rows))
        earliest_end = int(starts.min()) + self.size_ms
        if self._earliest_open_end is None or earliest_end < self._earliest_open_end:
            self._earliest_open_end = earliest_end
        if len(self._partials) > self._COMPACT_AFTER:
            self._compact()
        return late

    def advance(self, watermark_ms: int) -> pa.Table | None:
        """Move the watermark to ``watermark_ms`` (if later) and return the windows that closed."""
        if watermark_ms <= self.watermark_ms:
            return None
        self.watermark_ms = watermark_ms
        if self._earliest_open_end is None or self._earliest_open_end > watermark_ms:
            return None
        state = self._compact()
        closed_mask = pc.less_equal(pc.add(state.column(_START), self.size_ms), watermark_ms)
        closed = state.filter(closed_mask)
        remaining = state.filter(pc.invert(closed_mask))
        self._partials = [remaining] if remaining.num_rows else []
        self._earliest_open_end = (
            int(pc.min(remaining.column(_START)).as_py()) + self.size_ms if remaining.num_rows else None
        )
        return self.plan.finalise(closed, self.size_ms) if closed.num_rows else None

    def flush(self) -> pa.Table | None:
        """Close every open window (end of input)."""
        return self.advance(1 << 62)

    def _compact(self) -> pa.Table:
        if not self._partials:
            return pa.table({})  # pragma: no cover - callers check for state first
        if len(self._partials) > 1:
            self._partials = [self.plan.merge(pa.concat_tables(self._partials))]
        return self._partials[0]
