"""AggregateActor: owns a set of key groups and their keyed state (windows, upsert table, dedup or a process
function); emits what the operator emits to its sinks."""

from __future__ import annotations

import time
from typing import cast

import pyarrow as pa
import pyarrow.compute as pc

from actors.epoch_outputs import FlushingOutput, Output, prepare_outputs
from actors.metrics import PipelineMetrics
from actors.outputs import open_actor_outputs, output_lineage
from actors.recovery import fence_kafka_outputs, recover_kafka_outputs
from actors.reports import AggregateProgress
from actors.telemetry import Telemetry
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.query import Consistency
from pipelines.config.secrets import secrets_here
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.io.sinks import ConsoleSink
from pipelines.stages.chain import NextStage, StageLink
from pipelines.stages.keyed_runner import KeyedStageRunner
from pipelines.stages.plan import compile_pipeline
from pipelines.state.checkpoint_store import AggregateSnapshot, WriteAhead, open_checkpoint_store
from pipelines.state.keygroups import KeyGroupRouter, key_group_of
from pipelines.state.queryable import NotOwner, QueryableState, Viewable, ViewAnswer, WantedPosition
from pipelines.testing import FaultPlan, crash_if_planned

__all__ = ["AggregateActor"]

_NO_CONTEXTS = pa.nulls(0, pa.string())
_KEY_GROUP = "_key_group"


