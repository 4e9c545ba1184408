"""The Supervisor: builds a pipeline's topology, runs it to the end, and reports progress.

It is a plain class (Ray options are applied in :mod:`cluster.remote`) that talks to actors only through
:mod:`cluster.handles`. One run: spawn aggregate actors (key groups assigned), spawn source actors (partitions
assigned), start every source's read loop, freeze the sources at the duration deadline, stop them on request,
then wait for every source to hand over its batches and every aggregate to emit and flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from actors.kafka.admin import ensure_topic
from actors.kafka.admin import partition_count as kafka_partition_count
from actors.metrics import PipelineMetrics
from actors.reports import AggregateProgress, SourceProgress
from cluster.assignment import assign_key_groups, assign_partitions, owner_of_group, partition_limits
from cluster.handles import ActorFactory, AggregateHandle, RayActors, SourceHandle
from cluster.run_report import RunProgress, RunSummary, merge_previews
from pipelines.config import ConsoleSinkConfig, PipelineConfig
from pipelines.errors import FatalError
from pipelines.kafka_config import KafkaDeadLetterConfig, KafkaSinkConfig, KafkaSourceConfig
from pipelines.plan import compile_pipeline
from pipelines.sinks import clear_previous_output
from pipelines.sources import partition_count

__all__ = ["PipelineFailed", "Supervisor"]

log = logging.getLogger(__name__)

_POLL_S = 0.1
KafkaOutputs = (KafkaSinkConfig, KafkaDeadLetterConfig)


class PipelineFailed(FatalError):
    """An actor of the pipeline failed; the message carries its error."""


class Supervisor:
    def __init__(self, config: PipelineConfig, run_id: str, actors: ActorFactory | None = None) -> None:
        compile_pipeline(config)  # fail here, before any actor exists, if the config cannot run
        self._config = config
        self._run_id = run_id
        self._actors: ActorFactory = actors if actors is not None else RayActors()
        self._started_at_s = time.time()
        configured_start = getattr(config.source, "start_time_ms", None)
        self._start_time_ms = int(self._started_at_s * 1000) if configured_start is None else configured_start
        self._sources: list[SourceHandle] = []
        self._aggregates: list[AggregateHandle] = []
        self._stop_requested = False
        self._finished_sources: list[SourceProgress] = []
        self._final_aggregates: list[AggregateProgress] = []
        self._partitions = 0
        self._owned: list[list[int]] = []

    async def run(self) -> RunSummary:
        """Run the pipeline to its end (bounded input, duration, or :meth:`stop`); return the summary."""
        if not isinstance(self._config.source, KafkaSourceConfig):
            # A replayable input is read again from its start: its output replaces the last run's. A Kafka
            # source resumes after its committed offsets, so the earlier output is kept (files are per run).
            clear_previous_output(self._config)
        await self._spawn()
        metrics = PipelineMetrics(self._config.name)
        metrics.actors("source", len(self._sources), self._config.runtime.source_actors)
        metrics.actors(
            "aggregate", len(self._aggregates), self._config.runtime.aggregate_actors if self._aggregates else 0
        )
        runs = [asyncio.ensure_future(self._await(source.start())) for source in self._sources]
        try:
            await self._drive(runs)
            self._finished_sources = list(await asyncio.gather(*runs))
            if self._aggregates:
                self._final_aggregates = [await aggregate.close() for aggregate in self._aggregates]
                # only now are the windows holding the sources' events emitted and flushed: commit
                self._finished_sources = [await source.commit_and_close() for source in self._sources]
        except Exception as error:  # noqa: BLE001 - any actor failure ends the run; actors are killed first
            for run in runs:
                run.cancel()
            self._kill_all()
            raise PipelineFailed(f"pipeline {self._config.name!r} failed: {error}") from None
        return self._summary()

    async def stop(self) -> None:
        """Stop reading now; in-flight batches are finished, windows emitted and sinks flushed."""
        self._stop_requested = True

    async def progress(self) -> RunProgress:
        sources = await asyncio.gather(*(source.progress() for source in self._sources))
        aggregates = await asyncio.gather(*(aggregate.progress() for aggregate in self._aggregates))
        return RunProgress.of(list(sources), list(aggregates), time.time() - self._started_at_s)

    def shutdown(self) -> None:
        """Kill the actors of this run (after :meth:`run` returned, or to abandon it)."""
        self._kill_all()

    async def _drive(self, runs: Sequence[asyncio.Future[SourceProgress]]) -> None:
        duration = self._config.runtime.duration_s
        source = self._config.source
        bounded = self._config.runtime.max_events is not None  # a bounded run reads the partitions it started with
        discovery_s = source.partition_discovery_s if isinstance(source, KafkaSourceConfig) and not bounded else None
        last_discovery = time.monotonic()
        frozen = stopped = False
        while not all(run.done() for run in runs):
            if discovery_s is not None and not frozen and time.monotonic() - last_discovery >= discovery_s:
                last_discovery = time.monotonic()
                await self._discover_partitions(runs)
            if any(run.done() and run.exception() is not None for run in runs):
                break  # gather() below raises it
            elapsed = time.time() - self._started_at_s
            # freeze/stop errors are ignored: a source that failed reports its own error through its run
            if not frozen and duration is not None and elapsed >= duration:
                frozen = True
                await asyncio.gather(*(source.freeze() for source in self._sources), return_exceptions=True)
            if self._stop_requested and not stopped:
                stopped = True
                await asyncio.gather(*(source.stop() for source in self._sources), return_exceptions=True)
            await asyncio.wait(runs, timeout=_POLL_S, return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    async def _await(reference: Any) -> SourceProgress:
        result: SourceProgress = await reference
        return result

    async def _partition_count(self) -> int:
        source = self._config.source
        if isinstance(source, KafkaSourceConfig):
            assert self._config.kafka is not None
            return await kafka_partition_count(self._config.kafka, source.topic)
        return partition_count(source)

    async def _discover_partitions(self, runs: Sequence[asyncio.Future[SourceProgress]]) -> None:
        """Assign partitions added to the topic since the start, each to the running source owning the fewest.

        A failed look-up is retried at the next interval: a broker restart must not end a healthy run.
        """
        try:
            count = await self._partition_count()
        except Exception as error:  # noqa: BLE001 - any broker error here is transient for a running pipeline
            log.warning("partition discovery for %s failed, retrying later: %s", self._config.name, error)
            return
        running = [index for index, run in enumerate(runs) if not run.done()]
        if not running:
            return
        for partition in range(self._partitions, count):
            owner = min(running, key=lambda index: len(self._owned[index]))
            self._owned[owner].append(partition)
            await self._sources[owner].add_partitions([partition])
        self._partitions = max(self._partitions, count)

    async def _create_output_topics(self, partitions: int) -> None:
        kafka = self._config.kafka
        if kafka is None or not kafka.create_topics:
            return
        outputs = [*self._config.sinks, self._config.dead_letter]
        for topic in sorted({output.topic for output in outputs if isinstance(output, KafkaOutputs)}):
            await ensure_topic(kafka, topic, partitions)

    async def _spawn(self) -> None:
        config = self._config
        runtime = config.runtime
        partitions = self._partitions = await self._partition_count()
        await self._create_output_topics(partitions)
        limits = partition_limits(partitions, runtime.max_events)
        owners: list[int] | None = None
        if config.aggregate is not None:
            groups = assign_key_groups(runtime.max_key_groups, runtime.aggregate_actors)
            owners = owner_of_group(groups, runtime.max_key_groups)
            senders = min(runtime.source_actors, partitions)
            for index, owned in enumerate(groups):
                actor_id = f"aggregate-{index}-{self._run_id}"
                self._aggregates.append(self._actors.aggregate(config, actor_id, owned, senders))
        self._owned = assign_partitions(partitions, runtime.source_actors)
        clock = (self._started_at_s, self._start_time_ms)
        for index, owned in enumerate(self._owned):
            actor_id = f"source-{index}-{self._run_id}"
            limits_owned = {p: limits[p] for p in owned}
            handle = self._actors.source(config, actor_id, index, owned, limits_owned, clock, self._aggregates, owners)
            self._sources.append(handle)

    def _kill_all(self) -> None:
        handles: list[SourceHandle | AggregateHandle] = [*self._sources, *self._aggregates]
        for handle in handles:
            self._actors.kill(handle)

    def _summary(self) -> RunSummary:
        console = next((sink for sink in self._config.sinks if isinstance(sink, ConsoleSinkConfig)), None)
        progress = RunProgress.of(self._finished_sources, self._final_aggregates, time.time() - self._started_at_s)
        return RunSummary(
            pipeline=self._config.name,
            progress=progress,
            stopped_early=self._stop_requested,
            preview=merge_previews(self._final_aggregates, console),
            outputs=[_describe(sink) for sink in self._config.sinks],
            dead_letter_path=_describe(self._config.dead_letter),
        )


def _describe(output: object) -> str:
    """Where an output goes, for people: a directory, ``kafka:<topic>`` or ``console``."""
    topic = getattr(output, "topic", None)
    return f"kafka:{topic}" if topic else str(getattr(output, "path", "console"))
