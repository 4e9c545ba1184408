"""SourceActor: owns a set of partitions, reads, decodes, runs the stateless operators, routes by key group."""

from __future__ import annotations

import asyncio
import logging

import pyarrow as pa
import pyarrow.compute as pc

from actors.downstream import Downstream
from actors.reports import SourceProgress
from pipelines.config import PipelineConfig
from pipelines.keygroups import KeyGroupRouter
from pipelines.plan import compile_pipeline
from pipelines.records import RawBatch
from pipelines.sinks import Sink, open_sink
from pipelines.sources import PartitionReader, open_reader

__all__ = ["END_OF_INPUT", "NO_WATERMARK", "SourceActor"]

log = logging.getLogger(__name__)

NO_WATERMARK = -(1 << 62)
END_OF_INPUT = 1 << 62


class SourceActor:
    """Reads the partitions it was assigned, in offset order per partition.

    Contract: :meth:`run` returns when every partition is exhausted (bounded or frozen input) or after
    :meth:`stop`; before returning it hands every batch it read to the downstream stage or its sinks and
    flushes them, so a clean stop loses nothing that was read. Invalid records go to the dead-letter sink.
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
        owner_of_group: list[int] | None = None,
    ) -> None:
        self._config = config
        self._actor_id = actor_id
        self._sender = sender_index
        self._compiled = compile_pipeline(config)
        self._readers: list[PartitionReader] = [
            open_reader(config.source, partition, 0, limits.get(partition), started_at_s, start_time_ms)
            for partition in partitions
        ]
        self._downstream = downstream
        self._router: KeyGroupRouter | None = None
        aggregate = config.aggregate
        if aggregate is not None:
            if downstream is None or owner_of_group is None:
                raise ValueError("a pipeline with an aggregate needs a downstream and owner_of_group")
            self._router = KeyGroupRouter(aggregate.key, config.runtime.max_key_groups, owner_of_group)
        self._sinks: list[Sink] = [] if aggregate else [open_sink(sink, actor_id) for sink in config.sinks]
        self._dead_letter = open_sink(config.dead_letter, actor_id)
        self._max_event_time = {reader.partition: NO_WATERMARK for reader in self._readers}
        self._sent_watermark = [NO_WATERMARK] * (downstream.owners if downstream else 0)
        self._stopping = False
        self._done = False
        self._events_in = 0
        self._events_out = 0
        self._dead_lettered = 0

    async def run(self) -> SourceProgress:
        batch_size = self._config.runtime.batch_size
        idle_s = self._config.runtime.idle_poll_ms / 1000
        try:
            while not self._stopping and not all(reader.exhausted for reader in self._readers):
                fetched = False
                for reader in self._readers:
                    raw = await reader.fetch(batch_size)
                    if raw is not None:
                        fetched = True
                        await self._handle(reader.partition, raw)
                    await asyncio.sleep(0)  # let stop()/progress() in between batches
                    if self._stopping:
                        break
                if not fetched:
                    await asyncio.sleep(idle_s)
            await self._finish()
        finally:
            for reader in self._readers:
                await reader.close()
        self._done = True
        return self.progress()

    def stop(self) -> None:
        """Stop reading after the batch in hand; :meth:`run` then finishes and returns."""
        self._stopping = True

    def freeze(self) -> None:
        """Read up to what has arrived now, then finish (a bounded drain)."""
        for reader in self._readers:
            reader.freeze()

    def progress(self) -> SourceProgress:
        return SourceProgress(
            actor_id=self._actor_id,
            events_in=self._events_in,
            events_out=self._events_out,
            dead_lettered=self._dead_lettered,
            positions={reader.partition: reader.position for reader in self._readers},
            end_offsets={reader.partition: reader.end_offset() for reader in self._readers},
            done=self._done,
        )

    async def _handle(self, partition: int, raw: RawBatch) -> None:
        decoded = self._compiled.decode(raw)
        self._events_in += len(raw)
        for rejected in decoded.dead_letters:
            self._dead_letter.write(rejected)
            self._dead_lettered += rejected.num_rows
        if decoded.events.num_rows:
            newest = pc.max(decoded.events.column("_timestamp")).as_py()
            if newest is not None:
                self._max_event_time[partition] = max(self._max_event_time[partition], newest)
        events = self._compiled.transform(decoded.events)
        self._events_out += events.num_rows
        if self._router is None:
            for sink in self._sinks:
                sink.write(events)
            return
        await self._route(events)

    async def _route(self, events: pa.RecordBatch) -> None:
        assert self._router is not None and self._downstream is not None
        watermark = self._watermark()
        parts = self._router.split(events)
        for owner in range(self._downstream.owners):
            part = parts.get(owner)
            if part is None and watermark <= self._sent_watermark[owner]:
                continue
            await self._downstream.send(owner, self._sender, part, watermark)
            self._sent_watermark[owner] = watermark

    def _watermark(self) -> int:
        disorder = self._config.aggregate.max_out_of_order_ms if self._config.aggregate else 0
        pending = [self._max_event_time[reader.partition] for reader in self._readers if not reader.exhausted]
        if not pending:
            return max(self._max_event_time.values(), default=NO_WATERMARK) - disorder
        lowest = min(pending)
        return NO_WATERMARK if lowest == NO_WATERMARK else lowest - disorder

    async def _finish(self) -> None:
        if self._downstream is not None:
            await self._downstream.finish(self._sender)
        for sink in self._sinks:
            sink.close()
        self._dead_letter.close()
