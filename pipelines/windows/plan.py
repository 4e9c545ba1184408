"""What a windowed aggregate computes, apart from which rows fall in which window.

An :class:`AggregationPlan` turns raw rows into *partial aggregates* (count, sum, min, max, first) grouped by
(key, window start), merges partials (count and sum add, min and max combine, first keeps the first) and
finalises them into result rows (mean = sum / count). Every window kind (tumbling, hopping, sliding, session)
shares it, so an aggregation means the same thing in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import AggregateConfig
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK
from pipelines.state.keyed_operator import StateMeaning

__all__ = [
    "IS_FINAL",
    "TOUCHED",
    "TRACEPARENT",
    "WINDOW_END",
    "WINDOW_START",
    "WINDOW_START_INTERNAL",
    "AggregationPlan",
    "EventTimeWindows",
    "early_firing_due",
    "key_codes",
    "sort_results",
    "split_event_time",
    "split_late",
]

WINDOW_START = "window_start_ms"
WINDOW_END = "window_end_ms"
IS_FINAL = "is_final"
TRACEPARENT = "_traceparent"
WINDOW_START_INTERNAL = "_window_start"
TOUCHED = "_touched"
"""int8 column of state tables: 1 where a window took rows since it last emitted (only where updates matter)."""

_MERGE = {"count_all": "sum", "count": "sum", "sum": "sum", "min": "min", "max": "max", "first": "first"}


@dataclass(frozen=True)
class _Partial:
    source: str | None
    function: str

    @property
    def name(self) -> str:
        """Named by meaning (``sum(amount_cents)``, ``count(*)``), never by position: state written under one
        order of the aggregations reads the same under another."""
        return f"{'count' if self.function == 'count_all' else self.function}({self.source or '*'})"

    @property
    def merge(self) -> str:
        return _MERGE[self.function]


class AggregationPlan:
    """Which partial columns an aggregation set needs, and how partials become final values."""

    def __init__(self, config: AggregateConfig, carry_trace: bool = False) -> None:
        """``carry_trace``: results keep the ``_traceparent`` of their first contributing event
        (ARCHITECTURE.md section 6)."""
        self.key = config.key
        self._final: dict[str, tuple[str, ...]] = {}
        partials: dict[str, _Partial] = {}
        self.needed_by: dict[str, str] = {}
        """Each partial's name to the aggregations that need it, for messages."""

        def partial(source: str | None, function: str, needed_by: str) -> str:
            candidate = _Partial(source, function)
            spec = partials.setdefault(candidate.name, candidate)
            named = self.needed_by.get(spec.name)
            self.needed_by[spec.name] = needed_by if named is None else f"{named} and {needed_by}"
            return spec.name

        for name, aggregation in config.aggregations.items():
            needed_by = f"aggregation {name!r}"
            if aggregation.fn == "count":
                self._final[name] = ("count", partial(None, "count_all", needed_by))
            elif aggregation.fn == "mean":
                self._final[name] = (
                    "mean",
                    partial(aggregation.column, "sum", needed_by),
                    partial(aggregation.column, "count", needed_by),
                )
            else:
                self._final[name] = (aggregation.fn, partial(aggregation.column, aggregation.fn, needed_by))
        if carry_trace:
            self._final[TRACEPARENT] = ("first", partial(TRACEPARENT, "first", "tracing"))
        self.partials = tuple(partials.values())
        self.source_columns = sorted({spec.source for spec in self.partials if spec.source is not None})

    @property
    def held_partials(self) -> frozenset[str]:
        """The partials a snapshot must hold to restore; the trace partial is optional (tracing may have been
        turned on since: restored windows then carry no trace context, see :meth:`conform`)."""
        return frozenset(spec.name for spec in self.partials if spec.source != TRACEPARENT)

    def conform(self, state: pa.Table, columns: Sequence[str]) -> pa.Table:
        """``state`` (checked by its meaning) cut to ``columns`` and this plan's partials, a trace partial it
        lacks added as nulls; the partials of aggregations removed since the snapshot are dropped."""
        state = state.replace_schema_metadata(None)
        for spec in self.partials:
            if spec.source == TRACEPARENT and spec.name not in state.column_names:
                state = state.append_column(spec.name, pa.nulls(state.num_rows, pa.string()))
        return state.select([*columns, *(spec.name for spec in self.partials)])

    def partial_aggregate(self, rows: pa.Table, by: str = WINDOW_START_INTERNAL) -> pa.Table:
        """Group raw rows (key, ``by``, source columns) into one partial row per (key, ``by``), in row order."""
        grouped = rows.group_by([self.key, by], use_threads=False).aggregate(
            [([] if spec.source is None else spec.source, spec.function) for spec in self.partials]
        )
        return self._rename(grouped, merged=False, by=by, extra=())

    def merge(self, partials: pa.Table, extra: Sequence[tuple[str, str]] = ()) -> pa.Table:
        """One partial row per (key, window start); ``extra`` (column, function) pairs keep their column name."""
        grouped = partials.group_by([self.key, WINDOW_START_INTERNAL], use_threads=False).aggregate(
            [(spec.name, spec.merge) for spec in self.partials] + list(extra)
        )
        return self._rename(grouped, merged=True, by=WINDOW_START_INTERNAL, extra=extra)

    def _rename(self, grouped: pa.Table, merged: bool, by: str, extra: Sequence[tuple[str, str]]) -> pa.Table:
        """pyarrow names aggregates ``{column}_{function}`` (``count_all`` alone); name them by partial."""
        columns = {self.key: grouped.column(self.key), by: grouped.column(by)}
        for spec in self.partials:
            if merged:
                produced = f"{spec.name}_{spec.merge}"
            else:
                produced = spec.function if spec.source is None else f"{spec.source}_{spec.function}"
            columns[spec.name] = grouped.column(produced)
        for column, function in extra:
            columns[column] = grouped.column(f"{column}_{function}")
        return pa.table(columns)

    def finalise(self, merged: pa.Table, ends: pa.Array | pa.ChunkedArray, is_final: bool | None = None) -> pa.Table:
        """Result rows: key, window start and end, each aggregation, ``is_final`` (unless None), trace context.

        Rows come in the order of ``merged``; :func:`sort_results` orders an emission.
        """
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            self.key: merged.column(self.key),
            WINDOW_START: merged.column(WINDOW_START_INTERNAL),
            WINDOW_END: ends,
        }
        for name, (function, *inputs) in self._final.items():
            if name == TRACEPARENT and is_final is not None:
                columns[IS_FINAL] = pa.array([is_final] * merged.num_rows, pa.bool_())
            if function == "mean":
                total, count = (merged.column(column) for column in inputs)
                columns[name] = pc.divide(pc.cast(total, pa.float64()), pc.cast(count, pa.float64()))
            else:
                columns[name] = merged.column(inputs[0])
        if is_final is not None and IS_FINAL not in columns:
            columns[IS_FINAL] = pa.array([is_final] * merged.num_rows, pa.bool_())
        return pa.table(columns)


