"""What tests of pipelines use and production configs never hold: planned crashes, a sink that keeps rows, and a
run of a whole pipeline in this process (:func:`run_stages`), with no Ray and no actor.

A :class:`CrashAt` makes the actor in a slot exit at an exact point of the checkpoint protocol, as a killed
process would: a SIGKILL from outside could hit that point only by luck. A run takes its plan as an argument
(``run_pipeline(config, faults=(CrashAt("aggregate-0", 4),))``, or the Supervisor's and the actors'
``faults``), never from the pipeline config, so no config can crash a production run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pyarrow as pa

from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig
from pipelines.config.secrets import resolve_secrets
from pipelines.errors import ConfigError
from pipelines.eventtime.clock import ManualClock
from pipelines.io.records import rows_as_dicts
from pipelines.io.sources import PartitionReader, open_reader, partition_count
from pipelines.stages.chain import NextStage, StageLink
from pipelines.stages.keyed_runner import KeyedStageRunner
from pipelines.stages.plan import CompiledPipeline, compile_pipeline
from pipelines.stages.source_stage import Routes, SourceStage
from pipelines.stages.topology import (
    InputPartitionReader,
    input_of,
    local_partition,
    partition_ids,
    partition_limits,
)
from pipelines.stages.wiring import StageWiring
from pipelines.state.keygroups import assign_key_groups
from pipelines.state.queryable import Viewable

__all__ = [
    "CollectingSink",
    "CrashAt",
    "FaultPlan",
    "InProcessOwners",
    "RunnerOwners",
    "StageRun",
    "crash_if_planned",
    "faults_after",
    "run_stages",
]

log = logging.getLogger(__name__)
_EXIT_CODE = 70
_SLOT = re.compile(r"^(source|(stage\d+-)?aggregate)-\d+$")


@dataclass(frozen=True)
class CrashAt:
    """The actor in ``slot`` (``aggregate-0``, ``source-1``) exits at ``point``, once per run. ``before_commit``:
    in the first epoch from ``epoch`` on in which it has outputs to commit, after the epoch's checkpoint is
    complete, before the actor commits its outputs (the window exactly-once recovery must close). ``regroup``
    (an aggregate): as a rescale regroups it, once epoch ``epoch`` or a later one has completed (a rescale the
    recovery must finish, cluster/control/autoscaler.py ``RescaleUnderWay``)."""

    slot: str
    epoch: int
    point: Literal["before_commit", "regroup"] = "before_commit"

    def __post_init__(self) -> None:
        if self.point not in ("before_commit", "regroup"):
            raise ValueError(f"CrashAt point {self.point!r}: the points are before_commit and regroup")
        if self.point == "regroup" and "aggregate" not in self.slot:
            raise ValueError(f"CrashAt slot {self.slot!r}: only an aggregate is regrouped")
        if not _SLOT.match(self.slot):
            raise ValueError(
                f"CrashAt slot {self.slot!r}: write source-<n> or aggregate-<n> (stage<k>-aggregate-<n> for an actor "
                "of a later keyed stage), e.g. aggregate-0"
            )
        if self.epoch < 1:
            raise ValueError(f"CrashAt epoch {self.epoch}: epochs count from 1")


FaultPlan = tuple[CrashAt, ...]


def crash_if_planned(faults: FaultPlan, point: str, slot: str, epoch: int, prepared_outputs: bool) -> None:
    """Exit the process at once (no cleanup, as a kill) if ``faults`` plan a crash here: at ``point`` of the
    first epoch from the fault's ``epoch`` on in which ``slot`` prepared outputs to commit (an epoch with
    nothing to commit would test nothing; at ``regroup``, ``epoch`` is the last one completed and
    ``prepared_outputs`` True). The Supervisor drops a fault once a checkpoint of its epoch or later is restored,
    so it fires at most once per run (:func:`faults_after`)."""
    for fault in faults:
        if (fault.point, fault.slot) == (point, slot) and epoch >= fault.epoch and prepared_outputs:
            log.error("injected fault: %s exits at %s of epoch %d", slot, point, epoch)
            os._exit(_EXIT_CODE)


def faults_after(faults: FaultPlan, restored_epoch: int | None) -> FaultPlan:
    """The faults for a topology restored from the checkpoint of ``restored_epoch`` (None: a fresh start): only
    those planned for later epochs, since those of earlier ones fired or their epochs passed (a ``regroup`` fault
    too, when no rescale came before the restore: it does not fire then)."""
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

    @property
    def num_rows(self) -> int:
        return sum(table.num_rows for table in self._tables)

    def table(self) -> pa.Table | None:
        """Everything written, as one table (None before the first write)."""
        if not self._tables:
            return None
        return pa.concat_tables(self._tables, promote_options="permissive")

    def rows(self) -> list[dict[str, Any]]:
        """Everything written, a dict per row (a map value as a dict, as the JSON sinks write it)."""
        return [row for table in self._tables for row in rows_as_dicts(table)]


@dataclass
class StageRun:
    """What :func:`run_stages` wrote: the results, the dead letters of the sources, the late side output of the
    keyed stage, how many events were read, and how many results were out before the end of the input flushed
    the rest (windows the watermark closed while reading); and the runners of each keyed stage (``owners``, by
    stage index), whose state the run leaves as it was at the end."""

    results: CollectingSink = field(default_factory=CollectingSink)
    dead_letters: CollectingSink = field(default_factory=CollectingSink)
    late: CollectingSink = field(default_factory=CollectingSink)
    events_in: int = 0
    closed_before_the_end: int = 0
    owners: dict[int, list[KeyedStageRunner]] = field(default_factory=dict)

    def view(self, stage: int, keys: Sequence[str]) -> list[Any]:
        """The value each of ``keys`` (as text, as a query names them) has in keyed stage ``stage``'s state at the
        end of the run, as a ``latest`` query of its view answers (None: none), read from the one owner that
        holds it. Raises ``TypeError`` for a stage whose state is no view (windows, dedup, a join) and
        ``AssertionError`` for a key that two owners hold (the shuffle sent its rows to both)."""
        readers = []
        for runner in self.owners[stage]:
            if not callable(getattr(runner.operator, "view", None)):
                kind = type(runner.operator).__name__
                raise TypeError(f"keyed stage {stage} keeps {kind} state, which no view reads")
            readers.append(cast(Viewable, runner.operator).view(frozen=True))
        answers = [reader.values(keys) for reader in readers]
        values: list[Any] = []
        for index, key in enumerate(keys):
            held = [answer[index] for answer in answers if answer[index] is not None]
            if len(held) > 1:
                raise AssertionError(f"key {key!r} of keyed stage {stage} is held by {len(held)} owners")
            values.append(held[0] if held else None)
        return values


def run_stages(config: PipelineConfig, *, senders: int = 1, owners: int = 1, batch_size: int | None = None) -> StageRun:
    """Run ``config`` to the end of its input in this process: its source stages and keyed-stage runners
    (:mod:`pipelines.stages`), wired directly, with no Ray, no actor, no checkpoint and no sink of its own.

    The pipeline's partitions are dealt round robin to ``senders`` source stages, each keyed stage's key groups
    to ``owners`` runners (a stage's own ``actors`` wins), and every partition is read a batch (``batch_size``,
    else ``runtime.batch_size``) at a time in turn, so rows meet the watermark as they do across actors.
    Generator and file inputs are read; a generator must be bounded by ``runtime.max_events`` and is read as if
    its events had all arrived. Secrets come from the environment, as the driver reads them. What the pipeline's
    sinks would get is in ``results``: the same rows, in the order one actor layout emits them, as
    :func:`cluster.control.runner.run_pipeline` writes.
    """
    config = resolve_secrets(config, os.environ)
    _check_runnable_here(config)
    compiled = compile_pipeline(config)
    clock = ManualClock()
    run = StageRun()
    runners, routes = _keyed_runners(compiled, run, senders, owners, clock)
    readers = _open_readers(config)
    sender_of = {reader.partition: index % senders for index, reader in enumerate(readers)}
    owned = [[r for r in readers if sender_of[r.partition] == sender] for sender in range(senders)]
    stages = [_source_stage(compiled, run, sender, owned[sender], runners, routes, clock) for sender in range(senders)]
    size = batch_size or config.runtime.batch_size
    asyncio.run(_read_all(readers, stages, sender_of, size))
    run.events_in = sum(stage.events_in for stage in stages)
    run.closed_before_the_end = run.results.num_rows
    for sender in range(senders):
        for runner in runners:
            runner.finish(sender)
    return run


def _keyed_runners(
    compiled: CompiledPipeline, run: StageRun, senders: int, owners: int, clock: ManualClock
) -> tuple[list[KeyedStageRunner], Routes]:
    """``owners`` runners per keyed stage (a stage's own ``actors`` wins), each stage's results linked to the
    runners of the stage that takes them (the last one's to ``run``); return the runners the sources send to
    (those of the stages that take inputs, stage by stage; none for a stateless pipeline) and the sources'
    routes to them."""
    config = compiled.config
    groups = config.runtime.max_key_groups
    views = config.keyed_stages
    sizes = [stage.actors or owners for stage in config.stages] if config.stages else [owners] * len(views)
    wiring = StageWiring(compiled.graph, tuple(assign_key_groups(groups, size) for size in sizes), senders, groups)
    by_stage: dict[int, list[KeyedStageRunner]] = {}
    for index in reversed(range(len(views))):
        runners = []
        for owner in range(sizes[index]):
            link = wiring.next_link(index, owner)
            following = None
            if link is not None:
                next_stage = NextStage(RunnerOwners(by_stage[link.stage]), link.owner_of_group, link.sender)
                following = StageLink.after(compiled, index, next_stage)
            runners.append(
                KeyedStageRunner(views[index], wiring.senders(index), sinks=[run.results], late_output=run.late,
                                 carry_trace=compiled.stages[index].carries_trace, clock=clock, next_stage=following,
                                 join_columns=compiled.stages[index].join_columns)
            )  # fmt: skip
        by_stage[index] = runners
    run.owners = dict(sorted(by_stage.items()))
    sent_to = [runner for stage in compiled.graph.input_stages for runner in by_stage.get(stage, [])]
    return sent_to, wiring.source_routes()


def _check_runnable_here(config: PipelineConfig) -> None:
    for spec in config.all_inputs:
        source = spec.source
        if source.type not in ("generator", "file"):
            raise ConfigError(
                f"{spec.path}source: run_stages reads generator and file inputs, not {source.type}; "
                "run a Kafka pipeline with run_pipeline (a local Ray cluster and broker)"
            )
        if source.type == "generator" and config.runtime.max_events is None:
            raise ConfigError(f"{spec.path}source: a generator never ends; set runtime.max_events to run it in process")


def _open_readers(config: PipelineConfig) -> list[PartitionReader]:
    """A reader of every pipeline partition from its start, its batches labelled with the pipeline partition."""
    specs = config.all_inputs
    partitions = partition_ids([partition_count(spec.source) for spec in specs])  # type: ignore[arg-type]
    limits = partition_limits(partitions, config.runtime.max_events)
    now_ms = int(time.time() * 1000)
    readers: list[PartitionReader] = []
    for partition in partitions:
        spec = specs[input_of(partition)]
        source = spec.source
        start_ms = source.start_time_ms if isinstance(source, GeneratorSourceConfig) else None
        reader = open_reader(source, local_partition(partition), 0, limits[partition], 0.0, start_ms or now_ms)
        readers.append(InputPartitionReader(reader, spec) if len(specs) > 1 else reader)
    return readers


def _source_stage(
    compiled: CompiledPipeline,
    run: StageRun,
    sender: int,
    readers: list[PartitionReader],
    runners: list[KeyedStageRunner],
    routes: Routes,
    clock: ManualClock,
) -> SourceStage:
    stage = SourceStage(
        compiled,
        dead_letter=run.dead_letters,
        sinks=[run.results],
        sender=sender,
        backlogs=lambda: {reader.partition: reader.backlog() for reader in readers if not reader.exhausted},
        clock=clock,
    )
    if runners:
        stage.route_to(InProcessOwners(runners), routes)
    for reader in readers:
        stage.watermarks.opened(reader.partition)
    return stage


async def _read_all(
    readers: list[PartitionReader],
    stages: list[SourceStage],
    sender_of: dict[int, int],
    batch_size: int,
) -> None:
    while not all(reader.exhausted for reader in readers):
        fetched = False
        for reader in readers:
            raw = await reader.fetch(batch_size)
            if raw is not None:
                fetched = True
                await stages[sender_of[reader.partition]].handle(raw)
        if not fetched:
            break  # a bounded input that delivers nothing more: it has ended
    for reader in readers:
        await reader.close()
    for stage in stages:
        await stage.close()


class RunnerOwners:
    """The runners of a next keyed stage as a :class:`~pipelines.stages.chain.StageOwners`: a send is processed
    at once, so there is nothing to drain and no backpressure."""

    def __init__(self, runners: list[KeyedStageRunner]) -> None:
        self.runners = runners

    @property
    def owners(self) -> int:
        return len(self.runners)

    @property
    def waited_s(self) -> float:
        return 0.0  # nothing waits: a send is processed at once

    def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None) -> None:
        if batch is None or batch.num_rows == 0:
            self.runners[owner].advance(sender, watermark_ms)
        else:
            self.runners[owner].add(sender, batch, watermark_ms)

    def drain(self) -> None:
        return None

    def finish(self, sender: int) -> None:
        for runner in self.runners:
            runner.finish(sender)


class InProcessOwners:
    """The keyed-stage runners as a :class:`~pipelines.stages.source_stage.Downstream`: a send is processed at
    once, so there is nothing to drain and no backpressure."""

    def __init__(self, runners: list[KeyedStageRunner]) -> None:
        self.runners = runners

    @property
    def owners(self) -> int:
        return len(self.runners)

    async def send(
        self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> None:
        if batch is None or batch.num_rows == 0:
            self.runners[owner].advance(sender, watermark_ms)
        else:
            self.runners[owner].add(sender, batch, watermark_ms)

    async def drain(self) -> None:
        return None

    async def finish(self, sender: int) -> None:
        for runner in self.runners:
            runner.finish(sender)
