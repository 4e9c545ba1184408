"""Upsert table: the newest version per key against a row-by-row reference, deletes, stale versions, restore."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipelines.config.state import DedupConfig, UpsertConfig
from pipelines.state.dedup import Dedup
from pipelines.state.keyed_operator import KeyedOperator, StateFormatError, tag_state
from pipelines.state.upsert_table import STATE_FORMAT, UpsertTable

RETENTION_MS = 5
CONFIG = UpsertConfig(key="sku", delete_column="gone", tombstone_retention_ms=RETENTION_MS)
PAYLOAD = ("qty",)

Row = tuple[str | None, int, int | None, bool | None]  # sku, qty, event time, gone
Step = tuple[str, Any]  # ("batch", rows) or ("advance", watermark_ms)


def batch_of(rows: Sequence[Row], first_offset: int = 0) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "sku": pa.array([row[0] for row in rows], pa.string()),
            "qty": pa.array([row[1] for row in rows], pa.int64()),
            "_timestamp": pa.array([row[2] for row in rows], pa.int64()),
            "gone": pa.array([row[3] for row in rows], pa.bool_()),
            "_partition": pa.array([0] * len(rows), pa.int32()),
            "_offset": pa.array(range(first_offset, first_offset + len(rows)), pa.int64()),
            "_traceparent": pa.array([None] * len(rows), pa.string()),
        }
    )


def row_dict(row: Row, offset: int) -> dict[str, Any]:
    sku, qty, time_ms, gone = row
    return {"sku": sku, "qty": qty, "_timestamp": time_ms, "gone": gone, "_partition": 0, "_offset": offset}


@dataclass
class Reference:
    """The upsert semantics, one row at a time."""

    versions: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    watermark_ms: int = -(1 << 62)
    stale: int = 0

    def add(self, rows: Sequence[Row], first_offset: int) -> list[dict[str, Any]]:
        changed: dict[str | None, tuple[int, dict[str, Any]]] = {}
        for position, row in enumerate(rows):
            version = row_dict(row, first_offset + position)
            if version["_timestamp"] is None:
                continue
            stored = self.versions.get(row[0])
            if stored is not None and version["_timestamp"] < stored["_timestamp"]:
                self.stale += 1
                continue
            if version["gone"]:
                version = {**version, "qty": None}
            self.versions[row[0]] = version
            changed[row[0]] = (position, version)
        return [version for _, version in sorted(changed.values(), key=lambda item: item[0])]

    def advance(self, watermark_ms: int) -> None:
        if watermark_ms <= self.watermark_ms:
            return
        self.watermark_ms = watermark_ms
        for key, version in list(self.versions.items()):
            if version["gone"] and version["_timestamp"] < self.watermark_ms - RETENTION_MS:
                del self.versions[key]

    def table(self) -> list[dict[str, Any]]:
        return sort_rows([version for version in self.versions.values() if not version["gone"]])


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["sku"] is None, row["sku"] or ""))


def visible(table: pa.Table | None) -> list[dict[str, Any]]:
    """Rows without the columns the reference does not model."""
    if table is None:
        return []
    return [{name: row[name] for name in ("sku", "qty", "_timestamp", "gone", "_partition", "_offset")} for row in
            table.to_pylist()]  # fmt: skip


def run(table: UpsertTable, steps: Sequence[Step], first_offset: int = 0) -> list[list[dict[str, Any]]]:
    """Apply ``steps``; return the changelog of each batch."""
    changelogs = []
    offset = first_offset
    for kind, value in steps:
        if kind == "advance":
            assert table.advance(value) is None
            continue
        changelogs.append(visible(table.add(batch_of(value, offset)).output))
        offset += len(value)
    return changelogs


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", None]),
        st.integers(0, 1_000),
        st.integers(0, 30) | st.none(),
        st.booleans() | st.none(),
    ),
    min_size=1,
    max_size=12,
)
steps_strategy = st.lists(
    st.one_of(st.tuples(st.just("batch"), rows_strategy), st.tuples(st.just("advance"), st.integers(0, 50))),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(steps_strategy)
def test_matches_the_row_by_row_reference(steps: list[Step]) -> None:
    table, reference = UpsertTable(CONFIG), Reference()
    offset = 0
    for kind, value in steps:
        if kind == "advance":
            table.advance(value)
            reference.advance(value)
            continue
        result = table.add(batch_of(value, offset))
        assert visible(result.output) == reference.add(value, offset)
        offset += len(value)
        assert sort_rows(visible(table.table())) == reference.table()
        assert table.stale_versions_dropped == reference.stale
    assert table.state_rows == len(reference.versions)


@settings(max_examples=100, deadline=None)
@given(steps_strategy, steps_strategy)
def test_snapshot_restore_continue_equals_an_uninterrupted_run(before: list[Step], after: list[Step]) -> None:
    uninterrupted = UpsertTable(CONFIG)
    run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    expected = run(uninterrupted, after, first_offset=1_000)

    restored = UpsertTable(CONFIG)
    restored.restore(snapshot, uninterrupted_watermark(before))
    assert run(restored, after, first_offset=1_000) == expected
    assert sort_rows(visible(restored.table())) == sort_rows(visible(uninterrupted.table()))


def uninterrupted_watermark(steps: Sequence[Step]) -> int:
    return max([value for kind, value in steps if kind == "advance"], default=-(1 << 62))


@settings(max_examples=100, deadline=None)
@given(steps_strategy, steps_strategy)
def test_restoring_some_keys_continues_those_keys(before: list[Step], after: list[Step]) -> None:
    """Key groups move between actors: a new owner restores only its keys' rows and sees only their input."""
    owned = {"a", None}
    uninterrupted = UpsertTable(CONFIG)
    run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    expected = run(uninterrupted, after, first_offset=1_000)

    subset = snapshot.filter(pa.array([key in owned for key in snapshot.column("sku").to_pylist()], pa.bool_()))
    restored = UpsertTable(CONFIG)
    restored.restore(subset, uninterrupted_watermark(before))
    owned_after = [
        (kind, [row for row in value if row[0] in owned] if kind == "batch" else value) for kind, value in after
    ]
    changelogs = run(restored, [(kind, value) for kind, value in owned_after if value != []], first_offset=1_000)

    def without_offset(logs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:  # offsets moved with filtering
        return [{**row, "_offset": None} for log in logs for row in log if row["sku"] in owned]

    assert without_offset(changelogs) == without_offset(expected)


def test_an_older_version_arriving_later_is_counted_not_applied() -> None:
    table = UpsertTable(CONFIG)
    table.add(batch_of([("a", 10, 100, False)]))
    result = table.add(batch_of([("a", 5, 50, False), ("b", 1, 1, False)]))
    assert visible(result.output) == [row_dict(("b", 1, 1, False), 1)]
    assert result.stale is not None
    assert result.stale.to_pylist()[0]["qty"] == 5
    assert table.stale_versions_dropped == 1
    assert table.lookup(pa.array(["a"])).column("qty").to_pylist() == [10]


def test_within_a_batch_the_newest_wins_and_ties_go_to_the_later_arrival() -> None:
    table = UpsertTable(CONFIG)
    result = table.add(batch_of([("a", 1, 5, False), ("a", 2, 9, False), ("a", 3, 7, False), ("a", 4, 9, False)]))
    assert [row["qty"] for row in visible(result.output)] == [4]
    assert table.stale_versions_dropped == 1  # qty 3 (time 7) arrived after qty 2 (time 9)
    tie = table.add(batch_of([("a", 5, 9, False)]))
    assert [row["qty"] for row in visible(tie.output)] == [5]


def test_a_delete_emits_a_tombstone_and_keeps_stale_versions_out_until_retention_ends() -> None:
    table = UpsertTable(CONFIG)
    table.add(batch_of([("a", 10, 10, False), ("b", 1, 10, False)]))
    deleted = table.add(batch_of([("a", 99, 20, True)]))
    assert visible(deleted.output) == [{**row_dict(("a", 99, 20, True), 0), "qty": None}]
    assert table.lookup(pa.array(["a", "b"])).column("sku").to_pylist() == ["b"]
    assert table.add(batch_of([("a", 7, 15, False)])).output is None  # older than the delete: stale
    table.advance(20 + RETENTION_MS)
    assert table.state_rows == 2  # the tombstone is kept through the boundary ...
    table.advance(20 + RETENTION_MS + 1)
    assert table.state_rows == 1  # ... and dropped after it
    revived = table.add(batch_of([("a", 7, 15, False)]))
    assert [row["qty"] for row in visible(revived.output)] == [7]  # as in a compacted Kafka topic


def test_rows_without_event_time_are_returned_not_applied() -> None:
    table = UpsertTable(CONFIG)
    result = table.add(batch_of([("a", 1, None, False), ("b", 2, 3, False)]))
    assert result.no_event_time is not None
    assert result.no_event_time.column("sku").to_pylist() == ["a"]
    assert [row["sku"] for row in visible(table.table())] == ["b"]


def test_lookup_keeps_the_order_of_the_keys_asked_and_leaves_out_unknown_ones() -> None:
    table = UpsertTable(CONFIG)
    assert table.lookup(pa.array(["a"], pa.string())).num_rows == 0
    table.add(batch_of([("a", 1, 1, False), ("b", 2, 1, None), (None, 3, 1, False)]))
    found = table.lookup(pa.array(["b", "zz", None, "a"], pa.string()))
    assert found.column("qty").to_pylist() == [2, 3, 1]


def test_without_a_delete_column_every_row_is_a_version() -> None:
    table = UpsertTable(UpsertConfig(key="sku"))
    table.add(batch_of([("a", 1, 1, True)]))
    assert [row["qty"] for row in visible(table.table())] == [1]


def test_snapshots_are_tagged_and_immutable() -> None:
    table = UpsertTable(CONFIG)
    empty = table.snapshot()
    assert empty.schema.metadata[b"eventray.state"] == STATE_FORMAT.encode()
    assert "sku" in empty.column_names
    table.add(batch_of([("a", 1, 1, False)]))
    snapshot = table.snapshot()
    table.add(batch_of([("a", 2, 2, False), ("b", 3, 3, False)]))
    assert snapshot.column("qty").to_pylist() == [1]


def test_restoring_an_empty_snapshot_gives_an_empty_table() -> None:
    table = UpsertTable(CONFIG)
    table.restore(UpsertTable(CONFIG).snapshot(), 0)
    assert table.state_rows == 0
    assert table.watermark_ms == 0


def test_state_of_another_operator_or_none_is_refused() -> None:
    table = UpsertTable(CONFIG)
    dedup = Dedup(DedupConfig(id_column="sku", ttl_ms=10))
    with pytest.raises(StateFormatError, match="dedup/1"):
        table.restore(dedup.snapshot(), 0)
    with pytest.raises(StateFormatError, match="untagged"):
        table.restore(pa.table({"sku": ["a"]}), 0)
    other_key = tag_state(pa.table({"id": ["a"], "_timestamp": [1], "gone": [False]}), STATE_FORMAT)
    with pytest.raises(StateFormatError, match="sku"):
        table.restore(other_key, 0)


def test_it_is_a_keyed_operator() -> None:
    operator: KeyedOperator = UpsertTable(CONFIG)
    assert operator.key == "sku"
    assert operator.flush() is None


def test_config_rejects_a_delete_column_equal_to_the_key_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="must differ from key"):
        UpsertConfig(key="sku", delete_column="sku")
    with pytest.raises(ValidationError, match="Extra inputs"):
        UpsertConfig.model_validate({"key": "sku", "delete": "gone"})
    with pytest.raises(ValidationError):
        UpsertConfig(key="sku", tombstone_retention_ms=-1)
