"""The delivery checker's recomputation of joins: plain Python over the rows a join stage takes, shared with
nothing in :mod:`pipelines.state.temporal_join` or :mod:`pipelines.state.interval_join` (dicts, ``bisect`` and
loops instead of numpy codes and ``searchsorted``).

A join's results are the rows its left side's events become, so the checker identifies them by the left row's
event id (:func:`~pipelines.verify.delivery_check.default_id_column`): an interval join expects an id once per
pair. :func:`wrong_joins` then compares, id by id, the right-side values each result carries with the
recomputed ones (with their counts, so a pair lost and another written twice do not cancel out).

What cannot be recomputed is refused by :func:`check_join_verifiable`: ``emit: eager`` (its results depend on
which side was read first). Versions at one event time are ordered by ``_partition`` and ``_offset``, as the
join orders them; rows without those columns (the results of a windows stage) tie by the order taken.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.state import JoinConfig
from pipelines.errors import ConfigError
from pipelines.state.joins import LEFT, RIGHT, SIDE, TIMESTAMP, JoinColumns
from pipelines.windows.plan import WINDOW_END, WINDOW_START

__all__ = ["check_join_verifiable", "recompute_join", "wrong_joins"]

_Row = dict[str, Any]


def check_join_verifiable(join: JoinConfig) -> None:
    """Raise :class:`ConfigError` for a join whose results a recomputation cannot know."""
    if join.emit == "eager":
        raise ConfigError(
            "verify recomputes joins emitted on the watermark; emit: eager meets whatever version had arrived, which "
            "depends on the order the sides were read in"
        )


def recompute_join(rows: pa.Table, join: JoinConfig, columns: JoinColumns) -> pa.Table:
    """The results of ``join`` over ``rows`` (the rows the join stage takes, in its schema with ``_side``, in the
    order taken), in the schema the join emits; rows without an event time are left out (dead-lettered)."""
    timed = rows.filter(pc.is_valid(rows.column(TIMESTAMP)))
    sides = timed.column(SIDE)
    left = timed.filter(pc.equal(sides, LEFT)).to_pylist()
    right = timed.filter(pc.equal(sides, RIGHT)).to_pylist()
    if join.mode == "temporal":
        results = list(_as_of(left, right, join, columns))
    else:
        results = list(_in_intervals(left, right, join, columns))
    return pa.Table.from_pylist(results, schema=columns.schema(rows.schema))


def _as_of(left: list[_Row], right: list[_Row], join: JoinConfig, columns: JoinColumns) -> Iterable[_Row]:
    versions: dict[Any, list[tuple[tuple[int, ...], _Row]]] = defaultdict(list)
    for arrival, row in enumerate(right):
        if row[join.key] is not None:
            versions[row[join.key]].append((_version_order(row, arrival), row))
    for kept in versions.values():
        kept.sort(key=lambda version: version[0])
    for row in left:
        found = versions.get(row[join.key], []) if row[join.key] is not None else []
        position = bisect.bisect_right([order[0] for order, _ in found], row[TIMESTAMP])
        if position == 0 and join.how == "inner":
            continue
        yield _result(row, found[position - 1][1] if position else None, columns)


def _in_intervals(left: list[_Row], right: list[_Row], join: JoinConfig, columns: JoinColumns) -> Iterable[_Row]:
    """Interval and window joins: a nested loop per key."""
    by_key: dict[Any, list[_Row]] = defaultdict(list)
    for row in right:
        if row[join.key] is not None:
            by_key[row[join.key]].append(row)
    for row in left:
        time_ms = row[TIMESTAMP]
        if join.size_ms is not None:  # a window join: the row's window, [start, end)
            window = {WINDOW_START: time_ms // join.size_ms * join.size_ms}
            window[WINDOW_END] = window[WINDOW_START] + join.size_ms
            first, last = window[WINDOW_START], window[WINDOW_END] - 1
        else:
            assert join.lower_ms is not None and join.upper_ms is not None  # JoinConfig checks mode interval
            window, first, last = {}, time_ms + join.lower_ms, time_ms + join.upper_ms
        met = [other for other in by_key.get(row[join.key], []) if first <= other[TIMESTAMP] <= last]
        yield from ({**_result(row, other, columns), **window} for other in met)
        if not met and join.how == "left":
            yield {**_result(row, None, columns), **window}


def _version_order(row: _Row, arrival: int) -> tuple[int, ...]:
    partition, offset = row.get("_partition"), row.get("_offset")
    return (row[TIMESTAMP], -1 if partition is None else partition, -1 if offset is None else offset, arrival)


def _result(left: _Row, right: _Row | None, columns: JoinColumns) -> _Row:
    result = {name: left[name] for name in columns.left}
    result.update({name: None if right is None else right[name] for name in columns.right})
    return result


def wrong_joins(expected: pa.Table, observed: pa.Table, id_column: str, columns: JoinColumns) -> list[str]:
    """The ids whose results carry other right-side values than the recomputation's: for an id written as often
    as expected, the values with their counts (so one pair lost and another written twice is wrong); for an id
    written more or fewer times (duplicated or lost, counted apart), the distinct values."""

    def by_id(rows: pa.Table) -> dict[str, Counter[tuple[str, ...]]]:
        values: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        present = [name for name in columns.right if name in rows.column_names]
        for row in rows.select([id_column, *present]).to_pylist():
            values[str(row[id_column])][tuple(repr(row.get(name)) for name in columns.right)] += 1
        return values

    wanted, got = by_id(expected), by_id(observed)

    def differs(key: str) -> bool:
        if got[key].total() == wanted[key].total():
            return got[key] != wanted[key]
        return set(got[key]) != set(wanted[key])

    return sorted(key for key in got.keys() & wanted.keys() if differs(key))
