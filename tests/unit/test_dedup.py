"""Dedup: first occurrences against a row-by-row reference, TTL expiry at the boundary, restore."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipelines.config.state import DedupConfig, UpsertConfig
from pipelines.state.dedup import LAST_SEEN, STATE_FORMAT, Dedup
from pipelines.state.keyed_operator import KeyedOperator, StateFormatError, tag_state
from pipelines.state.upsert_table import UpsertTable

TTL_MS = 10
CONFIG = DedupConfig(id_column="event_id", ttl_ms=TTL_MS)
NO_WATERMARK = -(1 << 62)

Row = tuple[str | None, int | None]  # event id, event time
Step = tuple[str, Any]  # ("batch", rows) or ("advance", watermark_ms)


def batch_of(rows: Sequence[Row]) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "event_id": pa.array([row[0] for row in rows], pa.string()),
            "_timestamp": pa.array([row[1] for row in rows], pa.int64()),
            "n": pa.array(range(len(rows)), pa.int64()),
        }
    )


@dataclass
class Reference:
    """The dedup semantics, one row at a time."""

    last_seen: dict[str, int] = field(default_factory=dict)
    watermark_ms: int = NO_WATERMARK
    duplicates: int = 0

    def add(self, rows: Sequence[Row]) -> list[int]:
        """Positions of the rows that pass."""
        passed = []
        for position, (event_id, time_ms) in enumerate(rows):
            if time_ms is None:
                continue
            if event_id is None:
                passed.append(position)
                continue
            seen_at = max(time_ms, self.watermark_ms)
            if event_id in self.last_seen:
                self.duplicates += 1
                self.last_seen[event_id] = max(self.last_seen[event_id], seen_at)
            else:
                passed.append(position)
                self.last_seen[event_id] = seen_at
        return passed

    def advance(self, watermark_ms: int) -> None:
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        self.last_seen = {key: seen for key, seen in self.last_seen.items() if seen + TTL_MS >= self.watermark_ms}


def passed_positions(dedup: Dedup, rows: Sequence[Row]) -> list[int]:
    output = dedup.add(batch_of(rows)).output
    return [] if output is None else output.column("n").to_pylist()


def run(dedup: Dedup, steps: Sequence[Step]) -> list[list[int]]:
    """Apply ``steps``; return the positions passed in each batch."""
    passed = []
    for kind, value in steps:
        if kind == "advance":
            dedup.advance(value)
        else:
            passed.append(passed_positions(dedup, value))
    return passed


rows_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.integers(0, 40) | st.none()), min_size=1, max_size=12
)
steps_strategy = st.lists(
    st.one_of(st.tuples(st.just("batch"), rows_strategy), st.tuples(st.just("advance"), st.integers(0, 60))),
    max_size=12,
)


def state_of(dedup: Dedup) -> dict[str, int]:
    snapshot = dedup.snapshot()
    return dict(zip(snapshot.column("event_id").to_pylist(), snapshot.column(LAST_SEEN).to_pylist(), strict=True))


@settings(max_examples=150, deadline=None)
@given(steps_strategy)
def test_matches_the_row_by_row_reference(steps: list[Step]) -> None:
    dedup, reference = Dedup(CONFIG), Reference()
    for kind, value in steps:
        if kind == "advance":
            assert dedup.advance(value) is None
            reference.advance(value)
            continue
        result = dedup.add(batch_of(value))
        expected = reference.add(value)
        assert ([] if result.output is None else result.output.column("n").to_pylist()) == expected
        assert dedup.duplicates_dropped == reference.duplicates
        assert state_of(dedup) == reference.last_seen
        timed = sum(time_ms is not None for _, time_ms in value)
        assert len(expected) + result.duplicates_dropped == timed  # every row accounted for


@settings(max_examples=100, deadline=None)
@given(steps_strategy, steps_strategy)
def test_snapshot_restore_continue_equals_an_uninterrupted_run(before: list[Step], after: list[Step]) -> None:
    uninterrupted = Dedup(CONFIG)
    run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    expected = run(uninterrupted, after)

    restored = Dedup(CONFIG)
    restored.restore(snapshot, watermark_after(before))
    assert run(restored, after) == expected
    assert state_of(restored) == state_of(uninterrupted)


def watermark_after(steps: Sequence[Step]) -> int:
    return max([value for kind, value in steps if kind == "advance"], default=NO_WATERMARK)


@settings(max_examples=100, deadline=None)
@given(steps_strategy, steps_strategy)
def test_restoring_some_ids_continues_those_ids(before: list[Step], after: list[Step]) -> None:
    owned = {"a", "c"}
    uninterrupted = Dedup(CONFIG)
    run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    restored = Dedup(CONFIG)
    subset = snapshot.filter(
        pa.array([event_id in owned for event_id in snapshot.column("event_id").to_pylist()], pa.bool_())
    )
    restored.restore(subset, watermark_after(before))
    for kind, value in after:
        if kind == "advance":
            uninterrupted.advance(value)
            restored.advance(value)
            continue
        mine = [row for row in value if row[0] in owned]
        expected = [
            value[position] for position in passed_positions(uninterrupted, value) if value[position][0] in owned
        ]
        assert [mine[position] for position in passed_positions(restored, mine)] == expected
    assert state_of(restored) == {key: seen for key, seen in state_of(uninterrupted).items() if key in owned}


def test_duplicates_within_and_across_batches_are_dropped_counted_and_returned() -> None:
    dedup = Dedup(CONFIG)
    first = dedup.add(batch_of([("a", 1), ("b", 2), ("a", 3)]))
    assert first.output is not None
    assert first.output.column("event_id").to_pylist() == ["a", "b"]
    assert first.duplicates is not None
    assert first.duplicates.to_pylist() == [{"event_id": "a", "_timestamp": 3, "n": 2}]
    second = dedup.add(batch_of([("b", 4), ("c", 5)]))
    assert second.output is not None
    assert second.output.column("event_id").to_pylist() == ["c"]
    assert second.duplicates_dropped == 1
    assert dedup.duplicates_dropped == 2


def test_an_id_expires_only_once_the_watermark_passes_last_seen_plus_ttl() -> None:
    dedup = Dedup(CONFIG)
    dedup.add(batch_of([("a", 100)]))
    dedup.advance(100 + TTL_MS)  # at the boundary: still remembered
    assert state_of(dedup) == {"a": 100}
    dedup.advance(100 + TTL_MS + 1)
    assert dedup.state_rows == 0
    assert passed_positions(dedup, [("a", 100)]) == [0]


def test_a_duplicate_at_the_boundary_is_dropped() -> None:
    dedup = Dedup(CONFIG)
    dedup.add(batch_of([("a", 100)]))
    dedup.advance(100 + TTL_MS)
    assert passed_positions(dedup, [("a", 100)]) == []


def test_a_duplicate_sighting_extends_the_memory() -> None:
    dedup = Dedup(CONFIG)
    dedup.add(batch_of([("a", 100)]))
    dedup.add(batch_of([("a", 108)]))
    dedup.advance(100 + TTL_MS + 1)
    assert passed_positions(dedup, [("a", 109)]) == []


def test_a_late_id_is_remembered_for_ttl_after_the_watermark_that_saw_it() -> None:
    dedup = Dedup(CONFIG)
    dedup.advance(500)
    assert passed_positions(dedup, [("late", 3)]) == [0]
    dedup.advance(500 + TTL_MS)
    assert passed_positions(dedup, [("late", 3)]) == []


def test_rows_without_event_time_or_id() -> None:
    dedup = Dedup(CONFIG)
    result = dedup.add(batch_of([("a", None), (None, 1), (None, 2)]))
    assert result.no_event_time is not None
    assert result.no_event_time.column("event_id").to_pylist() == ["a"]
    assert result.output is not None
    assert result.output.column("n").to_pylist() == [1, 2]  # a null id cannot be deduplicated: it passes
    assert dedup.rows_without_id == 2
    assert dedup.state_rows == 0


def test_integer_ids_work_too() -> None:
    dedup = Dedup(DedupConfig(id_column="id", ttl_ms=5))
    batch = pa.record_batch({"id": pa.array([7, 8, 7], pa.int64()), "_timestamp": pa.array([1, 1, 1], pa.int64())})
    assert dedup.add(batch).duplicates_dropped == 1
    assert dedup.add(batch).duplicates_dropped == 3


def test_restore_forgets_ids_expired_at_the_restored_watermark() -> None:
    dedup = Dedup(CONFIG)
    dedup.add(batch_of([("a", 100), ("b", 200)]))
    restored = Dedup(CONFIG)
    restored.restore(dedup.snapshot(), 100 + TTL_MS + 1)
    assert state_of(restored) == {"b": 200}
    assert restored.watermark_ms == 100 + TTL_MS + 1


def test_snapshots_are_tagged_keyed_by_the_id_column_and_immutable() -> None:
    dedup = Dedup(CONFIG)
    empty = dedup.snapshot()
    assert empty.schema.metadata[b"eventray.state"] == STATE_FORMAT.encode()
    assert json.loads(empty.schema.metadata[b"eventray.state_meaning"]) == {
        "facts": {"id_column": "event_id"},
        "holds": [],
    }
    assert empty.column_names == ["event_id", LAST_SEEN]
    dedup.add(batch_of([("a", 1)]))
    snapshot = dedup.snapshot()
    dedup.add(batch_of([("a", 5), ("b", 6)]))
    assert snapshot.to_pylist() == [{"event_id": "a", LAST_SEEN: 1}]
    restored = Dedup(CONFIG)
    restored.restore(empty, 0)
    assert restored.state_rows == 0


def test_state_of_another_operator_or_none_is_refused() -> None:
    dedup = Dedup(CONFIG)
    with pytest.raises(StateFormatError, match="upsert/1"):
        dedup.restore(UpsertTable(UpsertConfig(key="event_id")).snapshot(), 0)
    with pytest.raises(StateFormatError, match="untagged"):
        dedup.restore(pa.table({"event_id": ["a"], LAST_SEEN: [1]}), 0)
    with pytest.raises(StateFormatError, match="another id column"):
        dedup.restore(tag_state(pa.table({"id": ["a"], LAST_SEEN: [1]}), STATE_FORMAT), 0)


def test_it_is_a_keyed_operator() -> None:
    operator: KeyedOperator = Dedup(CONFIG)
    assert operator.key == "event_id"
    assert operator.flush() is None


def test_config_needs_a_positive_ttl_and_known_fields() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        DedupConfig(id_column="event_id", ttl_ms=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        DedupConfig.model_validate({"id_column": "event_id", "ttl_ms": 1, "ttl_s": 1})