def sort_results(pieces: Sequence[pa.Table], key: str) -> pa.Table | None:
    """One emission: ``pieces`` concatenated, ordered by window start then key; None when there is no row."""
    present = [piece for piece in pieces if piece.num_rows]
    if not present:
        return None
    table = present[0] if len(present) == 1 else pa.concat_tables(present)
    return table.sort_by([(WINDOW_START, "ascending"), (key, "ascending")])


def early_firing_due(previous_ms: int, watermark_ms: int, every_ms: int | None) -> bool:
    """Whether moving the watermark from ``previous_ms`` to ``watermark_ms`` crosses a multiple of ``every_ms``.

    Early firings are aligned to multiples of ``every_ms`` in event time rather than counted from the last
    firing, so they depend on the watermark alone and a restored operator fires exactly where an uninterrupted
    one would.
    """
    return every_ms is not None and watermark_ms // every_ms > previous_ms // every_ms


def split_event_time(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
    """``batch`` split into rows with a ``_timestamp`` and (None when there is none) rows without one."""
    timestamps = batch.column("_timestamp")
    if not timestamps.null_count:
        return batch, None
    has_time = pc.is_valid(timestamps)
    return batch.filter(has_time), batch.filter(pc.invert(has_time))


def key_codes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An int64 code per row, equal exactly where the keys are equal (null is a key like any other)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    encoded = pc.dictionary_encode(keys, null_encoding="encode")
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


class EventTimeWindows:
    """What every window kind shares: its aggregation plan, lateness and early-update settings, its watermark.

    Subclasses set ``STATE_FORMAT`` and implement ``advance``; ``flush`` closes everything (end of input).
    Their snapshots are tagged with :meth:`state_meaning`, which restore checks.
    """

    STATE_FORMAT: ClassVar[str]

    def __init__(self, config: AggregateConfig, carry_trace: bool) -> None:
        self.plan = AggregationPlan(config, carry_trace)
        settings = config.window.model_dump(exclude={"type"})
        self._window = " ".join([config.window.type, *(f"{name}={value}" for name, value in sorted(settings.items()))])
        self._lateness_ms = config.allowed_lateness_ms
        self._early_ms = config.early_update_ms
        self._updates = config.emits_updates
        self._watermark_ms = NO_WATERMARK

    @property
    def key(self) -> str:
        return self.plan.key

    @property
    def watermark_ms(self) -> int:
        return self._watermark_ms

    def state_meaning(self, holds: frozenset[str] | None = None) -> StateMeaning:
        """What this operator's snapshots mean: its format, key column and window; ``holds`` (by default the
        plan's partials) what each row of them carries."""
        return StateMeaning(
            self.STATE_FORMAT,
            {"key": self.key, "window": self._window},
            self.plan.held_partials if holds is None else holds,
            self.plan.needed_by,
        )

    def advance(self, watermark_ms: int) -> pa.Table | None:
        raise NotImplementedError

    def flush(self) -> pa.Table | None:
        """Close every window and emit its final result (end of input)."""
        return self.advance(END_OF_TIME_MS)


def split_late(
    batch: pa.RecordBatch, times: np.ndarray, last_close_ms: np.ndarray, watermark_ms: int
) -> tuple[pa.RecordBatch, np.ndarray, pa.RecordBatch | None]:
    """Split off the rows whose last possible window closed for good (``last_close_ms <= watermark_ms``):
    return the rows still counted, their ``times``, and the late rows (None when there are none)."""
    late_mask = last_close_ms <= watermark_ms
    if not late_mask.any():
        return batch, times, None
    kept = ~late_mask
    return batch.filter(pa.array(kept)), times[kept], batch.filter(pa.array(late_mask))
