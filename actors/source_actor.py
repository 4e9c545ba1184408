"""SourceActor: owns a set of partitions, reads, decodes, runs the stateless operators, routes by key group."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from actors.epoch_outputs import Output, prepare_outputs
from actors.metrics import PipelineMetrics
from actors.outputs import open_actor_outputs, output_lineage
from actors.reader_set import ReaderSet
from actors.recovery import fence_kafka_outputs, recover_kafka_outputs
from actors.reports import SourceProgress
from actors.telemetry import Telemetry
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.secrets import secrets_here
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.io.records import RawBatch
from pipelines.io.sources import PartitionReader
from pipelines.stages.circuit_breaker import CircuitBreaker
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.source_stage import Downstream, Routes, SourceStage
from pipelines.stages.topology import local_partition
from pipelines.state.checkpoint_store import (
    PendingFile,
    SourceSnapshot,
    WriteAhead,
    open_checkpoint_store,
)
from pipelines.testing import FaultPlan, crash_if_planned

__all__ = ["SourceActor", "SourceBarrier"]


_LAG_REPORT_S = 0.5


@dataclass(frozen=True)
class SourceBarrier:
    """What a source recorded at a checkpoint barrier: its offsets and event times, and its epoch outputs."""

    snapshot: SourceSnapshot
    pending_files: list[PendingFile]
    write_ahead: list[WriteAhead]


class SourceActor:
    """Reads the partitions it was assigned, in offset order per partition.

    Contract: :meth:`run` returns when every partition is exhausted (bounded or frozen input) or after
    :meth:`stop`; before returning it hands every batch it read to the downstream stage (and waits until they
    are processed) or to its sinks. Outputs become durable and offsets are committed per epoch, never by
    :meth:`run` itself: :meth:`checkpoint` pauses reading between two batches, waits until the aggregates
    processed everything sent, prepares the outputs (flush, or stage for exactly-once) and returns the offsets;
    :meth:`complete` (called once the epoch's checkpoint is complete) commits the outputs, commits the offsets
    to Kafka under the group id and resumes reading. :meth:`close` releases everything at the end.
    Invalid records go to the dead-letter output; the circuit breaker halts the run if too many are invalid.
    The watermark it sends is the minimum over its partitions of (max event time seen - allowed disorder);
    an exhausted partition no longer holds it back.
    """

    def __init__(
        self,
        config: PipelineConfig,
        actor_id: str,
        sender_index: int,
        partitions: list[int],
        limits: dict[int, int | None],
        started_at_s: float,
        start_time_ms: int,
        downstream: Downstream | None = None,
        routes: Routes | None = None,
        restored: SourceSnapshot | None = None,
        faults: FaultPlan = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``restored``: offsets and event times from a checkpoint (partitions start there); ``limits`` count
        from where each partition starts; ``faults``: crashes planned by a test (:mod:`pipelines.testing`)."""
        config = secrets_here(config)  # runtime.secrets: environment reads them here, not from Ray
        self._config = config
        self._actor_id = actor_id
        self._sender = sender_index
        self._slot = f"source-{sender_index}"
        self._faults = faults
        self._clock = clock
        self._prepared_outputs = False  # the last checkpoint prepared outputs to commit (for injected faults)
        self._pending_partitions = list(partitions)
        self._limits = dict(limits)
        self._restored_positions = dict(restored.positions) if restored else {}
        self._restored_event_times = dict(restored.max_event_time_ms) if restored else {}
        self._store = open_checkpoint_store(config.checkpoint, config.name)
        self._reading = asyncio.Lock()  # held while a batch is handled, and by a checkpoint until complete()
        self._inputs = ReaderSet(config, f"{config.name}-{actor_id}", started_at_s, start_time_ms)
        self._downstream = downstream
        keyed = config.keyed_stage is not None
        if keyed and (downstream is None or routes is None):
            raise ValueError("a pipeline with a keyed stage needs a downstream and routes")
        self._telemetry = Telemetry(config, actor_id)
        lineage = output_lineage(config, self._store)
        outputs = open_actor_outputs(config, actor_id, self._slot, self._telemetry, lineage, results=not keyed)
        self._sinks: list[Output] = outputs.results
        self._dead_letter = outputs.dead_letter
        breaker = config.circuit_breaker
        self._stage = SourceStage(
            compile_pipeline(config),
            dead_letter=self._dead_letter,
            sinks=self._sinks,
            sender=sender_index,
            backlogs=self._backlogs,
            breaker=None if breaker is None else CircuitBreaker(breaker, f"{config.name}/{actor_id}"),
            tracing=self._telemetry,
            clock=clock,
        )
        if downstream is not None and routes is not None:
            self._stage.route_to(downstream, routes)
        self._metrics = PipelineMetrics(config.name)
        self._lag_topics: dict[int, str] = {}  # the topic (metrics label) each partition's batches name
        self._lag_reported_at = 0.0
        self._stopping = False
        self._frozen = False
        self._done = False
        self._committed: dict[int, int] = {}
        self._busy_s = 0.0
        self._released: set[int] = set()  # partitions a rescale moved away from this actor

    async def fence_outputs(self) -> None:
        """Exactly-once: fence the producers of the actor this one replaces (see :mod:`actors.recovery`)."""
        await asyncio.to_thread(fence_kafka_outputs, [*self._sinks, self._dead_letter])

    async def recover_outputs(self, epoch: int, write_ahead: list[WriteAhead], committed: dict[str, int]) -> int:
        """Exactly-once: redo this slot's Kafka transactions of ``epoch`` that never committed (``committed``: the
        newest committed epoch per slot); rows re-emitted."""
        if self._store is None:
            return 0
        outputs = [*self._sinks, self._dead_letter]
        return await asyncio.to_thread(recover_kafka_outputs, outputs, epoch, write_ahead, committed, self._store)

    async def run(self) -> SourceProgress:
        try:
            async with self._reading:
                await self._open_pending()
            await self._read_until_done()
            if self._downstream is not None:
                # under the lock, as a batch: the end of input and everything it makes the keyed stages emit
                # (a chain of stages flushes stage by stage) falls on one side of a checkpoint barrier
                async with self._reading:
                    await self._downstream.finish(self._sender)
        except BaseException:
            await self._inputs.close()
            raise
        self._done = True
        return self.progress()

    async def checkpoint(self, epoch: int) -> SourceBarrier:
        """The barrier of ``epoch``: pause reading, wait for the aggregates, prepare outputs, report offsets.

        Reading stays paused until :meth:`complete` (aligned checkpoints: nothing of epoch ``epoch + 1``
        reaches an aggregate before every aggregate snapshotted ``epoch``).
        """
        await self._reading.acquire()
        try:
            await self._open_pending()
            if self._downstream is not None:
                await self._downstream.drain()
            outputs = [*self._sinks, self._dead_letter]
            pending, ahead = await asyncio.to_thread(prepare_outputs, outputs, epoch, self._store, self._slot)
            self._prepared_outputs = bool(pending or ahead)
            readers = self._inputs.readers
            snapshot = SourceSnapshot(
                actor_id=self._actor_id,
                positions={reader.partition: reader.position for reader in readers},
                max_event_time_ms=self._stage.watermarks.event_times(),
                limit_ends={r.partition: end for r in readers if (end := r.limit_end) is not None},
            )
        except BaseException:
            self._reading.release()
            raise
        return SourceBarrier(snapshot, pending, ahead)

    async def begin_epoch(self, epoch: int) -> None:
        """Outputs written from now on belong to ``epoch`` (set once at start; :meth:`complete` moves it on)."""
        for output in [*self._sinks, self._dead_letter]:
            output.begin_epoch(epoch)

    async def complete(self, epoch: int, resume: bool = True) -> SourceProgress:
        """``epoch`` is complete: commit its outputs and offsets, then resume reading (epoch ``epoch + 1``);
        with ``resume`` False stay paused (a rescale replaces this actor from the checkpoint)."""
        crash_if_planned(self._faults, "before_commit", self._slot, epoch, self._prepared_outputs)
        try:
            for output in [*self._sinks, self._dead_letter]:
                await asyncio.to_thread(output.commit)
                output.begin_epoch(epoch + 1)
            self._committed.update(await self._inputs.commit())
        finally:
            if resume and self._reading.locked():
                self._reading.release()
        return self.progress()

    async def reassign(
        self,
        partitions: list[int],
        restored: SourceSnapshot,
        limits: dict[int, int | None],
        downstream: Downstream | None,
        routes: Routes | None,
    ) -> None:
        """A rescale, while this actor is held at the barrier (:meth:`complete` with ``resume`` False): read
        ``partitions`` from now on (new ones from ``restored``, the checkpoint just taken) and route to the
        new set of aggregates. Partitions it keeps are not touched; :meth:`resume` continues reading."""
        if not self._reading.locked():
            raise RuntimeError("reassign() needs the actor held at a barrier (complete(epoch, resume=False))")
        owned = {reader.partition for reader in self._inputs.readers} | set(self._pending_partitions)
        leaving = sorted(owned - set(partitions))
        await self._inputs.release(leaving)
        self._released |= set(leaving)
        for partition in leaving:
            self._stage.watermarks.released(partition)
        arriving = sorted(set(partitions) - owned)
        self._released -= set(arriving)
        self._restored_positions.update({p: restored.positions[p] for p in arriving if p in restored.positions})
        self._restored_event_times.update(
            {p: restored.max_event_time_ms[p] for p in arriving if p in restored.max_event_time_ms}
        )
        self._limits.update({p: limits.get(p) for p in arriving})
        self._pending_partitions = [p for p in self._pending_partitions if p not in leaving] + arriving
        if self._stage.routes and downstream is not None and routes is not None:
            self._downstream = downstream
            self._stage.route_to(downstream, routes)

    async def resume(self) -> None:
        """Continue reading after a rescale held this actor at the barrier."""
        if self._reading.locked():
            self._reading.release()

    async def close(self) -> SourceProgress:
        """Release outputs, inputs and telemetry (after the last epoch completed, or to abandon the actor)."""
        try:
            for output in [*self._sinks, self._dead_letter]:
                await asyncio.to_thread(output.close)
            self._telemetry.close()
        finally:
            await self._inputs.close()
            await self._stage.close()
        return self.progress()

    async def add_partitions(self, partitions: list[int]) -> None:
        """Take ownership of more partitions (new partitions of the topic); they are opened between batches."""
        self._pending_partitions.extend(partitions)

    def stop(self) -> None:
        """Stop reading after the batch in hand; :meth:`run` then finishes and returns."""
        self._stopping = True

    async def freeze(self) -> None:
        """Read up to what has arrived now, then finish (a bounded drain). Partitions still being opened are
        frozen as soon as they are open."""
        self._frozen = True
        for reader in list(self._inputs.readers):
            await reader.freeze()

    def alive(self) -> bool:
        """The watchdog's ping (cluster/control/watchdog.py), answered in a concurrency group of its own."""
        return True

    def progress(self) -> SourceProgress:
        readers = self._inputs.readers
        return SourceProgress(
            actor_id=self._actor_id,
            events_in=self._stage.events_in,
            events_out=self._stage.events_out,
            dead_lettered=self._stage.dead_lettered,
            positions={reader.partition: reader.position for reader in readers},
            end_offsets={reader.partition: reader.end_offset() for reader in readers},
            done=self._done,
            committed=dict(self._committed),
            busy_s=self._busy_s,
        )

    async def _open_pending(self) -> None:
        if self._pending_partitions:
            partitions, self._pending_partitions = self._pending_partitions, []
            for reader in await self._inputs.open(partitions, self._limits, self._restored_positions):
                self._stage.watermarks.opened(
                    reader.partition, self._restored_event_times.get(reader.partition, NO_WATERMARK)
                )
                if self._frozen:
                    await reader.freeze()

    async def _read_until_done(self) -> None:
        runtime = self._config.runtime
        idle_s = runtime.idle_poll_ms / 1000
        while not self._stopping:
            async with self._reading:
                await self._open_pending()
            readers = self._inputs.readers
            if readers and all(reader.exhausted for reader in readers):
                return
            fetched = False
            for reader in readers:
                if reader.partition in self._released:
                    continue  # a rescale moved it to another actor while this loop was paused
                async with self._reading:  # a checkpoint barrier falls between two batches
                    if reader.partition in self._released:
                        continue
                    raw = await reader.fetch(runtime.batch_size)
                    if raw is not None:
                        fetched = True
                        await self._handle(raw)
                        self._lag_topics[reader.partition] = raw.topic
                        self._report_lag(reader)
                await asyncio.sleep(0)  # let stop()/progress()/checkpoint() in between batches
                if self._stopping:
                    return
            if self._clock.monotonic() - self._lag_reported_at >= _LAG_REPORT_S:
                self._lag_reported_at = self._clock.monotonic()
                for reader in readers:
                    if reader.partition not in self._released:
                        self._report_lag(reader)
            if not fetched:
                if self._stage.routes:
                    async with self._reading:
                        await self._stage.route_watermark()  # a quiet or idle source still moves the watermark
                await asyncio.sleep(idle_s)

    def _report_lag(self, reader: PartitionReader) -> None:
        """The partition's lag gauges, once it has named its topic (its first batch). Reported after each of its
        batches and, for every partition, every ``_LAG_REPORT_S``: Ray keeps a gauge on the endpoint only for two
        reporting intervals after its last report, and a quiet partition's series must not vanish."""
        topic = self._lag_topics.get(reader.partition)
        if topic is None:
            return
        newest = self._stage.watermarks.newest(reader.partition)
        lag = max(0, reader.end_offset() - reader.position)
        self._metrics.lag(topic, local_partition(reader.partition), lag, newest)

    async def _handle(self, raw: RawBatch) -> None:
        started = time.perf_counter()
        out, dead = self._stage.events_out, self._stage.dead_lettered
        try:
            handled = await self._stage.handle(raw)
            self._metrics.traceparents_dropped(raw.topic, handled.dropped_traceparents)
        finally:  # a batch that raised half way (the breaker tripped) is counted as far as it went
            seconds = time.perf_counter() - started
            self._busy_s += seconds
            out, dead = self._stage.events_out - out, self._stage.dead_lettered - dead
            self._metrics.batch(raw.topic, len(raw), out, dead, seconds)

    def _backlogs(self) -> dict[int, int | None]:
        """The partitions not yet exhausted, with what is left to read in each (the stage's watermark)."""
        return {reader.partition: reader.backlog() for reader in self._inputs.readers if not reader.exhausted}
