"""The source stage: what happens to each fetched batch before it leaves a source actor, as a pure object.

decode -> dead letters (policy, circuit breaker) -> stateless operators -> route by key group (with the watermark)
or write to the sinks. A :class:`~actors.SourceActor` hosts one and keeps the Kafka I/O, the lock, the barrier
protocol, metrics and recovery; a unit test drives one with plain objects (ARCHITECTURE.md section 3, the stage
chain).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import PipelineConfig
from pipelines.config.saga import SagaConfig
from pipelines.config.state import KeyedProcessConfig
from pipelines.decode.codecs import DecodedBatch
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock
from pipelines.eventtime.watermark_tracking import PartitionWatermarks
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.io.records import RawBatch
from pipelines.io.sinks import RowWriter
from pipelines.stages.circuit_breaker import CircuitBreaker
from pipelines.stages.dead_letter_policy import DeadLetterPolicy
from pipelines.stages.plan import CompiledPipeline
from pipelines.stages.topology import input_of, local_partition
from pipelines.state.keygroups import KeyGroupRouter

__all__ = ["Downstream", "Handled", "NoTracing", "Routes", "SourceStage", "Tracing"]


class Downstream(Protocol):
    """The keyed stage's actors as seen by one sender.

    Contract: batches sent by one sender to one owner are processed in the order sent. ``send`` returns once
    the batch is handed over; it waits (backpressure) when too many batches are still unprocessed, and raises
    the owner's error if an earlier batch failed. ``finish`` waits until every batch sent was processed and
    tells every owner that this sender has no more input. ``trace_context`` is the sender's batch span
    (a W3C traceparent), so the owner's span for the batch becomes its child.
    """

    @property
    def owners(self) -> int: ...

    async def send(
        self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> None: ...

    async def drain(self) -> None:
        """Wait until every batch sent so far was processed (a checkpoint barrier)."""

    async def finish(self, sender: int) -> None: ...


class BatchSpan(Protocol):
    """An open batch span: its context (None: not recorded), and how rows come to carry it."""

    @property
    def traceparent(self) -> str | None: ...

    def carry(self, traceparents: pa.Array) -> pa.Array: ...


class Tracing(Protocol):
    """Spans around a batch's work (:class:`actors.telemetry.Telemetry` in an actor, :class:`NoTracing` here)."""

    def new_contexts(self, events: pa.RecordBatch) -> pa.RecordBatch: ...

    def batch_span(
        self, name: str, traceparents: pa.Array, attributes: Mapping[str, str | int], parent: str | None = None
    ) -> AbstractContextManager[BatchSpan]: ...


@dataclass(frozen=True)
class _Untraced:
    traceparent: None = None

    def carry(self, traceparents: pa.Array) -> pa.Array:
        return traceparents


_UNTRACED = _Untraced()


class NoTracing:
    """Tracing off: no contexts, no spans."""

    def new_contexts(self, events: pa.RecordBatch) -> pa.RecordBatch:
        return events

    def batch_span(
        self, name: str, traceparents: pa.Array, attributes: Mapping[str, str | int], parent: str | None = None
    ) -> AbstractContextManager[BatchSpan]:
        return nullcontext(_UNTRACED)


@dataclass(frozen=True)
class Handled:
    """What one fetched batch became: events read, events passed on (to the keyed stage or the sinks), events
    dead-lettered, and ``_traceparent`` headers dropped as malformed."""

    events_in: int
    events_out: int
    dead_lettered: int
    dropped_traceparents: int


Routes = Mapping[int, Sequence[int]]
"""Where a source's rows go: for each keyed stage that takes inputs (:class:`~pipelines.config.stage_graph.StageGraph`;
in a chain, stage 0 only), the owner of each of its key groups among the downstream's owners (those stages'
actors, stage by stage: :meth:`~pipelines.stages.wiring.StageWiring.source_routes`)."""


@dataclass
class _Routing:
    routers: tuple[KeyGroupRouter, ...]  # per input: by the key of the stage it feeds
    downstream: Downstream
    sent_watermark: list[int | None]
    sent_at_s: list[float]  # when each owner was sent something last (monotonic)


