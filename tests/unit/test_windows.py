"""Tumbling windows: exact aggregates against a plain-Python reference, watermark semantics, late rows."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config.pipeline import AggregateConfig, AggregationConfig, TumblingWindowConfig
from pipelines.state.keyed_operator import Added
from pipelines.windows.tumbling import WINDOW_END, WINDOW_START, TumblingWindows

SIZE = 10
CONFIG = AggregateConfig(
    key="k",
    window=TumblingWindowConfig(size_ms=SIZE),
    aggregations={
        "n": AggregationConfig(fn="count"),
        "total": AggregationConfig(fn="sum", column="v"),
        "avg": AggregationConfig(fn="mean", column="v"),
        "lo": AggregationConfig(fn="min", column="v"),
        "hi": AggregationConfig(fn="max", column="v"),
    },
)

Row = tuple[str | None, int | None, int]  # key, value, event time (ms)
WindowKey = tuple[str | None, int]


def batch_of(rows: Sequence[Row], first_id: int = 0) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "k": pa.array([row[0] for row in rows], pa.string()),
            "v": pa.array([row[1] for row in rows], pa.int64()),
            "_timestamp": pa.array([row[2] for row in rows], pa.int64()),
            "id": pa.array(range(first_id, first_id + len(rows)), pa.int64()),
        }
    )


def start_of(time_ms: int) -> int:
    return time_ms - time_ms % SIZE  # Python's % floors, also for negative times


def reference(rows: Iterable[Row]) -> dict[WindowKey, dict[str, object]]:
    """The expected closed windows, computed row by row in plain Python."""
    groups: dict[WindowKey, list[int | None]] = defaultdict(list)
    for key, value, time_ms in rows:
        groups[(key, start_of(time_ms))].append(value)
    expected: dict[WindowKey, dict[str, object]] = {}
    for (key, start), values in groups.items():
        present = [value for value in values if value is not None]
        expected[(key, start)] = {
            "k": key,
            WINDOW_START: start,
            WINDOW_END: start + SIZE,
            "n": len(values),
            "total": sum(present) if present else None,
            "avg": sum(present) / len(present) if present else None,
            "lo": min(present) if present else None,
            "hi": max(present) if present else None,
        }
    return expected


def by_window(table: pa.Table | None) -> dict[WindowKey, dict[str, Any]]:
    if table is None:
        return {}
    rows = table.to_pylist()
    keyed = {(row["k"], row[WINDOW_START]): row for row in rows}
    assert len(keyed) == len(rows), "a window appears twice in one emission"
    return keyed


def test_aggregates_are_exact_for_one_batch() -> None:
    rows: list[Row] = [("a", 5, 1), ("a", None, 2), ("b", -3, 3), ("a", 7, 9), ("a", 100, 10), ("b", 4, 19)]
    windows = TumblingWindows(CONFIG)
    assert windows.add(batch_of(rows)) == Added()
    result = windows.flush()
    assert result is not None
    assert result.to_pylist() == [  # sorted by window start, then key
        {"k": "a", WINDOW_START: 0, WINDOW_END: 10, "n": 3, "total": 12, "avg": 6.0, "lo": 5, "hi": 7},
        {"k": "b", WINDOW_START: 0, WINDOW_END: 10, "n": 1, "total": -3, "avg": -3.0, "lo": -3, "hi": -3},
        {"k": "a", WINDOW_START: 10, WINDOW_END: 20, "n": 1, "total": 100, "avg": 100.0, "lo": 100, "hi": 100},
        {"k": "b", WINDOW_START: 10, WINDOW_END: 20, "n": 1, "total": 4, "avg": 4.0, "lo": 4, "hi": 4},
    ]


def test_output_columns_and_types() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 1)]))
    result = windows.flush()
    assert result is not None
    assert result.schema.names == ["k", WINDOW_START, WINDOW_END, "n", "total", "avg", "lo", "hi"]
    assert result.schema.field("n").type == pa.int64()
    assert result.schema.field("total").type == pa.int64()
    assert result.schema.field("avg").type == pa.float64()
    assert result.schema.field(WINDOW_END).type == pa.int64()


def test_windows_emit_only_when_the_watermark_reaches_their_end() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 0), ("a", 2, 9), ("a", 3, 10), ("b", 4, 25)]))
    assert windows.state_rows == 3
    assert windows.advance(9) is None
    first = by_window(windows.advance(10))
    assert set(first) == {("a", 0)}
    assert first[("a", 0)]["n"] == 2
    assert windows.state_rows == 2
    assert windows.advance(10) is None  # not later: nothing happens
    assert windows.advance(19) is None
    second = by_window(windows.advance(29))
    assert set(second) == {("a", 10)}
    third = by_window(windows.advance(30))
    assert set(third) == {("b", 20)}
    assert windows.state_rows == 0
    assert windows.advance(1_000) is None  # each window exactly once
    assert windows.flush() is None


def test_one_advance_can_close_many_windows() -> None:
    windows = TumblingWindows(CONFIG)
    rows: list[Row] = [("a", 1, t) for t in range(0, 100, 5)]
    windows.add(batch_of(rows))
    closed = by_window(windows.advance(50))
    assert sorted(closed) == [("a", start) for start in range(0, 50, 10)]
    assert all(row["n"] == 2 for row in closed.values())
    assert windows.state_rows == 5


def test_watermark_never_moves_back() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 25)]))
    assert windows.advance(20) is None
    assert windows.advance(5) is None
    assert windows.watermark_ms == 20
    late = windows.add(batch_of([("a", 1, 12)])).late  # window [10, 20) is closed by watermark 20
    assert late is not None
    assert late.column("_timestamp").to_pylist() == [12]


def test_out_of_order_rows_within_the_watermark_are_counted() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 18)]))
    assert windows.advance(12) is None
    # older, but window [10, 20) is still open
    assert windows.add(batch_of([("a", 2, 11), ("a", 3, 15)])) == Added()
    result = by_window(windows.flush())
    assert result[("a", 10)]["n"] == 3
    assert result[("a", 10)]["total"] == 6


def test_late_rows_are_returned_and_not_counted() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 3), ("a", 1, 14)]))
    closed = by_window(windows.advance(10))
    assert closed[("a", 0)]["n"] == 1

    mixed = batch_of([("a", 50, 5), ("a", 7, 16), ("b", 60, 0), ("b", 8, 10)], first_id=100)
    late = windows.add(mixed).late
    assert late is not None
    assert late.schema == mixed.schema  # late rows come back whole
    assert late.column("id").to_pylist() == [100, 102]

    result = by_window(windows.flush())
    assert set(result) == {("a", 10), ("b", 10)}  # window [0, 10) is not emitted again
    assert result[("a", 10)]["total"] == 8
    assert result[("b", 10)]["total"] == 8


def test_a_batch_of_only_late_rows_changes_nothing() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 25)]))
    windows.advance(20)
    late = windows.add(batch_of([("a", 1, 1), ("b", 2, 19)])).late
    assert late is not None
    assert late.num_rows == 2
    assert windows.state_rows == 1
    assert set(by_window(windows.flush())) == {("a", 20)}


def test_flush_emits_everything_and_later_rows_are_late() -> None:
    windows = TumblingWindows(CONFIG)
    rows: list[Row] = [("a", 1, 5), ("b", 2, 1_000_000), ("c", 3, -7)]
    windows.add(batch_of(rows))
    assert by_window(windows.flush()) == reference(rows)
    assert windows.state_rows == 0
    late = windows.add(batch_of([("a", 1, 2_000_000)])).late
    assert late is not None
    assert late.num_rows == 1


def test_empty_batch_is_ignored() -> None:
    windows = TumblingWindows(CONFIG)
    assert windows.add(batch_of([])) == Added()
    assert windows.state_rows == 0
    assert windows.flush() is None


def test_negative_event_times_floor_to_their_window() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, -1), ("a", 2, -10), ("a", 3, -11)]))
    result = by_window(windows.flush())
    assert set(result) == {("a", -10), ("a", -20)}
    assert result[("a", -10)]["n"] == 2
    assert result[("a", -20)][WINDOW_END] == -10


def test_null_values_are_skipped_but_counted() -> None:
    rows: list[Row] = [("a", None, 1), ("a", None, 2), ("b", None, 3), ("b", 4, 4)]
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of(rows[:2]))
    windows.add(batch_of(rows[2:]))
    result = by_window(windows.flush())
    assert result[("a", 0)] == {
        "k": "a",
        WINDOW_START: 0,
        WINDOW_END: 10,
        "n": 2,
        "total": None,
        "avg": None,
        "lo": None,
        "hi": None,
    }
    assert result[("b", 0)]["n"] == 2
    assert result[("b", 0)]["total"] == 4
    assert result[("b", 0)]["avg"] == 4.0


def test_null_in_one_partial_and_values_in_another_merge() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", None, 1)]))
    windows.add(batch_of([("a", 6, 2)]))
    windows.add(batch_of([("a", None, 3)]))
    result = by_window(windows.flush())
    assert result[("a", 0)] == {
        "k": "a",
        WINDOW_START: 0,
        WINDOW_END: 10,
        "n": 3,
        "total": 6,
        "avg": 6.0,
        "lo": 6,
        "hi": 6,
    }


def test_null_keys_form_their_own_group() -> None:
    rows: list[Row] = [(None, 1, 1), (None, 2, 2), ("a", 3, 3)]
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of(rows))
    assert by_window(windows.flush()) == reference(rows)


def test_merging_many_partials_gives_the_same_result() -> None:
    rng = random.Random(7)
    rows: list[Row] = [
        (rng.choice(["a", "b", "c", None]), rng.choice([None, *range(-50, 50)]), rng.randrange(0, 60))
        for _ in range(600)
    ]
    windows = TumblingWindows(CONFIG)
    for index in range(0, len(rows), 3):  # 200 partials: past the compaction threshold more than once
        assert windows.add(batch_of(rows[index : index + 3], first_id=index)) == Added()
    assert windows.state_rows == len(reference(rows))
    assert by_window(windows.flush()) == reference(rows)


def test_shared_partials_for_repeated_functions() -> None:
    config = AggregateConfig(
        key="k",
        window=TumblingWindowConfig(size_ms=SIZE),
        aggregations={
            "n1": AggregationConfig(fn="count"),
            "n2": AggregationConfig(fn="count"),
            "s": AggregationConfig(fn="sum", column="v"),
            "m": AggregationConfig(fn="mean", column="v"),
            "m_id": AggregationConfig(fn="mean", column="id"),
        },
    )
    windows = TumblingWindows(config)
    windows.add(batch_of([("a", 1, 1), ("a", None, 2), ("a", 5, 3)]))
    result = windows.flush()
    assert result is not None
    assert result.to_pylist() == [
        {"k": "a", WINDOW_START: 0, WINDOW_END: 10, "n1": 3, "n2": 3, "s": 6, "m": 3.0, "m_id": 1.0}
    ]


def test_float_values() -> None:
    config = AggregateConfig(
        key="k",
        window=TumblingWindowConfig(size_ms=SIZE),
        aggregations={"s": AggregationConfig(fn="sum", column="x"), "hi": AggregationConfig(fn="max", column="x")},
    )
    windows = TumblingWindows(config)
    batch = pa.record_batch({"k": ["a", "a"], "x": [0.25, 1.5], "_timestamp": pa.array([1, 2], pa.int64())})
    windows.add(batch)
    assert windows.flush().to_pylist() == [  # type: ignore[union-attr]
        {"k": "a", WINDOW_START: 0, WINDOW_END: 10, "s": 1.75, "hi": 1.5}
    ]


def test_null_event_time_is_not_put_in_a_window() -> None:
    windows = TumblingWindows(CONFIG)
    batch = pa.record_batch(
        {
            "k": ["a", "a"],
            "v": pa.array([1, 2], pa.int64()),
            "_timestamp": pa.array([None, 5], pa.int64()),
            "id": pa.array([0, 1], pa.int64()),
        }
    )
    rejected = windows.add(batch)
    assert rejected.late is None
    assert rejected.no_event_time is not None
    assert rejected.no_event_time.column("id").to_pylist() == [0]
    assert rejected.no_event_time.schema == batch.schema  # returned whole, for the dead-letter output
    result = by_window(windows.flush())
    assert set(result) == {("a", 0)}
    assert result[("a", 0)]["n"] == 1


def test_rows_without_event_time_and_late_rows_are_returned_apart() -> None:
    windows = TumblingWindows(CONFIG)
    windows.add(batch_of([("a", 1, 25)]))
    windows.advance(20)
    batch = pa.record_batch(
        {
            "k": ["a", "a", "b"],
            "v": pa.array([1, 2, 3], pa.int64()),
            "_timestamp": pa.array([None, 5, 21], pa.int64()),
            "id": pa.array([0, 1, 2], pa.int64()),
        }
    )
    rejected = windows.add(batch)
    assert rejected.no_event_time is not None
    assert rejected.late is not None
    assert rejected.no_event_time.column("id").to_pylist() == [0]
    assert rejected.late.column("id").to_pylist() == [1]
    closed = by_window(windows.flush())
    assert set(closed) == {("a", 20), ("b", 20)}  # neither the late row nor the one without time is counted
    assert [closed[key]["n"] for key in sorted(closed)] == [1, 1]


def test_a_batch_of_only_rows_without_event_time_changes_nothing() -> None:
    windows = TumblingWindows(CONFIG)
    batch = pa.record_batch({"k": ["a"], "v": pa.array([1], pa.int64()), "_timestamp": pa.nulls(1, pa.int64())})
    rejected = windows.add(batch)
    assert rejected.late is None
    assert rejected.no_event_time is not None
    assert rejected.no_event_time.num_rows == 1
    assert windows.state_rows == 0
    assert windows.flush() is None


# --- property test: any batching, any watermark schedule, against the reference --------------------------------

rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", None]),
        st.one_of(st.none(), st.integers(-1_000, 1_000)),
        st.integers(-30, 120),
    ),
    max_size=40,
)
steps_strategy = st.lists(
    st.tuples(st.integers(1, 8), st.one_of(st.none(), st.integers(-40, 140))),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, steps=steps_strategy)
def test_windows_match_reference_for_any_batching_and_watermarks(
    rows: list[Row], steps: list[tuple[int, int | None]]
) -> None:
    windows = TumblingWindows(CONFIG)
    watermark: int | None = None
    counted: list[Row] = []
    emitted: dict[WindowKey, dict[str, object]] = {}
    position = 0
    step_index = 0
    while position < len(rows) or step_index < len(steps):
        size, advance_to = steps[step_index % len(steps)]
        chunk = rows[position : position + size]
        late = windows.add(batch_of(chunk, first_id=position)).late

        expected_late = [
            position + i
            for i, row in enumerate(chunk)
            if watermark is not None and start_of(row[2]) + SIZE <= watermark
        ]
        assert ([] if late is None else late.column("id").to_pylist()) == expected_late
        counted.extend(row for i, row in enumerate(chunk) if position + i not in expected_late)
        position += len(chunk)

        if advance_to is not None:
            closed = by_window(windows.advance(advance_to))
            if watermark is None or advance_to > watermark:
                watermark = advance_to
            for key, row in closed.items():
                assert key not in emitted  # exactly once
                assert row[WINDOW_END] <= watermark  # only once the watermark has reached the end
            emitted.update(closed)
            # nothing that could have closed stays open
            still_open = {key for key in reference(counted) if key not in emitted}
            assert all(start + SIZE > watermark for _, start in still_open)
        step_index += 1

    final = by_window(windows.flush())
    assert not set(final) & set(emitted)
    emitted.update(final)
    assert emitted == reference(counted)
    assert windows.state_rows == 0
