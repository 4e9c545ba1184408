"""What the two join operators share: which side a row is on, which columns a result has, and matching by key.

A join stage takes two inputs or stages in one schema (:mod:`pipelines.stages.topology`), and each row carries
its side in :data:`SIDE` (``LEFT`` or ``RIGHT``), set where the rows are conformed to the stage's schema. A result
row is a left row's columns (:attr:`JoinColumns.left`) followed by the columns only the right side has
(:attr:`JoinColumns.right`): a column both sides have (the key, ``_timestamp``, ``_partition``) is the left row's.

Keys and times are matched with numpy over integer codes (no per-row Python): both sides' keys are dictionary
encoded together, so equal keys get equal codes, and a null key matches nothing (as in SQL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.state.keyed_operator import StateFormatError
from pipelines.windows.plan import WINDOW_END, WINDOW_START

__all__ = [
    "LATE_REASON",
    "LEFT",
    "RIGHT",
    "SIDE",
    "TIMESTAMP",
    "WINDOW_COLUMNS",
    "Ints",
    "JoinColumns",
    "KeyCodes",
    "Sides",
    "int64s",
    "joined",
    "restored_sides",
    "side_column",
    "split_sides",
    "tie_order",
]

SIDE = "_side"
LEFT = 0
RIGHT = 1
TIMESTAMP = "_timestamp"
WINDOW_COLUMNS = (WINDOW_START, WINDOW_END)
LATE_REASON = "late event: the join's watermark had passed its event time (what it joins with was emitted)"
_TIE_BREAKERS = ("_partition", "_offset")

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class JoinColumns:
    """The columns of a join's results: ``left``, those of the left side's rows (in their order), then
    ``right``, those only the right side's rows have. Worked out when the pipeline is compiled, from the schema
    of each side."""

    left: tuple[str, ...]
    right: tuple[str, ...]
    windowed: bool = False

    @classmethod
    def of(cls, left: pa.Schema, right: pa.Schema, windowed: bool = False) -> JoinColumns:
        """The result columns of a join of rows of schema ``left`` with rows of schema ``right``; ``windowed``: a
        window join's, which end with :data:`WINDOW_COLUMNS`."""
        own = [name for name in left.names if name != SIDE]
        return cls(tuple(own), tuple(name for name in right.names if name not in own and name != SIDE), windowed)

    def schema(self, input_schema: pa.Schema) -> pa.Schema:
        """The schema of the results, the types taken from the stage's ``input_schema``."""
        fields = [input_schema.field(name) for name in (*self.left, *self.right)]
        return pa.schema(fields + ([pa.field(name, pa.int64()) for name in WINDOW_COLUMNS] if self.windowed else []))


def side_column(rows: int, side: int) -> pa.Array:
    """A :data:`SIDE` column of ``rows`` rows, all on ``side``."""
    return pa.array(np.full(rows, side, dtype=np.int8))


def int64s(column: pa.ChunkedArray | pa.Array) -> Ints:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass(frozen=True)
class KeyCodes:
    """Integer codes of the keys of two tables, equal for equal keys; -1 for a null key (it matches nothing)."""

    first: Ints
    second: Ints

    @classmethod
    def of(cls, first: pa.ChunkedArray, second: pa.ChunkedArray) -> KeyCodes:
        both = pa.chunked_array([*first.chunks, *second.chunks], type=first.type).combine_chunks()
        encoded = pc.dictionary_encode(both).indices
        codes = np.asarray(pc.fill_null(encoded, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        return cls(codes[: len(first)], codes[len(first) :])


def tie_order(rows: pa.Table, codes: Ints) -> Ints:
    """The rows in order of key code, then event time, then ``_partition`` and ``_offset`` when the rows have
    them, then arrival: the last of a key's rows at one time is the same whichever order they arrived in."""
    keys: list[Ints] = [np.arange(rows.num_rows, dtype=np.int64)]
    keys += [
        int64s(pc.fill_null(rows.column(name), -1)) for name in reversed(_TIE_BREAKERS) if name in rows.column_names
    ]
    keys += [int64s(rows.column(TIMESTAMP)), codes]
    return np.asarray(np.lexsort(keys), dtype=np.int64)


def joined(left: pa.Table, right: pa.Table | None, right_positions: Ints, columns: JoinColumns) -> pa.Table:
    """Rows of ``left`` with the ``right`` columns of the rows of ``right`` at ``right_positions`` (one per left
    row; -1: none, the right columns null). Both tables are in the stage's schema, so a left row has the right
    columns too, null."""
    if right is None or right.num_rows == 0 or not columns.right:
        return left.select([*columns.left, *columns.right])
    missing = right_positions < 0
    indices = pa.array(np.where(missing, 0, right_positions), mask=missing)
    taken = right.select(list(columns.right)).take(indices)
    picked = left.select(list(columns.left))
    for name, column in zip(columns.right, taken.columns, strict=True):
        picked = picked.append_column(right.schema.field(name), column)
    return picked


@dataclass(frozen=True)
class Sides:
    """A batch's rows with an event time, by side (``late`` left out), its late rows (at or before the
    watermark) and its rows without an event time."""

    left: pa.Table
    right: pa.Table
    late: pa.RecordBatch | None = None
    no_event_time: pa.RecordBatch | None = None


def split_sides(batch: pa.RecordBatch, late_at_or_before_ms: int | None) -> Sides:
    """``batch`` by side; rows at or before ``late_at_or_before_ms`` are late (None: none is)."""
    rows = pa.Table.from_batches([batch])
    no_event_time = None
    if rows.column(TIMESTAMP).null_count:
        no_event_time = batch.filter(pc.is_null(batch.column(TIMESTAMP)))
        rows = rows.filter(pc.is_valid(rows.column(TIMESTAMP)))
    late = None
    if late_at_or_before_ms is not None:
        is_late = pc.less_equal(rows.column(TIMESTAMP), late_at_or_before_ms)
        if pc.any(is_late).as_py():
            late = rows.filter(is_late).combine_chunks().to_batches()[0]
            rows = rows.filter(pc.invert(is_late))
    sides = rows.column(SIDE)
    return Sides(rows.filter(pc.equal(sides, LEFT)), rows.filter(pc.equal(sides, RIGHT)), late, no_event_time)


def restored_sides(state: pa.Table, operator: str) -> tuple[pa.Table | None, pa.Table | None]:
    """The left and right rows of a join's snapshot (each None when it has none); ``operator`` names the join
    for the error a snapshot without its side or time raises."""
    if not state.num_rows:
        return None, None
    if SIDE not in state.column_names or TIMESTAMP not in state.column_names:
        raise StateFormatError(f"{operator} state lacks its {SIDE} or {TIMESTAMP} column: it is not a join's")
    rows = state.replace_schema_metadata(None).combine_chunks()
    sides = rows.column(SIDE)
    left, right = rows.filter(pc.equal(sides, LEFT)), rows.filter(pc.equal(sides, RIGHT))
    return (left if left.num_rows else None), (right if right.num_rows else None)
