"""The checkpoint store and the restore plan: complete vs incomplete epochs, torn files, pruning, limits."""

from __future__ import annotations

import errno
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from actors.kafka.commit_markers import CommitMarker
from cluster.control.restore_plan import plan_source_starts
from pipelines.state.checkpoint_store import (
    PRE_LINEAGE,
    AggregateSnapshot,
    Checkpoint,
    CheckpointStore,
    CheckpointWriteError,
    MissingLineageError,
    SourceSnapshot,
    TornSnapshotError,
)


def checkpoint_of(store: CheckpointStore, epoch: int, rows: int = 100) -> Checkpoint:
    state = store.write_table(epoch, "state-aggregate-0", pa.table({"k": [f"k{i}" for i in range(rows)]}))
    return Checkpoint(
        epoch=epoch,
        run_id="r",
        created_at_s=0.0,
        started_at_s=1.0,
        start_time_ms=2,
        partitions=2,
        sources=[SourceSnapshot("s0", {0: 10 * epoch, 1: 5 * epoch}, {0: 1_000}, {0: 100})],
        aggregates=[AggregateSnapshot("a0", [0, 1], 500, state)],
    )


def test_only_epochs_with_metadata_are_complete_and_the_newest_wins(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p")
    assert store.latest() is None
    store.commit(checkpoint_of(store, 1))
    store.commit(checkpoint_of(store, 2))
    checkpoint_of(store, 3)  # files written, metadata never: a crash mid-epoch

    latest = store.latest()

    assert latest is not None and latest.epoch == 2
    assert latest.positions == {0: 20, 1: 10}
    assert store.latest_epoch() == 3, "the next epoch is numbered after every one begun"
    assert store.read_table(latest.aggregates[0].state).num_rows == 100  # type: ignore[arg-type]


def test_a_torn_file_is_detected_skipped_at_least_once_and_refused_exactly_once(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p")
    store.commit(checkpoint_of(store, 1))
    store.commit(checkpoint_of(store, 2))
    state = tmp_path / "p" / "epoch-000002" / "state-aggregate-0.arrow"
    state.write_bytes(state.read_bytes()[:100])

    fallback = store.latest(allow_fallback=True)

    assert fallback is not None and fallback.epoch == 1
    with pytest.raises(TornSnapshotError, match="Operator action"):
        store.latest(allow_fallback=False)


def test_prune_keeps_the_newest_complete_epochs(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p")
    for epoch in range(1, 6):
        store.commit(checkpoint_of(store, epoch))
    checkpoint_of(store, 6)

    store.prune(keep=2)

    kept = sorted(path.name for path in (tmp_path / "p").iterdir())
    assert kept == ["epoch-000004", "epoch-000005", "epoch-000006"], "the unfinished newer epoch is not touched"


def test_metadata_is_replaced_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p")
    store.commit(checkpoint_of(store, 1))

    assert [path.name for path in (tmp_path / "p" / "epoch-000001").iterdir() if "tmp" in path.name] == []


def test_restore_plan_starts_restored_partitions_at_their_offsets_and_keeps_their_limits(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p")
    checkpoint = checkpoint_of(store, 3)  # partition 0 at 30 of 100; partition 1 at 15, unbounded

    starts = plan_source_starts([[0], [1, 2]], {0: 100, 1: 100, 2: 100}, checkpoint, ["a", "b"])

    assert starts[0].restored is not None and starts[0].restored.positions == {0: 30}
    assert starts[0].limits == {0: 70}, "a bounded partition still stops at its recorded end"
    assert starts[1].limits == {1: None, 2: 100}, "unbounded stays unbounded; an unknown partition starts fresh"
    assert plan_source_starts([[0]], {0: 5}, None, ["a"])[0].limits == {0: 5}


def test_a_location_gets_one_lineage_and_a_new_location_another(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "a"), "orders")
    with pytest.raises(MissingLineageError, match="Operator action"):
        store.lineage()  # actors read it; only the Supervisor creates it, before any actor starts
    lineage = store.ensure_lineage()
    assert lineage and store.ensure_lineage() == lineage == CheckpointStore(str(tmp_path / "a"), "orders").lineage()
    assert sorted(path.name for path in (tmp_path / "a" / "orders").iterdir()) == ["LINEAGE"], "no temporary left"
    assert CheckpointStore(str(tmp_path / "b"), "orders").ensure_lineage() != lineage
    store.clear()  # the directory deleted to rebuild state: its epochs start again, under a new lineage
    assert store.ensure_lineage() != lineage


def test_a_commit_marker_is_keyed_by_lineage_and_slot_so_compaction_keeps_each_lineage_newest() -> None:
    assert CommitMarker("aggregate-0/sink-0", 3, "abc").key() == b"abc/aggregate-0/sink-0"
    assert CommitMarker("aggregate-0/sink-0", 3).key() == b"aggregate-0/sink-0"  # as written before lineages
    legacy = msgspec.json.decode(b'{"slot": "aggregate-0/sink-0", "epoch": 40}', type=CommitMarker)
    assert legacy.lineage == ""


def _make_unreadable(path: Path) -> bytes:
    """Replace the file at ``path`` with a directory (reading it fails with an OSError that is not a missing
    file, as a failing disk or network mount would); return what it held."""
    data = path.read_bytes()
    path.unlink()
    path.mkdir()
    return data


def test_metadata_that_cannot_be_read_is_refused_exactly_once_and_skipped_at_least_once(tmp_path: Path) -> None:
    waits: list[float] = []
    store = CheckpointStore(str(tmp_path), "p", sleep=waits.append)
    store.commit(checkpoint_of(store, 1))
    store.commit(checkpoint_of(store, 2))
    _make_unreadable(tmp_path / "p" / "epoch-000002" / "_checkpoint.json")

    with pytest.raises(TornSnapshotError, match=r"checkpoint 2 .* exists but cannot be read") as refused:
        store.latest(allow_fallback=False)
    assert "Operator action" in str(refused.value)
    assert len(waits) == 3 and waits == sorted(waits), "tried again, waiting longer each time, before giving up"
    fallback = store.latest(allow_fallback=True)
    assert fallback is not None and fallback.epoch == 1


def test_a_read_error_that_clears_while_retrying_restores_the_newest_checkpoint(tmp_path: Path) -> None:
    metadata = tmp_path / "p" / "epoch-000002" / "_checkpoint.json"
    held: list[bytes] = []

    def storage_recovers(_seconds: float) -> None:  # the first retry finds the storage back
        if metadata.is_dir():
            metadata.rmdir()
            metadata.write_bytes(held[0])

    store = CheckpointStore(str(tmp_path), "p", sleep=storage_recovers)
    store.commit(checkpoint_of(store, 1))
    store.commit(checkpoint_of(store, 2))
    held.append(_make_unreadable(metadata))

    latest = store.latest(allow_fallback=False)

    assert latest is not None and latest.epoch == 2


def test_corrupt_metadata_is_refused_exactly_once(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "p")
    store.commit(checkpoint_of(store, 1))
    (tmp_path / "p" / "epoch-000001" / "_checkpoint.json").write_bytes(b'{"epoch": 1, "run_')
    with pytest.raises(TornSnapshotError, match="exists but cannot be read"):
        store.latest(allow_fallback=False)
    assert store.latest(allow_fallback=True) is None


def test_a_full_disk_stops_the_checkpoint_with_the_path_named_and_keeps_the_last_complete_one(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    store = CheckpointStore(str(tmp_path), "p")
    store.commit(checkpoint_of(store, 1))
    (tmp_path / "p" / "epoch-000002").mkdir()
    full = tmp_path / "p" / "epoch-000002" / "state-aggregate-0.arrow"
    full.symlink_to("/dev/full")

    with pytest.raises(CheckpointWriteError) as refused:
        checkpoint_of(store, 2)

    assert str(full) in str(refused.value) and "Operator action" in str(refused.value)
    assert isinstance(refused.value.__cause__, OSError) and refused.value.__cause__.errno == errno.ENOSPC
    latest = store.latest(allow_fallback=False)
    assert latest is not None and latest.epoch == 1


def test_a_location_with_epochs_from_before_lineages_keeps_the_empty_lineage_of_its_markers(tmp_path: Path) -> None:
    """Its exactly-once markers carry no lineage: under the empty lineage they still count after the upgrade,
    so an epoch committed before it is not redone (written twice)."""
    store = CheckpointStore(str(tmp_path), "orders")
    store.commit(checkpoint_of(store, 1))  # written by a version without lineages
    assert store.ensure_lineage() == PRE_LINEAGE == CheckpointStore(str(tmp_path), "orders").lineage()
    assert CommitMarker("aggregate-0/sink-0", 1, PRE_LINEAGE).key() == b"aggregate-0/sink-0", "as before"
