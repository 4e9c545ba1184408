"""The Supervisor: builds a pipeline's topology, checkpoints it, recovers it, runs it to the end.

It is a plain class (Ray options are applied in :mod:`cluster.control.remote`) that talks to actors only through
:mod:`cluster.control.handles`. One run: restore the last unfinished checkpoint if there is one, spawn aggregate actors
(key groups assigned, state restored), spawn source actors (partitions assigned, at the checkpoint's offsets),
start every source's read loop; every epoch interval, run an aligned checkpoint (:mod:`cluster.control.epochs`); freeze
the sources at the duration deadline, stop them on request; at the end, a final epoch makes every output
durable and committed. When an actor dies, every actor is killed and the topology is restored from the last
complete checkpoint (ARCHITECTURE.md section 4: never rely on Ray task retries for correctness).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from actors.epoch_outputs import commit_pending_files, discard_staged_files
from actors.kafka.access import explain_denied
from actors.kafka.admin import ensure_topic
from actors.kafka.admin import partition_count as kafka_partition_count
from actors.kafka.commit_markers import CommitMarkerLog, commit_marker_topic
from actors.metrics import PipelineMetrics
from actors.outputs import writes_kafka_transactions
from actors.reports import AggregateProgress, SourceProgress
from cluster.control.actor_ids import topology_suffix
from cluster.control.autoscaler import Autoscaler, RescaleUnderWay
from cluster.control.drive import DriveSchedule, Step, Tick
from cluster.control.epochs import EpochRunner, RunIdentity
from cluster.control.freed_memory import release_freed_memory
from cluster.control.handles import (
    ActorFactory,
    AggregateHandle,
    NextOwners,
    RayActors,
    SourceHandle,
    actor_died,
    transient_kafka_error,
)
from cluster.control.layout import Layout
from cluster.control.phase_times import PhaseTimes
from cluster.control.recovery_policy import Failure, RecoveryPolicy, Verdict
from cluster.control.restore_plan import plan_source_starts
from cluster.control.run_report import RunProgress, RunSummary, merge_previews
from cluster.control.stage_plan import ActorPlacement, keyed_stage_plan
from cluster.control.watchdog import Watchdog
from cluster.cqrs.publish import ViewPublisher
from pipelines.config.kafka import KafkaDeadLetterConfig, KafkaSinkConfig, KafkaSourceConfig
from pipelines.config.pipeline import (
    ConsoleSinkConfig,
    DeadLetterConfig,
    GeneratorSourceConfig,
    JsonlSinkConfig,
    ParquetSinkConfig,
    PipelineConfig,
)
from pipelines.config.secrets import secrets_here
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError, FatalError
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock
from pipelines.io.sinks import clear_previous_output
from pipelines.io.sources import partition_count
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.topology import check_input_layout, input_layout, partition_ids, partition_limits
from pipelines.stages.wiring import StageWiring
from pipelines.state.checkpoint_store import (
    Checkpoint,
    RunCounts,
    SourceSnapshot,
    open_checkpoint_store,
)
from pipelines.testing import FaultPlan, faults_after

__all__ = ["PipelineFailed", "Supervisor"]

log = logging.getLogger(__name__)

_POLL_S = 0.1


class PipelineFailed(FatalError):
    """An actor of the pipeline failed; the message carries its error."""


def _actor_error(error: BaseException) -> BaseException:
    """The error an actor raised, without Ray's wrapping (its traceback, process id and address: the actor's
    log has them), so that a user reads what went wrong and the operator action. Unwrapped through every level:
    an error of a later keyed stage reaches the Supervisor through the stage before it."""
    for _ in range(16):  # a bound, in case a wrapper names itself
        cause = getattr(error, "cause", None)  # a RayTaskError's original exception
        if not isinstance(cause, Exception) or cause is error:
            break
        error = cause
    return error


class Supervisor:
    def __init__(
        self,
        config: PipelineConfig,
        run_id: str,
        actors: ActorFactory | None = None,
        faults: FaultPlan = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``faults``: crashes a test plans (:mod:`pipelines.testing`); each fires once per run. ``clock``: the one
        clock of the Supervisor, its epochs and its autoscaler."""
        compile_pipeline(config)  # fail here, before any actor exists, if the config cannot run
        self._config = config  # as the driver handed it, and as the actors get it (runtime.secrets)
        self._resolved = secrets_here(config)  # with the secrets this process uses (checkpoint key, Kafka password)
        self._run_id = run_id
        self._clock = clock
        self._faults = faults  # as planned; the topology running gets those not yet fired (_spawn)
        self._live_faults = faults
        self._actors: ActorFactory = actors if actors is not None else RayActors()
        self._store = open_checkpoint_store(self._resolved.checkpoint, config.name)
        self._run_started_s = self._clock.now_s()
        self._started_at_s = self._run_started_s
        configured_start = next(
            (i.source.start_time_ms for i in config.all_inputs if isinstance(i.source, GeneratorSourceConfig)), None
        )
        self._start_time_ms = int(self._started_at_s * 1000) if configured_start is None else configured_start
        self._sources: list[SourceHandle] = []
        self._aggregates: list[AggregateHandle] = []
        self._runs: list[asyncio.Future[SourceProgress]] = []
        self._metrics = PipelineMetrics(config.name)
        self._epochs = EpochRunner(config, self._store, self._metrics, clock)
        self._stop_requested = False
        self._last_progress: RunProgress | None = None
        self._finished_sources: list[SourceProgress] = []
        self._final_aggregates: list[AggregateProgress] = []
        self._layout = Layout.of(config)  # partitions, who reads them, who owns the key groups
        autoscale = config.runtime.autoscale
        first = config.all_inputs[0].source
        topic = first.topic if isinstance(first, KafkaSourceConfig) else first.type
        self._autoscaler = (
            None
            if autoscale is None
            else Autoscaler(autoscale, topic, config.runtime.max_key_groups, self._run_started_s, clock)
        )
        self._attempt = 0
        self._recovering: PhaseTimes | None = None  # the phases of a recovery under way, from noticing the failure
        self._rescaling: RescaleUnderWay | None = None  # from a rescale's decision to its end (or a recovery's)
        self._resumed_from: Checkpoint | None = None
        self._baseline = RunCounts()  # the counts of the earlier run this one resumed from
        self._earlier: RunCounts | None = None  # counted up to the checkpoint the current topology started from
        self._reemitted_rows = 0  # exactly-once outputs of an uncommitted epoch, written again at recovery
        self._output_topics_created = False
        self._markers: CommitMarkerLog | None = None  # exactly-once Kafka outputs' commit markers, read so far
        # the query router of the stages whose state is served (not with in-process fakes of actors)
        self._views = ViewPublisher(config) if config.query_views and isinstance(self._actors, RayActors) else None
        self.recoveries: list[float] = []  # seconds from noticing a failure to the restored topology running
        # (backoff included)
        checkpoint = config.checkpoint
        self._recovery = RecoveryPolicy(
            checkpoint.max_recoveries if checkpoint else 0, checkpoint.recovery_window_s if checkpoint else None
        )

    async def run(self) -> RunSummary:
        """Run the pipeline to its end (bounded input, duration, or :meth:`stop`); return the summary.

        Resumes from the last checkpoint of an unfinished earlier run of the same pipeline, if there is one.
        """
        if self._store is not None:
            # before any actor starts: exactly-once outputs name their epochs with it
            self._markers = CommitMarkerLog(self._config.name, self._store.ensure_lineage())
        if self._views is not None:
            await self._views.start()
        checkpoint = self._resumed_from = await asyncio.to_thread(self._resume_point)
        if checkpoint is not None:
            self._baseline = checkpoint.counts
            self._recovery.resumed = True
        if checkpoint is None and not any(isinstance(i.source, KafkaSourceConfig) for i in self._config.all_inputs):
            # A replayable input is read again from its start: its output replaces the last run's. A Kafka
            # source resumes after its committed offsets, so the earlier output is kept (files are per run).
            clear_previous_output(self._config)
        while True:
            try:
                async with self._watchdog():  # from the start: a restore can hang on a stopped actor too
                    await self._start(checkpoint)
                    await self._drive()
                    await self._finish()
                return self._summary()
            except Exception as error:  # noqa: BLE001, PERF203 - any failure ends this topology; actors are killed
                recovering = PhaseTimes(self._clock.monotonic)
                self._abandon()
                verdict = self._verdict(error)
                checkpoint = await asyncio.to_thread(self._recovery_point)  # reads storage, may retry
                recovering.done("checkpoint read")
                restored = checkpoint.epoch if checkpoint else "none (from the start)"
                wait_s = verdict.wait_s
                log.warning("pipeline %s: %s; restoring epoch %s in %.1f s", self._config.name, _actor_error(error),
                            restored, wait_s)  # fmt: skip
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                    recovering.done("backoff")
                self._recovering = recovering

    @contextlib.asynccontextmanager
    async def _watchdog(self) -> AsyncIterator[None]:
        """Watch the running topology's actors (:mod:`cluster.control.watchdog`) while the body runs."""
        watchdog: Watchdog[SourceHandle | AggregateHandle] = Watchdog(
            self._config.unresponsive_after_s, self._actors.ping, self._actors.kill, clock=self._clock.monotonic
        )
        watching = asyncio.ensure_future(watchdog.watch(lambda: [*self._sources, *self._aggregates]))
        try:
            yield
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            watchdog.close()

    def _verdict(self, error: Exception) -> Verdict:
        """The recovery policy's verdict on ``error``; raise :class:`PipelineFailed` (or the access error a
        missing ACL explains) when the run ends."""
        failure = Failure(
            recoverable=self._config.checkpoint is not None and self._actors.recoverable(error),
            transient_kafka=transient_kafka_error(error),
            actor_died=actor_died(error),
            epochs_completed=self._epochs.completed,
        )
        verdict = self._recovery.after(failure, self._clock.monotonic())
        denied = explain_denied(error, self._resolved)
        if denied is not None:  # a missing ACL: no retry grants it
            raise denied from None
        if verdict.exhausted:
            raise PipelineFailed(
                f"pipeline {self._config.name!r} failed: {_actor_error(error)} (after {self._recovery.counted} "
                f"recoveries, checkpoint.max_recoveries{_within(self._recovery.window_s)}; the last checkpoint is "
                "kept: run again to resume from it)"
            ) from None
        if not verdict.restore:
            raise PipelineFailed(f"pipeline {self._config.name!r} failed: {_actor_error(error)}") from None
        return verdict

    def _recovery_point(self) -> Checkpoint | None:
        """The checkpoint to restore (the policy said to restore, so checkpoints are on)."""
        assert self._store is not None
        return self._store.latest(allow_fallback=self._config.delivery != "exactly_once")

    def _resume_point(self) -> Checkpoint | None:
        if self._store is None:
            return None
        latest = self._store.latest(allow_fallback=self._config.delivery != "exactly_once")
        if latest is None or latest.finished:
            return None
        check_input_layout(self._config, latest.inputs, f"checkpoint {latest.epoch} of {self._config.name!r}")
        log.warning("pipeline %s resumes from checkpoint %d of run %s", self._config.name, latest.epoch, latest.run_id)
        return latest

    async def stop(self) -> None:
        """Stop reading now; in-flight batches are finished, windows emitted and sinks flushed."""
        self._stop_requested = True

    async def progress(self) -> RunProgress:
        """The run's counts so far. An actor that died since the last call (its recovery is under way) does not
        fail the call, which would read as the Supervisor's own death to the driver that polls it: the last
        progress is returned again until the restored topology answers (also while none runs: a recovery
        waiting out its backoff)."""
        if not self._sources and self._last_progress is not None:
            return self._last_progress
        try:
            sources = await asyncio.gather(*(source.progress() for source in self._sources))
            aggregates = await asyncio.gather(*(aggregate.progress() for aggregate in self._aggregates))
        except Exception as error:
            if not self._actors.recoverable(error):
                raise
            if self._last_progress is not None:
                return self._last_progress
            sources, aggregates = [], []
        elapsed_s = self._clock.now_s() - self._run_started_s
        progress = RunProgress.of(list(sources), list(aggregates), elapsed_s).plus_counts(self._earlier)
        if self._autoscaler is not None and self._autoscaler.timeline:
            progress = replace(progress, autoscale=self._autoscaler.timeline[-1])
        self._last_progress = progress
        return progress

    async def _autoscale(self) -> None:
        """One policy tick; rescale at a checkpoint boundary when it wants other counts."""
        assert self._autoscaler is not None
        sources = list(await asyncio.gather(*(source.progress() for source in self._sources)))
        aggregates = list(await asyncio.gather(*(aggregate.progress() for aggregate in self._aggregates)))
        desired, observed = self._autoscaler.tick(sources, aggregates, self._actors.nodes())
        busy = {role: observed.total_busy_ratio(role) for role in ("source", "aggregate")}
        self._metrics.load(observed.input_rate_per_s, busy)
        layout = self._layout
        aggregate_target = desired.aggregate_actors if self._aggregates else layout.aggregate_count
        if (desired.source_actors, aggregate_target) == (len(self._sources), layout.aggregate_count):
            self._metrics.actors("source", len(self._sources), desired.source_actors)
            return
        await self._rescale(desired.source_actors, aggregate_target, desired.reason)

    async def _rescale(self, source_count: int, aggregate_count: int, reason: str) -> None:
        """Rescale in place at a checkpoint boundary. Every source is held at the barrier of a checkpoint
        (nothing is read after it); sticky assignment moves only the partitions and key groups that must move;
        actors that stay keep running and keep their state in memory, giving up what moved away and taking
        over what moved to them from the checkpoint just taken; actors beyond the new counts are removed and
        new ones start from the checkpoint. No event is lost or processed twice (outputs up to the barrier are
        committed; moved partitions resume exactly at the checkpoint's offsets)."""
        if len(set(self._config.stage_actors)) > 1:  # the config refuses autoscaling with stages sized apart
            raise ConfigError("a rescale sizes every keyed stage alike, and these stages are sized apart")
        log.warning("pipeline %s rescales: %s", self._config.name, reason)
        before = (len(self._sources), len(self._first_stage))  # aggregates: per keyed stage
        self._rescaling = RescaleUnderWay((source_count, aggregate_count), before, self._clock.monotonic())
        checkpoint = await self._epochs.run_epoch(self._sources, self._aggregates, self._identity(), hold=True)
        assert checkpoint is not None and self._autoscaler is not None  # autoscaling requires checkpoints
        kept_sources = self._sources[:source_count]
        kept_aggregates = [h for h in self._aggregates if self._place_in_stage(h) < aggregate_count]
        # counters of the actors that stay continue; the rest of the run's count is in the checkpoint
        staying = RunProgress.of(
            list(await asyncio.gather(*(source.progress() for source in kept_sources))),
            list(await asyncio.gather(*(aggregate.progress() for aggregate in kept_aggregates))),
            0.0,
        )
        self._earlier = checkpoint.counts.minus(self._baseline).minus(staying.counts())
        suffix = topology_suffix(self._run_id, self._attempt, rescale=len(self._autoscaler.rescales) + 1)
        self._rescaling.moves = self._layout.rescale(source_count, aggregate_count)
        await self._regroup_aggregates(checkpoint, suffix)
        await self._reassign_sources(checkpoint, suffix)
        self._epochs.restarted(checkpoint)
        self._metrics.actors("source", len(self._sources), self._layout.source_count)
        self._metrics.actors("aggregate", len(self._aggregates), sum(self._stage_sizes()))
        self._rescaled(through_recovery=False)
        await self._publish_views()
        await asyncio.to_thread(release_freed_memory)

    def _rescaled(self, through_recovery: bool) -> None:
        """Record the rescale under way as done: the topology runs at its counts."""
        rescaling, self._rescaling = self._rescaling, None
        assert rescaling is not None and self._autoscaler is not None
        at_s = self._clock.now_s() - self._run_started_s
        after = (len(self._sources), len(self._first_stage))
        self._autoscaler.record(rescaling.done(at_s, after, self._clock.monotonic(), through_recovery))
        if through_recovery:
            log.warning("pipeline %s: the rescale a failure interrupted is done: %d sources, %d aggregates per "
                        "keyed stage restarted from the checkpoint", self._config.name, *after)  # fmt: skip

    async def _regroup_aggregates(self, checkpoint: Checkpoint, suffix: str) -> None:
        """The layout's key groups to its aggregates in each keyed stage (the same in each), at the barrier of
        ``checkpoint``: see :meth:`_place_keyed_stages`."""
        if self._aggregates:
            self._aggregates = await self._place_keyed_stages(suffix, self._aggregates, checkpoint)

    def _place_in_stage(self, handle: AggregateHandle) -> int:
        """``handle``'s index among the actors of its keyed stage."""
        return [h for h in self._aggregates if h.stage == handle.stage].index(handle)

    async def _reassign_sources(self, checkpoint: Checkpoint, suffix: str) -> None:
        """The layout's partitions to its sources; sources that stay resume, new ones start."""
        config = self._config
        owned, owners = self._layout.owned, self._source_routes()
        for handle, run in zip(self._sources[len(owned) :], self._runs[len(owned) :], strict=True):
            run.cancel()
            self._actors.kill(handle)
        kept, runs = self._sources[: len(owned)], self._runs[: len(owned)]
        actor_ids = [handle.actor_id for handle in kept] + [
            f"source-{i}-{suffix}" for i in range(len(kept), len(owned))
        ]
        starts = plan_source_starts(
            owned, partition_limits(self._layout.partitions, config.runtime.max_events), checkpoint, actor_ids
        )
        downstream = self._actors.downstream(config, self._sources_send_to) if owners is not None else None
        moves = [
            handle.reassign(
                owned[i], starts[i].restored or _no_snapshot(handle.actor_id), starts[i].limits, downstream, owners
            )
            for i, handle in enumerate(kept)
        ]
        await asyncio.gather(*moves)
        clock = (self._started_at_s, self._start_time_ms)
        aggregates = self._sources_send_to
        added = [
            self._actors.source(
                config,
                actor_ids[i],
                i,
                owned[i],
                starts[i].limits,
                clock,
                aggregates,
                owners,
                starts[i].restored,
                self._live_faults,
            )
            for i in range(len(kept), len(owned))
        ]
        with self._killed_if_failing(added):
            await asyncio.gather(*(handle.begin_epoch(self._epochs.next_epoch) for handle in added))
        self._sources = kept + added
        self._runs = runs + [asyncio.ensure_future(self._await(handle.start())) for handle in added]
        await asyncio.gather(*(handle.resume() for handle in kept))

    async def shutdown(self) -> None:
        """Kill the actors of this run (after :meth:`run` returned, or to abandon it)."""
        self._kill_all()
        if self._views is not None:
            await self._views.close()

    async def _start(self, checkpoint: Checkpoint | None) -> None:
        """Spawn (and restore) the topology, redo uncommitted exactly-once outputs, start the read loops."""
        self._attempt += 1
        phases = self._recovering or PhaseTimes(self._clock.monotonic)
        if checkpoint is not None:
            self._started_at_s, self._start_time_ms = checkpoint.started_at_s, checkpoint.start_time_ms
            # what the run counted up to this checkpoint (a resumed earlier run's counts are not this run's)
            self._earlier = checkpoint.counts.minus(self._baseline)
            commit_pending_files(checkpoint.pending_files)
        if self._store is not None:
            discard_staged_files(_file_output_directories(self._config))
        phases.done("file outputs settled")
        rescaling = self._rescaling
        if rescaling is not None and rescaling.moves is None:  # it failed before its layout was dealt
            rescaling.moves = self._layout.rescale(*rescaling.counts)
        await self._spawn(checkpoint)
        phases.done("partitions and topics")
        if checkpoint is not None:
            restored: list[SourceHandle | AggregateHandle] = [*self._sources, *self._aggregates]
            await asyncio.gather(
                *(aggregate.restore(checkpoint.aggregates) for aggregate in self._aggregates),
                *(handle.fence_outputs() for handle in restored),  # every slot, before the markers are read
            )
            phases.done("actors started, state restored, producers fenced")
            committed = await self._committed_markers()
            phases.done("commit markers read")
            redone = await asyncio.gather(
                *(h.recover_outputs(checkpoint.epoch, checkpoint.write_ahead, committed) for h in restored)
            )
            self._reemitted_rows += sum(redone)
            phases.done("uncommitted epoch redone")
        self._epochs.restarted(checkpoint)
        handles: list[SourceHandle | AggregateHandle] = [*self._sources, *self._aggregates]
        await asyncio.gather(*(handle.begin_epoch(self._epochs.next_epoch) for handle in handles))
        phases.done("epoch begun")
        self._runs = [asyncio.ensure_future(self._await(source.start())) for source in self._sources]
        await self._publish_views()
        if self._recovering is not None:
            self.recoveries.append(phases.total_s)
            log.warning("pipeline %s: recovered in %.1f s (%s)", self._config.name, phases.total_s, phases)
            self._recovering = None
            await asyncio.to_thread(release_freed_memory)  # what the replaced topology's handles and clients held
        if rescaling is not None:
            self._rescaled(through_recovery=True)
        self._metrics.actors("source", len(self._sources), self._layout.source_count)
        self._metrics.actors("aggregate", len(self._aggregates), sum(self._stage_sizes()))

    async def _finish(self) -> None:
        """Every source is done: a final epoch makes every output durable and committed, then actors close."""
        self._finished_sources = list(await asyncio.gather(*self._runs))
        await self._epochs.run_epoch(self._sources, self._aggregates, self._identity(), finished=True)
        self._final_aggregates = list(await asyncio.gather(*(a.close() for a in self._aggregates)))
        self._finished_sources = list(await asyncio.gather(*(s.close() for s in self._sources)))

    async def _publish_views(self) -> None:
        """Tell the query router who owns each served stage's key groups now."""
        if self._views is not None:
            await self._views.publish(self._aggregates, self._wiring().groups, self._config.runtime.max_key_groups)

    def _abandon(self) -> None:
        if self._views is not None:
            self._views.suspend()
        for run in self._runs:
            run.cancel()
        self._kill_all()
        self._sources, self._aggregates, self._runs = [], [], []

    def _identity(self) -> RunIdentity:
        partitions = len(self._layout.partitions)
        layout = tuple(input_layout(self._config))
        return RunIdentity(self._run_id, self._started_at_s, self._start_time_ms, partitions, self._earlier, layout)

    async def _drive(self) -> None:
        """Carry out the schedule's steps tick by tick (:mod:`cluster.control.drive`) until every source is done;
        a source that failed raises its error here."""
        schedule = DriveSchedule.of(self._config, self._clock.monotonic())
        runs = self._runs
        while not all(run.done() for run in runs):
            failed = next((run for run in runs if run.done() and run.exception() is not None), None)
            if failed is not None:
                failed.result()  # raises the source's error
            tick = Tick(
                monotonic_s=self._clock.monotonic(),
                elapsed_s=self._clock.now_s() - self._run_started_s,
                epoch_due=self._epochs.due(),
                autoscale_due=self._autoscaler is not None and self._autoscaler.due(),
                stop_requested=self._stop_requested,
            )
            for step in schedule.steps(tick):
                await self._take(step, runs)
            runs = self._runs  # a rescale replaced the topology
            await asyncio.wait(runs, timeout=_POLL_S, return_when=asyncio.FIRST_COMPLETED)

    async def _take(self, step: Step, runs: Sequence[asyncio.Future[SourceProgress]]) -> None:
        """One step of the schedule. Freeze and stop errors are ignored: a source that failed reports its own
        error through its run."""
        if step is Step.DISCOVER:
            await self._discover_partitions(runs)
        elif step is Step.CHECKPOINT:
            await self._epochs.run_epoch(self._sources, self._aggregates, self._identity())
        elif step is Step.AUTOSCALE:
            await self._autoscale()
        elif step is Step.FREEZE:
            await asyncio.gather(*(source.freeze() for source in self._sources), return_exceptions=True)
        elif step is Step.STOP:
            await asyncio.gather(*(source.stop() for source in self._sources), return_exceptions=True)

    @staticmethod
    async def _await(reference: Any) -> SourceProgress:
        result: SourceProgress = await reference
        return result

    async def _partition_ids(self, kafka_only: bool = False) -> list[int]:
        """The pipeline partitions of every input as the inputs are now (Kafka: asked of the brokers); with
        ``kafka_only``, of the Kafka inputs alone (discovery: files are globbed once, at the start, since a new
        file sorting before others would renumber them)."""
        counts = []
        for spec in self._config.all_inputs:
            try:
                if isinstance(spec.source, KafkaSourceConfig):
                    assert self._resolved.kafka is not None
                    counts.append(await kafka_partition_count(self._resolved.kafka, spec.source.topic))
                else:
                    counts.append(0 if kafka_only else partition_count(spec.source))
            except ConfigError as error:  # noqa: PERF203 - once per input; "source.topic: ..." names which
                if not spec.path:
                    raise
                raise ConfigError(f"{spec.path}{error}") from None
        return partition_ids(counts)

    async def _discover_partitions(self, runs: Sequence[asyncio.Future[SourceProgress]]) -> None:
        """Assign partitions added to the topic since the start, each to the running source owning the fewest.

        A failed look-up is retried at the next interval: a broker restart must not end a healthy run.
        """
        try:
            current = await self._partition_ids(kafka_only=True)
        except Exception as error:  # noqa: BLE001 - any broker error here is transient for a running pipeline
            log.warning("partition discovery for %s failed, retrying later: %s", self._config.name, error)
            return
        running = [index for index, run in enumerate(runs) if not run.done()]
        if not running:
            return
        for partition, owner in self._layout.add_partitions(current, running):
            await self._sources[owner].add_partitions([partition])

    async def _committed_markers(self) -> dict[str, int]:
        """The newest committed epoch per exactly-once Kafka slot (read since the last recovery of this run)."""
        kafka = self._resolved.kafka
        if self._markers is None or kafka is None or not writes_kafka_transactions(self._config):
            return {}
        return await self._markers.committed(kafka)

    def _output_topics(self) -> set[str]:
        outputs = [*self._config.sinks, self._config.dead_letter]
        topics = {output.topic for output in outputs if isinstance(output, KafkaDeadLetterConfig)}
        return topics | {t for output in outputs if isinstance(output, KafkaSinkConfig) for t in output.all_topics}

    async def _create_output_topics(self, partitions: int) -> None:
        """Once per run (a recovery finds them there: each check costs admin connections and metadata waits)."""
        kafka = self._resolved.kafka
        if kafka is None or not kafka.create_topics or self._output_topics_created:
            return
        compacted = {t for sink in self._config.sinks if isinstance(sink, KafkaSinkConfig) for t in sink.compacted}
        retained = {view.keyed.events_topic for view in self._config.keyed_stages
                    if isinstance(view.keyed, EventSourcedConfig)}  # fmt: skip
        for topic in sorted(self._output_topics()):
            await ensure_topic(kafka, topic, partitions, compacted=topic in compacted, retained=topic in retained)
        if writes_kafka_transactions(self._config):
            await ensure_topic(kafka, commit_marker_topic(self._config.name), 1, compacted=True)
        self._output_topics_created = True

    async def _spawn(self, checkpoint: Checkpoint | None) -> None:
        config = self._config
        self._live_faults = faults_after(self._faults, checkpoint.epoch if checkpoint else None)
        runtime = config.runtime
        partitions = await self._restored_partitions(checkpoint)
        await self._create_output_topics(len(partitions))
        suffix = topology_suffix(self._run_id, self._attempt)
        layout = self._layout
        layout.place(partitions)  # sticky: after a rescale or a restore, each keeps its owner's index if it can
        if layout.keyed:
            self._aggregates = await self._place_keyed_stages(suffix, [], None)
        owners = self._source_routes()
        actor_ids = [f"source-{index}-{suffix}" for index in range(len(layout.owned))]
        starts = plan_source_starts(
            layout.owned, partition_limits(partitions, runtime.max_events), checkpoint, actor_ids
        )
        clock = (self._started_at_s, self._start_time_ms)
        for index, (actor_id, owned, start) in enumerate(zip(actor_ids, layout.owned, starts, strict=True)):
            handle = self._actors.source(
                config, actor_id, index, owned, start.limits, clock, self._sources_send_to, owners, start.restored,
                self._live_faults,
            )  # fmt: skip
            self._sources.append(handle)

    async def _place_keyed_stages(
        self, suffix: str, running: list[AggregateHandle], checkpoint: Checkpoint | None
    ) -> list[AggregateHandle]:
        """Carry out :func:`~cluster.control.stage_plan.keyed_stage_plan` from the ``running`` actors to the
        layout's wiring, the last stage first; return every keyed stage's actors, by stage. At a start none run
        and every actor is made (restored later, with the sources). At a rescale (``checkpoint``: the one just
        taken, every sender held at its barrier) actors that stay are regrouped in place and relinked, those
        beyond the new counts are removed, and new ones are made and restored from ``checkpoint``."""
        config = self._config
        current = [[handle for handle in running if handle.stage == stage] for stage in range(len(config.keyed_stages))]
        by_stage: dict[int, list[AggregateHandle]] = {}

        def feeds(placement: ActorPlacement) -> NextOwners | None:
            link = placement.next_link
            return None if link is None else NextOwners(by_stage[link.stage], link.owner_of_group, link.sender)

        made: list[AggregateHandle] = []
        with self._killed_if_failing(made):
            for plan in keyed_stage_plan(self._wiring(), [len(handles) for handles in current]):
                handles = current[plan.stage]
                for index in plan.removed:
                    self._actors.kill(handles[index])
                if plan.regrouped:
                    assert checkpoint is not None  # actors stay only through a rescale
                    await asyncio.gather(*(
                        handles[p.index].regroup(p.key_groups, p.senders, checkpoint.aggregates,
                                                 self._actors.next_stage(config, feeds(p)))
                        for p in plan.regrouped
                    ))  # fmt: skip
                added = [
                    self._actors.aggregate(config, f"{p.slot}-{suffix}", p.key_groups, p.senders, p.slot,
                                           self._live_faults, stage=p.stage, next_stage=feeds(p))
                    for p in plan.added
                ]  # fmt: skip
                made += added
                if checkpoint is not None and added:
                    await asyncio.gather(*(handle.restore(checkpoint.aggregates) for handle in added))
                    await asyncio.gather(*(handle.begin_epoch(self._epochs.next_epoch) for handle in added))
                by_stage[plan.stage] = handles[: plan.kept] + added
        return [handle for stage in sorted(by_stage) for handle in by_stage[stage]]

    @contextlib.contextmanager
    def _killed_if_failing(self, made: Sequence[SourceHandle | AggregateHandle]) -> Iterator[None]:
        """Kill the actors the body adds to ``made`` if it fails: they are in no topology yet, where the recovery
        (``_abandon``) would find them, and would otherwise hold their CPUs while the new topology starts."""
        try:
            yield
        except BaseException:
            for handle in made:
                self._actors.kill(handle)
            raise

    def _wiring(self) -> StageWiring:
        return self._layout.wiring(self._config.stage_graph, self._stage_sizes())

    def _source_routes(self) -> dict[int, list[int]] | None:
        """Where the sources send each input's rows (None for a stateless pipeline: to their sinks)."""
        return self._wiring().source_routes() if self._layout.keyed else None

    @property
    def _sources_send_to(self) -> list[AggregateHandle]:
        """The actors of the keyed stages that take inputs, stage by stage: the owners the sources send to."""
        graph = self._config.stage_graph
        return [handle for stage in graph.input_stages for handle in self._aggregates if handle.stage == stage]

    def _stage_sizes(self) -> list[int]:
        """The actors of each keyed stage: the configured sizes when the stages are sized apart, else the
        layout's count in each (the autoscaler's, after a rescale)."""
        configured = self._config.stage_actors
        if len(set(configured)) > 1:
            return list(configured)
        return [self._layout.aggregate_count] * len(configured)

    @property
    def _first_stage(self) -> list[AggregateHandle]:
        """The actors of the first keyed stage: the aggregate count a rescale's record shows (the sources send to
        :attr:`_sources_send_to`, the stages that take inputs)."""
        return [handle for handle in self._aggregates if handle.stage == 0]

    async def _restored_partitions(self, checkpoint: Checkpoint | None) -> list[int]:
        """The partitions to read: every input's now, and those a checkpoint had (a topic never shrinks, but a
        broker that is behind may report fewer; a single input's checkpoint records its count)."""
        ids = set(await self._partition_ids())
        if checkpoint is not None:
            ids |= set(checkpoint.positions)
            ids |= set(range(checkpoint.partitions)) if len(self._config.all_inputs) == 1 else set()
        return sorted(ids)

    def _kill_all(self) -> None:
        handles: list[SourceHandle | AggregateHandle] = [*self._sources, *self._aggregates]
        for handle in handles:
            self._actors.kill(handle)

    def _summary(self) -> RunSummary:
        console = next((sink for sink in self._config.sinks if isinstance(sink, ConsoleSinkConfig)), None)
        elapsed_s = self._clock.now_s() - self._run_started_s
        progress = RunProgress.of(self._finished_sources, self._final_aggregates, elapsed_s).plus_counts(self._earlier)
        return RunSummary(
            pipeline=self._config.name,
            progress=progress,
            stopped_early=self._stop_requested,
            preview=merge_previews(self._final_aggregates, console),
            outputs=[_describe(sink) for sink in self._config.sinks],
            dead_letter_path=_describe(self._config.dead_letter),
            recoveries_s=list(self.recoveries),
            checkpoints=self._epochs.completed,
            resumed_from=self._resumed_from.epoch if self._resumed_from else None,
            reemitted_rows=self._reemitted_rows,
            autoscale_timeline=list(self._autoscaler.timeline) if self._autoscaler else [],
            rescales=list(self._autoscaler.rescales) if self._autoscaler else [],
        )


def _file_output_directories(config: PipelineConfig) -> list[str]:
    directories = [sink.path for sink in config.sinks if isinstance(sink, JsonlSinkConfig | ParquetSinkConfig)]
    if isinstance(config.dead_letter, DeadLetterConfig):
        directories.append(config.dead_letter.path)
    return directories


def _describe(output: object) -> str:
    """Where an output goes, for people: a directory, ``kafka:<topic>`` or ``console``."""
    topic = getattr(output, "topic", None)
    return f"kafka:{topic}" if topic else str(getattr(output, "path", "console"))


def _within(window_s: float | None) -> str:
    return f" within {window_s:g} s (checkpoint.recovery_window_s) or in a row" if window_s is not None else ""


def _no_snapshot(actor_id: str) -> SourceSnapshot:
    return SourceSnapshot(actor_id=actor_id, positions={}, max_event_time_ms={})
