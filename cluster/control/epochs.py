"""Aligned checkpoints, run by the Supervisor every epoch interval (ARCHITECTURE.md section 4).

One epoch ``e``, in order:

1. every source pauses between two batches, waits until the aggregates processed everything it sent, prepares
   its outputs and reports its offsets (the barrier);
2. every aggregate snapshots its key groups (Arrow IPC) and prepares its outputs (at-least-once: flush;
   exactly-once: stage files, write the commit marker, keep the rows as write-ahead); with several keyed stages,
   stage by stage: an aggregate first waits until the next stage processed what it sent, then that stage's
   aggregates take their snapshots;
3. the checkpoint's metadata is written atomically: epoch ``e`` is complete;
4. every aggregate, then every source, commits its outputs (rename, commit the transaction); sources commit
   their offsets to Kafka and resume reading.

A crash before 3 restores epoch ``e - 1``; a crash after 3 restores ``e`` and redoes the commits of 4 that
did not happen. Without a checkpoint section the same steps run without snapshots or metadata: outputs flush
and offsets are committed per epoch (at-least-once), but a crash cannot be restored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from actors.metrics import PipelineMetrics
from cluster.control.handles import AggregateHandle, SourceHandle
from cluster.control.run_report import RunProgress
from pipelines.config.kafka import KafkaSourceConfig
from pipelines.config.pipeline import PipelineConfig
from pipelines.errors import RetriableError
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock
from pipelines.state.checkpoint_store import AggregateSnapshot, Checkpoint, CheckpointStore, RunCounts

__all__ = ["EpochRunner", "EpochTimeout", "RunIdentity"]

log = logging.getLogger(__name__)

_DEFAULT_INTERVAL_S = 5.0
_DEFAULT_TIMEOUT_MS = 600_000


class EpochTimeout(RetriableError):
    """An epoch did not complete in time; restoring the topology from the last checkpoint may get past it."""


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint records about the run besides actor state: its id, clock and partition count."""

    run_id: str
    started_at_s: float
    start_time_ms: int
    partitions: int
    earlier: RunCounts | None = None  # counted by the topologies this run replaced (see RunProgress.plus_counts)
    inputs: tuple[str, ...] = ()  # the input layout (pipelines.stages.topology.input_layout)


class EpochRunner:
    """Numbers epochs, decides when the next one is due, and runs one across the topology."""

    def __init__(
        self,
        config: PipelineConfig,
        store: CheckpointStore | None,
        metrics: PipelineMetrics,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._clock = clock
        self._store = store
        if config.checkpoint is not None:
            self._interval_s = config.checkpoint.interval_ms / 1000
        elif kafka := [i.source for i in config.all_inputs if isinstance(i.source, KafkaSourceConfig)]:
            self._interval_s = min(source.commit_interval_ms for source in kafka) / 1000
        else:
            self._interval_s = _DEFAULT_INTERVAL_S
        self._timeout_s = (config.checkpoint.timeout_ms if config.checkpoint else _DEFAULT_TIMEOUT_MS) / 1000
        self._next_epoch = (store.latest_epoch() if store else 0) + 1
        self._last_s = self._clock.monotonic()
        self._metrics = metrics
        self.completed = 0

    def restarted(self, checkpoint: Checkpoint | None) -> None:
        """A topology was (re)started: the next epoch is numbered after every one ever begun."""
        if self._store is not None:
            self._next_epoch = max(self._next_epoch, self._store.latest_epoch() + 1)
        self._last_s = self._clock.monotonic()

    @property
    def next_epoch(self) -> int:
        return self._next_epoch

    def due(self) -> bool:
        return self._clock.monotonic() - self._last_s >= self._interval_s

    async def run_epoch(
        self,
        sources: Sequence[SourceHandle],
        aggregates: Sequence[AggregateHandle],
        run: RunIdentity,
        finished: bool = False,
        hold: bool = False,
    ) -> Checkpoint | None:
        """Run one epoch end to end (see the module docstring); return its checkpoint when checkpoints are on.

        ``hold``: sources stay paused after committing (a rescale replaces them from this checkpoint). An epoch
        that does not complete within ``checkpoint.timeout_ms`` (a barrier or a commit that never returns while
        its actor still answers the watchdog) raises :class:`EpochTimeout`, and the topology is restored."""
        epoch = self._next_epoch
        try:
            return await asyncio.wait_for(self._run_epoch(sources, aggregates, run, finished, hold), self._timeout_s)
        except asyncio.TimeoutError:  # the built-in TimeoutError from Python 3.11 on, not on 3.10
            raise EpochTimeout(
                f"epoch {epoch} did not complete within {self._timeout_s:.0f} s (checkpoint.timeout_ms): a barrier "
                "or a commit is stuck; the topology is restored from the last checkpoint"
            ) from None

    async def _run_epoch(
        self,
        sources: Sequence[SourceHandle],
        aggregates: Sequence[AggregateHandle],
        run: RunIdentity,
        finished: bool,
        hold: bool,
    ) -> Checkpoint | None:
        epoch = self._next_epoch
        self._next_epoch += 1
        started = self._clock.monotonic()
        barriers = await asyncio.gather(*(source.checkpoint(epoch) for source in sources))
        snapshots: list[AggregateSnapshot] = []
        for stage in sorted({aggregate.stage for aggregate in aggregates}):  # a stage drains into the next first
            level = [aggregate for aggregate in aggregates if aggregate.stage == stage]
            snapshots += await asyncio.gather(*(aggregate.checkpoint(epoch) for aggregate in level))
        # every source is paused at the barrier and every aggregate has processed it: counters are exact here
        counted = RunProgress.of(
            list(await asyncio.gather(*(source.progress() for source in sources))),
            list(await asyncio.gather(*(aggregate.progress() for aggregate in aggregates))),
            0.0,
        ).plus_counts(run.earlier)
        checkpoint = None
        if self._store is not None:
            checkpoint = Checkpoint(
                epoch=epoch,
                run_id=run.run_id,
                created_at_s=self._clock.now_s(),
                started_at_s=run.started_at_s,
                start_time_ms=run.start_time_ms,
                partitions=run.partitions,
                sources=[barrier.snapshot for barrier in barriers],
                aggregates=list(snapshots),
                source_pending_files=[f for barrier in barriers for f in barrier.pending_files],
                source_write_ahead=[w for barrier in barriers for w in barrier.write_ahead],
                finished=finished,
                duration_ms=(self._clock.monotonic() - started) * 1000,
                counts=counted.counts(),
                inputs=list(run.inputs),
            )
            await asyncio.to_thread(self._store.commit, checkpoint)
        await asyncio.gather(*(aggregate.complete(epoch) for aggregate in aggregates))
        await asyncio.gather(*(source.complete(epoch, resume=not hold) for source in sources))
        if self._store is not None and self._config.checkpoint is not None:
            await asyncio.to_thread(self._store.prune, self._config.checkpoint.keep)
        duration_s = self._clock.monotonic() - started
        self.completed += 1
        self._metrics.checkpoint(duration_s)
        self._last_s = self._clock.monotonic()
        return checkpoint