class AggregateActor:
    """Keyed state of the key groups it owns, held by the pipeline's keyed stage
    (:class:`~pipelines.stages.keyed_runner.KeyedStageRunner`, whose contract says what is emitted when).

    Contract: calls are processed one at a time, in the order each sender sent them. Rows the operator drops on
    purpose (an upsert's stale versions, dedup's duplicates) are counted in ``dropped_intended`` and written
    nowhere.

    Checkpoints: the Supervisor calls :meth:`checkpoint` once every sender is paused at the barrier and
    everything it sent was processed (aligned), so the snapshot holds exactly the effect of the epoch's input;
    outputs are prepared there and committed by :meth:`complete`. State is loaded by :meth:`restore`, never by
    the constructor (a constructor that raises while loading state would be retried blindly by Ray).
    """

    def __init__(
        self,
        config: PipelineConfig,
        actor_id: str,
        key_groups: list[int],
        senders: int,
        slot: str | None = None,
        faults: FaultPlan = (),
        clock: Clock = SYSTEM_CLOCK,
        stage: int = 0,
        next_stage: NextStage | None = None,
    ) -> None:
        """``slot``: the actor's stable place in the topology (``aggregate-<index>``, ``stage<k>-aggregate-<index>``
        in a later keyed stage), naming its transactions; ``faults``: crashes planned by a test
        (:mod:`pipelines.testing`); ``stage``: which of the pipeline's keyed stages this actor runs, and
        ``next_stage`` where its results go when another stage follows (else to the pipeline's sinks)."""
        config = secrets_here(config)  # runtime.secrets: environment reads them here, not from Ray
        views = config.keyed_stages
        if not 0 <= stage < len(views):
            raise ValueError(f"AggregateActor runs keyed stage {stage}, and pipeline {config.name!r} has {len(views)}")
        if (next_stage is None) != (config.stage_graph.next_stage[stage] is None):
            raise ValueError(f"keyed stage {stage} of {len(views)}: a next stage is needed exactly when one follows")
        view = views[stage]
        key = view.keyed_stage
        assert key is not None  # every view is of a keyed stage
        self._config = config
        self._actor_id = actor_id
        self._slot = slot or actor_id
        self._faults = faults
        self._prepared_outputs = False  # the last checkpoint prepared outputs to commit (for injected faults)
        self._completed_epoch = 0  # the last epoch completed here (for injected faults)
        self.key_groups = key_groups
        self._stage_index = stage
        self._groups = KeyGroupRouter(key.key, config.runtime.max_key_groups, [0] * config.runtime.max_key_groups)
        self._store = open_checkpoint_store(config.checkpoint, config.name)
        self._pipeline = config.name
        self._compiled = compile_pipeline(config)
        self._carry_trace = self._compiled.stages[stage].carries_trace
        self._telemetry = Telemetry(config, actor_id)
        self._metrics = PipelineMetrics(config.name)
        lineage = output_lineage(config, self._store)
        self._link = None if next_stage is None else StageLink.after(self._compiled, stage, next_stage)
        outputs = open_actor_outputs(config, actor_id, self._slot, self._telemetry, lineage,
                                     results=self._link is None, dead_letter_suffix="-late")  # fmt: skip
        self._sinks: list[Output] = outputs.results
        self._late_output = outputs.dead_letter
        self._stage = KeyedStageRunner(
            view,
            senders,
            sinks=self._sinks,
            late_output=self._late_output,
            carry_trace=self._carry_trace,
            clock=clock,
            next_stage=self._link,
            join_columns=self._compiled.stages[stage].join_columns,
        )
        self._busy_s = 0.0
        self._regrouping = False
        query = config.query_views.get(stage)
        operator = self._stage.operator
        self._queryable = None if query is None else QueryableState(query, cast(Viewable, operator))

    def process(
        self, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None = None
    ) -> int:
        """Fold a batch (or only a watermark, when ``batch`` is None) into state; return rows processed.

        ``trace_context`` is the sender's batch span: this batch's span is its child, in the same trace.
        """
        started = time.perf_counter()
        emitted = self._stage.windows_emitted
        waited = self._waited_on_next_stage()
        try:
            return self._process(sender, batch, watermark_ms, trace_context)
        finally:
            # busy is this stage's own work: time waiting on the next stage (backpressure) is left out
            seconds = time.perf_counter() - started - (self._waited_on_next_stage() - waited)
            self._busy_s += seconds
            self._metrics.aggregate(seconds)
            self._count_results(self._stage.windows_emitted - emitted)

    def _process(
        self, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> int:
        if batch is None or batch.num_rows == 0:
            self._stage.advance(sender, watermark_ms)
            return 0
        with self._telemetry.batch_span(
            f"aggregate {self._pipeline}", batch.column("_traceparent") if self._carry_trace else _NO_CONTEXTS,
            {"eventray.pipeline": self._pipeline, "eventray.stage": "aggregate",
             "messaging.batch.message_count": batch.num_rows},
            parent=trace_context,
        ) as batch_trace:  # fmt: skip
            if self._carry_trace:
                traces = batch.schema.get_field_index("_traceparent")
                batch = batch.set_column(traces, "_traceparent", batch_trace.carry(batch.column(traces)))
            self._stage.add(sender, batch, watermark_ms)
            if self._queryable is not None:
                groups = self._groups.key_groups(batch) if self._queryable.needs_key_groups else None
                self._queryable.applied(batch, groups)
        rows: int = batch.num_rows
        return rows

    def finish(self, sender: int) -> AggregateProgress:
        """``sender`` has no more input. When it was the last one, emit everything (made durable and committed
        by the final checkpoint)."""
        emitted = self._stage.windows_emitted
        self._stage.finish(sender)
        self._count_results(self._stage.windows_emitted - emitted)
        return self.progress()

    def _waited_on_next_stage(self) -> float:
        return 0.0 if self._link is None else self._link.waited_s

    def _count_results(self, rows: int) -> None:
        """The results metric counts what reaches the sinks: a stage that feeds another writes none."""
        if self._link is None:
            self._metrics.windows(rows)

    def restore(self, snapshots: list[AggregateSnapshot]) -> int:
        """Load the state of the key groups this actor owns from ``snapshots`` (a checkpoint's aggregates,
        whichever actors wrote them); return the state rows loaded."""
        if self._store is None:
            return 0
        snapshots = [snapshot for snapshot in snapshots if snapshot.stage == self._stage_index]
        tables = [self._store.read_table(snapshot.state) for snapshot in snapshots if snapshot.state is not None]
        tables = [table for table in tables if table.num_rows]
        watermark = max((snapshot.watermark_ms for snapshot in snapshots), default=NO_WATERMARK)
        self._restore_positions(snapshots, self.key_groups)
        if not tables:
            self._stage.operator.restore(self._stage.operator.snapshot(), watermark)
            self._reset_queryable(snapshots)
            return 0
        state = pa.concat_tables(tables)
        owned = pc.is_in(state.column(_KEY_GROUP), pa.array(self.key_groups, pa.int32()))
        state = state.filter(owned).drop_columns([_KEY_GROUP]).replace_schema_metadata(tables[0].schema.metadata)
        self._stage.operator.restore(state, watermark)
        self._reset_queryable(snapshots)
        rows: int = state.num_rows
        return rows

    def _restore_positions(self, snapshots: list[AggregateSnapshot], key_groups: list[int]) -> None:
        """Own ``key_groups``' read-your-writes positions: keep those held of them, take the others' from the
        ``snapshots`` of their previous owners."""
        if self._queryable is None or self._queryable.positions is None or self._store is None:
            return
        taken = [self._store.read_table(s.positions) for s in snapshots if s.positions is not None]
        self._queryable.positions.keep(key_groups, taken)

    def _reset_queryable(self, snapshots: list[AggregateSnapshot]) -> None:
        """The state is now that of the checkpoint ``snapshots`` are of: it is what ``committed`` reads."""
        if self._queryable is not None:
            epochs = {snapshot.epoch for snapshot in snapshots}
            self._queryable.reset(epochs.pop() if len(epochs) == 1 and 0 not in epochs else None)

    def regroup(
        self,
        key_groups: list[int],
        senders: int,
        snapshots: list[AggregateSnapshot],
        next_stage: NextStage | None = None,
    ) -> int:
        """A rescale at a barrier (every sender held, everything sent processed): own ``key_groups`` from now
        on. Groups it keeps stay in memory; groups it gives up are dropped; groups it takes over are read from
        the checkpoint just taken (``snapshots``), from the files of their previous owners only; results go to
        ``next_stage``'s actors from now on, when a stage follows. Return the state rows taken over."""
        if (next_stage is None) != (self._link is None):
            raise ValueError(f"keyed stage {self._stage_index}: a next stage is needed exactly when one follows")
        self._regrouping = True  # queries answer NotOwner until the groups and their state are this actor's
        try:
            return self._regroup(key_groups, senders, snapshots, next_stage)
        finally:
            self._regrouping = False

    def _regroup(
        self, key_groups: list[int], senders: int, snapshots: list[AggregateSnapshot], next_stage: NextStage | None
    ) -> int:
        crash_if_planned(self._faults, "regroup", self._slot, self._completed_epoch, prepared_outputs=True)
        snapshots = [snapshot for snapshot in snapshots if snapshot.stage == self._stage_index]
        adopted = sorted(set(key_groups) - set(self.key_groups))
        current = self._with_key_groups(self._stage.operator.snapshot())
        kept = current.filter(pc.is_in(current.column(_KEY_GROUP), pa.array(key_groups, pa.int32())))
        tables = [kept] if kept.num_rows else []
        watermark = self._stage.operator.watermark_ms
        taken = 0
        previous_owners = [s for s in snapshots if s.state is not None and set(s.key_groups) & set(adopted)]
        if previous_owners and self._store is not None:
            for snapshot in previous_owners:
                assert snapshot.state is not None
                table = self._store.read_table(snapshot.state)
                table = table.filter(pc.is_in(table.column(_KEY_GROUP), pa.array(adopted, pa.int32())))
                taken += table.num_rows
                tables.append(table)
                watermark = max(watermark, snapshot.watermark_ms)
        metadata = current.schema.metadata
        state = pa.concat_tables(tables, promote_options="permissive") if tables else kept
        self._stage.operator.restore(state.drop_columns([_KEY_GROUP]).replace_schema_metadata(metadata), watermark)
        moved_from = [s for s in snapshots if set(s.key_groups) & set(adopted)]
        self._restore_positions(moved_from, list(key_groups))
        self._reset_queryable(snapshots)
        self.key_groups = list(key_groups)
        if next_stage is not None:
            self._link = StageLink.after(self._compiled, self._stage_index, next_stage)
        self._stage.regroup(senders, self._link)
        return taken

    def fence_outputs(self) -> None:
        """Exactly-once: fence the producers of the actor this one replaces (see :mod:`actors.recovery`)."""
        fence_kafka_outputs([*self._sinks, self._late_output])

    def recover_outputs(self, epoch: int, write_ahead: list[WriteAhead], committed: dict[str, int]) -> int:
        """Exactly-once: redo this slot's Kafka transactions of ``epoch`` that never committed (``committed``: the
        newest committed epoch per slot); rows re-emitted."""
        if self._store is None:
            return 0
        outputs = [*self._sinks, self._late_output]
        return recover_kafka_outputs(outputs, epoch, write_ahead, committed, self._store)

    def checkpoint(self, epoch: int) -> AggregateSnapshot:
        """Snapshot the owned key groups' state (rows tagged with their key group) and prepare the outputs; with a
        next stage, first wait until it processed every row sent to it (so its snapshot, taken after this one,
        holds their effect)."""
        if self._link is not None:
            self._link.drain()
        state_file = positions_file = None
        if self._store is not None:
            state = self._stage.operator.snapshot()
            state_file = self._store.write_table(epoch, f"state-{self._slot}", self._with_key_groups(state))
            if self._queryable is not None and self._queryable.positions is not None:
                positions_file = self._store.write_table(epoch, f"positions-{self._slot}",
                                                         self._queryable.positions.table())  # fmt: skip
        if self._queryable is not None:
            self._queryable.prepare(epoch)
        pending, ahead = prepare_outputs([*self._sinks, self._late_output], epoch, self._store, self._slot)
        self._prepared_outputs = bool(pending or ahead)
        return AggregateSnapshot(
            actor_id=self._actor_id,
            key_groups=list(self.key_groups),
            watermark_ms=self._stage.operator.watermark_ms,
            state=state_file,
            pending_files=pending,
            write_ahead=ahead,
            stage=self._stage_index,
            positions=positions_file,
            epoch=epoch,
        )

    def _with_key_groups(self, state: pa.Table) -> pa.Table:
        """``state`` with each row's key group, so a restore can take the rows of the groups it owns."""
        if state.num_rows == 0:
            return state.append_column(_KEY_GROUP, pa.array([], pa.int32()))
        keys = state.select([self._stage.operator.key]).combine_chunks()
        groups = self._groups.key_groups(keys.to_batches()[0])
        return state.append_column(_KEY_GROUP, pa.array(groups, pa.int32()))

    def begin_epoch(self, epoch: int) -> None:
        """Outputs written from now on belong to ``epoch`` (set once at start; :meth:`complete` moves it on)."""
        for output in [*self._sinks, self._late_output]:
            output.begin_epoch(epoch)

    def complete(self, epoch: int) -> AggregateProgress:
        """``epoch`` is complete: commit the outputs prepared at its barrier; what follows is ``epoch + 1``."""
        crash_if_planned(self._faults, "before_commit", self._slot, epoch, self._prepared_outputs)
        for output in [*self._sinks, self._late_output]:
            output.commit()
            output.begin_epoch(epoch + 1)
        self._completed_epoch = epoch
        if self._queryable is not None:
            self._queryable.commit(epoch)
        return self.progress()

    @property
    def done(self) -> bool:
        return self._stage.done

    def close(self) -> AggregateProgress:
        for sink in self._sinks:
            sink.close()
        self._late_output.close()
        self._telemetry.close()
        return self.progress()

    def query(
        self,
        keys: list[str],
        consistency: Consistency | None = None,
        min_position: str | None = None,
        wait_s: float = 0.0,
    ) -> ViewAnswer:
        """The values of ``keys`` in this stage's view (called in the query concurrency group, beside batches;
        see :mod:`pipelines.state.queryable`). ``consistency``: the view's first mode when None; ``min_position``:
        ``<aggregate>@<version>`` to wait for, up to ``wait_s`` (in the position-wait concurrency group, so a
        wait never holds the queries that answer at once). :class:`NotOwner` when a key's group is not this
        actor's, or a rescale moved groups while the answer was read: no answer from state being replaced."""
        if self._queryable is None:
            raise ValueError(f"keyed stage {self._stage_index} of pipeline {self._pipeline!r} has no query: view")
        owned = self.key_groups
        self._check_owned(keys, owned)
        wanted = None if min_position is None else WantedPosition.parse(min_position)
        mode = consistency or self._queryable.config.consistency[0]
        answer = self._queryable.answer(keys, mode, wanted, wait_s)
        if self._regrouping or self.key_groups is not owned:
            raise NotOwner(f"{self._actor_id} is regrouping its key groups")
        return answer

    def _check_owned(self, keys: list[str], owned: list[int]) -> None:
        if self._regrouping:
            raise NotOwner(f"{self._actor_id} is regrouping its key groups")
        groups = set(owned)
        max_key_groups = self._config.runtime.max_key_groups
        strays = [key for key in keys if key_group_of(key, max_key_groups) not in groups]
        if strays:
            raise NotOwner(f"{self._actor_id} does not own the key group of {strays[0]!r}")

    def alive(self) -> bool:
        """The watchdog's ping (cluster/control/watchdog.py), answered in a concurrency group of its own."""
        return True

    def progress(self) -> AggregateProgress:
        consoles = [o.sink for o in self._sinks if isinstance(o, FlushingOutput) and isinstance(o.sink, ConsoleSink)]
        preview = [row for console in consoles for row in console.preview()]
        return AggregateProgress(
            actor_id=self._actor_id,
            events_in=self._stage.events_in,
            windows_emitted=self._stage.windows_emitted if self._link is None else 0,  # results reach the sinks
            late_events=self._stage.late_events,
            dropped_intended=self._stage.dropped_intended,
            watermark_ms=NO_WATERMARK if (watermark := self._stage.watermark) is None else watermark,
            done=self.done,
            preview=preview,
            busy_s=self._busy_s,
            stage=self._stage_index,
        )