class SourceStage:
    """The work of a source actor on its batches, in offset order per partition.

    Contract:

    - **Blocks** only in :meth:`handle` and :meth:`route_watermark`, when the downstream pushes back (its
      ``send`` waits while too many batches are unprocessed); nothing else waits. ``sinks`` and ``dead_letter``
      take rows without waiting: in an actor they are epoch outputs, which stage rows for the epoch's barrier
      (exactly-once) or write them through (at-least-once).
    - **Raises** :class:`~pipelines.errors.PipelineHalted` when the circuit breaker trips (too many invalid
      records in a row, or too large a share of recent ones), and whatever the downstream raises (an owner's
      failure). An invalid record never raises: it is a dead letter with its reason, once (grouped by kind of
      error; the breaker sees the fetch's records in offset order), written before the breaker judges.
    - **Offsets** are never committed here: a batch's offsets become committable at the next checkpoint barrier
      of the hosting actor, after :meth:`handle` returned for it and the downstream drained.
    - **Backpressure** shows as :meth:`handle` taking longer: the hosting actor reads its next batch only after
      it returns.
    - **Watermark**: the minimum over open partitions of (newest valid event time - allowed disorder), idle and
      exhausted partitions left out (:class:`~pipelines.eventtime.watermark_tracking.PartitionWatermarks`); each owner
      gets it with every batch and, when it moved, alone (:meth:`route_watermark`). ``backlogs`` tells the partitions
      not yet exhausted with what is left to read in each.
    """

    def __init__(
        self,
        compiled: CompiledPipeline,
        *,
        dead_letter: RowWriter,
        sinks: Sequence[RowWriter] = (),
        sender: int = 0,
        backlogs: Callable[[], Mapping[int, int | None]],
        breaker: CircuitBreaker | None = None,
        tracing: Tracing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        config = compiled.config
        self._compiled = compiled
        self._dead_letter = dead_letter
        self._sinks = list(sinks)
        self._sender = sender
        self._backlogs = backlogs
        self._breaker = breaker
        self._tracing: Tracing = NoTracing() if tracing is None else tracing
        self._policies = [DeadLetterPolicy.of(config.dead_letter, spec.operators) for spec in config.all_inputs]
        stage = config.keyed_stage
        self.watermarks = PartitionWatermarks(
            stage.max_out_of_order_ms if stage else 0, stage.idle_timeout_ms if stage else 0, clock.monotonic
        )
        self._routing: _Routing | None = None
        self._clock = clock
        # a stage with processing-time timers (a saga's timeouts) hears from every source at least this often
        self._tick_s = config.runtime.timer_tick_ms / 1000 if _has_processing_timers(config) else float("inf")
        # counted as each batch goes, so a batch that raises half way (the breaker trips) is counted that far
        self.events_in = 0
        self.events_out = 0
        self.dead_lettered = 0

    @property
    def routes(self) -> bool:
        """Whether rows go to a keyed stage (set by :meth:`route_to`) rather than to the sinks."""
        return self._routing is not None

    def route_to(self, downstream: Downstream, routes: Routes) -> None:
        """Send rows, split by key group, to the owners of ``downstream`` (at start, and after a rescale): each
        input's by the key of the stage it feeds. Every owner gets this source's watermark and its end."""
        config = self._compiled.config
        if config.keyed_stage is None:
            raise ValueError("a pipeline without a keyed stage writes to its sinks; it has nothing to route to")
        graph = self._compiled.graph
        missing = [stage for stage in graph.input_stages if stage not in routes]
        if missing:
            raise ValueError(f"the inputs feed keyed stages {list(graph.input_stages)}; no owners given for {missing}")
        views = config.keyed_stages
        routers: dict[int, KeyGroupRouter] = {}
        for stage in graph.input_stages:
            key = views[stage].keyed_stage
            assert key is not None  # a view is of a keyed stage
            routers[stage] = KeyGroupRouter(key.key, config.runtime.max_key_groups, routes[stage])
        routing = tuple(routers[stage] for stage in graph.input_stage)
        self._routing = _Routing(routing, downstream, [NO_WATERMARK] * downstream.owners, [0.0] * downstream.owners)

    async def handle(self, raw: RawBatch) -> Handled:
        """Decode, dead-letter, transform and pass on one fetched batch (see the class contract)."""
        await self._compiled.prepare(raw)
        decoded = self._compiled.decode(raw)
        self.events_in += len(raw)
        if decoded.events.num_rows:
            newest = pc.max(decoded.events.column("_timestamp")).as_py()
            if newest is not None:
                self.watermarks.saw(raw.partition, newest)
        events = self._tracing.new_contexts(decoded.events)
        with self._tracing.batch_span(
            f"process {raw.topic}", events.column("_traceparent"), self._span_attributes(raw)
        ) as span:
            transformed = self._compiled.transform(events, input_of(raw.partition))
            # after the operators, in one call: the circuit breaker must see each record of the fetch once, in
            # offset order, whether decoding or an operator failed it
            failed = [*decoded.dead_letters, *transformed.failures_as_dead_letters(raw)]
            dead_lettered = self._dead_letter_rejected(raw, replace(decoded, dead_letters=failed))
            events = _carry_trace(transformed.events, span)
            self.events_out += events.num_rows
            if self._routing is None:
                for sink in self._sinks:
                    sink.write(events)
            else:
                await self._route(events, span.traceparent, input_of(raw.partition))
        return Handled(len(raw), events.num_rows, dead_lettered, decoded.dropped_traceparents)

    async def close(self) -> None:
        """Release what decoding opened (a schema registry's HTTP session)."""
        await self._compiled.close()

    async def route_watermark(self) -> None:
        """A quiet or idle source still moves the watermark: send it to each owner it changed for."""
        if self._routing is not None:
            await self._route(None, None, 0)

    def watermark(self) -> int | None:
        """This source's watermark now; None when every open partition is idle."""
        return self.watermarks.watermark(self._backlogs())

    def _span_attributes(self, raw: RawBatch) -> dict[str, str | int]:
        """OpenTelemetry messaging attributes of a batch span (ARCHITECTURE.md section 6)."""
        config = self._compiled.config
        return {
            "messaging.system": config.all_inputs[input_of(raw.partition)].source.type,
            "messaging.operation.type": "process",
            "messaging.destination.name": raw.topic,
            "messaging.consumer.group.name": config.group_id,
            "messaging.destination.partition.id": str(local_partition(raw.partition)),
            "messaging.batch.message_count": len(raw),
            "eventray.pipeline": config.name,
            "eventray.stage": "source",
        }

    def _dead_letter_rejected(self, raw: RawBatch, decoded: DecodedBatch) -> int:
        rejected_offsets: list[pa.Array] = []
        count = 0
        for rejected in decoded.dead_letters:
            if rejected.num_rows:
                self._dead_letter.write(self._policies[input_of(raw.partition)].apply(rejected))
                count += rejected.num_rows
                self.dead_lettered += rejected.num_rows
                rejected_offsets.append(rejected.column("offset"))
        if self._breaker is not None:
            offsets = raw.offsets.to_numpy(zero_copy_only=False)
            rejected = np.concatenate([array.to_numpy(zero_copy_only=False) for array in rejected_offsets] or [[]])
            self._breaker.observe(np.isin(offsets, rejected))
        return count

    async def _route(self, events: pa.RecordBatch | None, trace_context: str | None, input_index: int) -> None:
        """Send each owner its rows (of input ``input_index``) and the watermark; with no rows, only a watermark
        that changed, or the same one once ``runtime.timer_tick_ms`` passed since the owner heard from this
        source, when the stage has processing-time timers (a tick: they fire without input)."""
        assert self._routing is not None
        routing = self._routing
        watermark = self.watermark()
        parts = routing.routers[input_index].split(events) if events is not None else {}
        now_s = self._clock.monotonic()
        for owner in range(routing.downstream.owners):
            part = parts.get(owner)
            sent = routing.sent_watermark[owner]
            unchanged = watermark == sent or (watermark is not None and sent is not None and watermark <= sent)
            if part is None and unchanged and now_s - routing.sent_at_s[owner] < self._tick_s:
                continue
            await routing.downstream.send(owner, self._sender, part, watermark, trace_context)
            routing.sent_watermark[owner] = watermark
            routing.sent_at_s[owner] = now_s


def _has_processing_timers(config: PipelineConfig) -> bool:
    """Whether a keyed stage the inputs feed may wait on processing time: a saga, or a user's process function."""
    return any(isinstance(view.keyed, KeyedProcessConfig | SagaConfig) for view in config.keyed_stages)


def _carry_trace(events: pa.RecordBatch, span: BatchSpan) -> pa.RecordBatch:
    index = events.schema.get_field_index("_traceparent")
    if index < 0 or span.traceparent is None:
        return events
    return events.set_column(index, "_traceparent", span.carry(events.column(index)))
