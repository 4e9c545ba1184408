"""An actor's outputs made consistent with checkpoints: what a sink does at a barrier and at epoch completion.

Every output is a :class:`~pipelines.io.sinks.Sink` plus two steps:

* ``prepare(epoch)`` at the barrier, before the actor acks it: at-least-once outputs flush (so everything up
  to the barrier is durable); exactly-once file outputs close this epoch's staged files and name them
  (:class:`PendingFile`); exactly-once Kafka outputs write their commit marker into the open transaction,
  wait for every record's ack and hand back the epoch's rows as write-ahead for the checkpoint.
* ``commit()`` once the checkpoint is complete: staged files are renamed into place, the transaction commits.

Outputs that have not committed when the actor dies are redone from the checkpoint by :func:`recover_slot`
(Kafka) or :func:`commit_pending_files` (files), exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from actors.kafka.commit_markers import CommitMarker, commit_marker_topic
from actors.kafka.producer_sink import KafkaDeadLetterSink, KafkaSink
from pipelines.io.sinks import Rows, Sink
from pipelines.state.checkpoint_store import CheckpointStore, PendingFile, WriteAhead, fsync_path

__all__ = [
    "FlushingOutput",
    "Output",
    "StagedFileOutput",
    "TransactionalKafkaOutput",
    "commit_pending_files",
    "discard_staged_files",
    "prepare_outputs",
]

STAGING = "_staging"


class Output(Sink, Protocol):
    """A sink that takes part in checkpoints (see the module docstring)."""

    def begin_epoch(self, epoch: int) -> None:
        """What is written from now on belongs to ``epoch`` (until its :meth:`prepare`)."""

    def prepare(self, epoch: int) -> tuple[list[PendingFile], pa.Table | None]: ...

    def commit(self) -> None: ...


class FlushingOutput:
    """At-least-once (and console) outputs: written through; a barrier waits for the flush."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, rows: Rows) -> None:
        self.sink.write(rows)

    def begin_epoch(self, epoch: int) -> None:
        return None

    def flush(self) -> None:
        self.sink.flush()

    def prepare(self, epoch: int) -> tuple[list[PendingFile], pa.Table | None]:
        self.sink.flush()
        return [], None

    def commit(self) -> None:
        return None

    def close(self) -> None:
        self.sink.close()


class StagedFileOutput:
    """Exactly-once files: each epoch's rows go to files under ``<dir>/_staging`` that appear under ``<dir>``
    only when the epoch is complete (``part-*`` readers never see a file of an unfinished epoch)."""

    def __init__(self, directory: str, writer: str, open_sink: Callable[[str, str], Sink]) -> None:
        self._directory = Path(directory)
        self._staging = self._directory / STAGING
        self._writer = writer
        self._open_sink = open_sink
        self._sink: Sink | None = None
        self._sequence = 0
        self._prepared: list[PendingFile] = []

    def write(self, rows: Rows) -> None:
        if rows.num_rows == 0:
            return
        if self._sink is None:
            self._sink = self._open_sink(str(self._staging), f"{self._writer}-s{self._sequence:05d}")
        self._sink.write(rows)

    def begin_epoch(self, epoch: int) -> None:
        return None

    def flush(self) -> None:
        """Nothing becomes visible before the epoch commits; files are made durable at :meth:`prepare`."""

    def prepare(self, epoch: int) -> tuple[list[PendingFile], pa.Table | None]:
        if self._sink is None:
            return [], None
        self._sink.close()
        self._sink = None
        prefix = f"part-{self._writer}-s{self._sequence:05d}"
        self._sequence += 1
        staged = sorted(self._staging.glob(f"{prefix}*"))
        for path in staged:
            fsync_path(path)
        self._prepared = [PendingFile(str(path), str(self._directory / path.name)) for path in staged]
        return list(self._prepared), None

    def commit(self) -> None:
        commit_pending_files(self._prepared)
        self._prepared = []

    def close(self) -> None:
        if self._sink is not None:  # an unprepared epoch stays staged: recovery discards it
            self._sink.close()


class TransactionalKafkaOutput:
    """Exactly-once Kafka: one transaction per epoch with a commit marker ``(lineage, slot, epoch)`` in it; the
    epoch's rows are kept until commit so the checkpoint can hold them (write-ahead)."""

    def __init__(self, sink: KafkaSink | KafkaDeadLetterSink, slot: str, pipeline: str, lineage: str) -> None:
        self.sink = sink
        self.slot = slot
        self.lineage = lineage
        self._marker_topic = commit_marker_topic(pipeline)
        self._rows: list[pa.Table] = []

    def write(self, rows: Rows) -> None:
        if rows.num_rows == 0:
            return
        self.sink.write(rows)
        self._rows.append(rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows]))

    def begin_epoch(self, epoch: int) -> None:
        """Every record of the epoch carries ``eventray.slot``, ``eventray.epoch`` and ``eventray.lineage``
        headers, so a checker can tell which transaction wrote it (``eventray verify``: aborted reads)."""
        self.sink.producer.extra_headers = [
            ("eventray.slot", self.slot.encode()),
            ("eventray.epoch", b"%d" % epoch),
            ("eventray.lineage", self.lineage.encode()),
        ]

    def flush(self) -> None:
        """Records are acknowledged at :meth:`prepare`; they are visible to read_committed readers at commit."""

    def prepare(self, epoch: int) -> tuple[list[PendingFile], pa.Table | None]:
        if not self._rows:
            return [], None
        marker = CommitMarker(self.slot, epoch, self.lineage)
        self.sink.producer.send_to(self._marker_topic, marker.key(), marker.value())
        self.sink.producer.flush()
        rows = pa.concat_tables(self._rows, promote_options="permissive")
        self._rows = []
        return [], rows

    def commit(self) -> None:
        self.sink.producer.commit_transaction()

    def redo(self, rows: pa.Table, epoch: int) -> None:
        """Write an epoch's rows again in a new transaction with its marker, and commit (recovery)."""
        self.begin_epoch(epoch)
        self.write(rows)
        self.prepare(epoch)
        self.commit()

    def close(self) -> None:
        self.sink.close()  # an open transaction is aborted by the broker (timeout) or by the next producer


def prepare_outputs(
    outputs: list[Output], epoch: int, store: CheckpointStore | None, writer: str
) -> tuple[list[PendingFile], list[WriteAhead]]:
    """Prepare every output of an actor at the barrier of ``epoch``: the staged files to rename on commit, and
    each exactly-once Kafka slot's rows written into the checkpoint as ``ahead-<writer>-<n>`` (write-ahead).
    Blocking (acks, fsync): the async source actor runs it on a thread."""
    pending: list[PendingFile] = []
    ahead: list[WriteAhead] = []
    for index, output in enumerate(outputs):
        files, rows = output.prepare(epoch)
        pending.extend(files)
        if rows is not None and store is not None and isinstance(output, TransactionalKafkaOutput):
            ahead.append(WriteAhead(output.slot, store.write_table(epoch, f"ahead-{writer}-{index}", rows)))
    return pending, ahead


def commit_pending_files(files: list[PendingFile]) -> None:
    """Rename staged files into place; idempotent (a file already renamed is left alone)."""
    for pending in files:
        staged = Path(pending.staged)
        if staged.exists():
            staged.replace(pending.final)


def discard_staged_files(directories: list[str]) -> None:
    """Delete staged files of epochs that never completed (after :func:`commit_pending_files` of the last one)."""
    for directory in directories:
        for stale in (Path(directory) / STAGING).glob("part-*"):
            stale.unlink()
