"""What tests of pipelines use and production configs never hold: planned crashes, and a sink that keeps rows.

A :class:`CrashAt` makes the actor in a slot exit at an exact point of the checkpoint protocol, as a killed
process would: a SIGKILL from outside could hit that point only by luck. A run takes its plan as an argument
(``run_pipeline(config, faults=(CrashAt("aggregate-0", 4),))``, or the Supervisor's and the actors'
``faults``), never from the pipeline config, so no config can crash a production run.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

__all__ = ["CollectingSink", "CrashAt", "FaultPlan", "crash_if_planned", "faults_after"]

log = logging.getLogger(__name__)
_EXIT_CODE = 70
_SLOT = re.compile(r"^(source|aggregate)-\d+$")


@dataclass(frozen=True)
class CrashAt:
    """The actor in ``slot`` (``aggregate-0``, ``source-1``) exits at ``point`` of the first epoch from ``epoch``
    on in which it has outputs to commit, once per run. ``before_commit``: after the epoch's checkpoint is
    complete, before the actor commits its outputs (the window exactly-once recovery must close)."""

    slot: str
    epoch: int
    point: Literal["before_commit"] = "before_commit"

    def __post_init__(self) -> None:
        if self.point != "before_commit":
            raise ValueError(f"CrashAt point {self.point!r}: the one point is before_commit")
        if not _SLOT.match(self.slot):
            raise ValueError(f"CrashAt slot {self.slot!r}: write source-<n> or aggregate-<n>, e.g. aggregate-0")
        if self.epoch < 1:
            raise ValueError(f"CrashAt epoch {self.epoch}: epochs count from 1")


FaultPlan = tuple[CrashAt, ...]


def crash_if_planned(faults: FaultPlan, point: str, slot: str, epoch: int, prepared_outputs: bool) -> None:
    """Exit the process at once (no cleanup, as a kill) if ``faults`` plan a crash here: at ``point`` of the
    first epoch from the fault's ``epoch`` on in which ``slot`` prepared outputs to commit (an epoch with
    nothing to commit would test nothing). The Supervisor drops a fault once a checkpoint of its epoch or later
    is restored, so it fires once per run (:func:`faults_after`)."""
    for fault in faults:
        if (fault.point, fault.slot) == (point, slot) and epoch >= fault.epoch and prepared_outputs:
            log.error("injected fault: %s exits at %s of epoch %d", slot, point, epoch)
            os._exit(_EXIT_CODE)


def faults_after(faults: FaultPlan, restored_epoch: int | None) -> FaultPlan:
    """The faults for a topology restored from the checkpoint of ``restored_epoch`` (None: a fresh start): only
    those planned for later epochs, since those of earlier ones fired (or their epochs passed)."""
    if restored_epoch is None:
        return faults
    return tuple(fault for fault in faults if fault.epoch > restored_epoch)


class CollectingSink:
    """A sink that keeps every row written to it, in order, for a test to read back (:meth:`rows`, :meth:`table`).

    It takes the place of any sink or dead-letter output of a stage run without an actor
    (:class:`~pipelines.stages.source_stage.SourceStage`, :class:`~pipelines.stages.keyed_runner.KeyedStageRunner`).
    """

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self.closed = False

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        if self.closed:
            raise ValueError("write() to a CollectingSink after close()")
        self._tables.append(pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def table(self) -> pa.Table | None:
        """Everything written, as one table (None before the first write)."""
        if not self._tables:
            return None
        return pa.concat_tables(self._tables, promote_options="permissive")

    def rows(self) -> list[dict[str, Any]]:
        """Everything written, a dict per row."""
        return [row for table in self._tables for row in table.to_pylist()]
