"""The Supervisor driven without Ray: plain actor objects in this process behind the handle interface.

The same orders run as the integration tests, so the reconcile logic (assignment, freeze/stop, finish order,
commit after the aggregates flushed, summary) is checked tick by tick without a cluster.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest

from actors import AggregateActor, AggregateProgress, SourceActor, SourceProgress
from actors.source_actor import SourceBarrier
from cluster.control import supervisor as supervisor_module
from cluster.control.handles import NextOwners, transient_kafka_error
from cluster.control.supervisor import PipelineFailed, Supervisor
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.secrets import resolve_secrets
from pipelines.eventtime.clock import ManualClock
from pipelines.examples.orders import orders_pipeline
from pipelines.stages.chain import NextStage
from pipelines.stages.source_stage import Routes
from pipelines.stages.topology import partition_limits
from pipelines.state.checkpoint_store import AggregateSnapshot, SourceSnapshot, WriteAhead
from pipelines.testing import FaultPlan
from tests.reference import read_jsonl_dir, reference_orders

START_TIME_MS = 1_767_225_600_000
EVENTS = 20_000


class ActorDied(Exception):
    """What an in-process actor raises to play a killed actor process."""


class InProcessAggregate:
    def __init__(self, actor: AggregateActor, actor_id: str, owner: InProcessActors, stage: int = 0) -> None:
        self.actor, self.actor_id, self._owner, self.stage = actor, actor_id, owner, stage

    async def progress(self) -> AggregateProgress:
        return self.actor.progress()

    async def restore(self, snapshots: list[AggregateSnapshot]) -> int:
        return self.actor.restore(snapshots)

    async def regroup(self, key_groups: list[int], senders: int, snapshots: list[AggregateSnapshot],
                      next_stage: NextStage | None = None) -> int:  # fmt: skip
        return self.actor.regroup(key_groups, senders, snapshots, next_stage)

    async def fence_outputs(self) -> None:
        self.actor.fence_outputs()

    async def recover_outputs(self, epoch: int, write_ahead: list[WriteAhead], committed: dict[str, int]) -> int:
        return self.actor.recover_outputs(epoch, write_ahead, committed)

    async def begin_epoch(self, epoch: int) -> None:
        self.actor.begin_epoch(epoch)

    async def checkpoint(self, epoch: int) -> AggregateSnapshot:
        await self._owner.at_barrier(self.actor_id, epoch)
        self._owner.log.append(f"checkpoint {self.actor_id} {epoch}")
        return self.actor.checkpoint(epoch)

    async def complete(self, epoch: int) -> AggregateProgress:
        return self.actor.complete(epoch)

    async def close(self) -> AggregateProgress:
        self._owner.log.append(f"close {self.actor_id}")
        return self.actor.close()


class InProcessSource:
    def __init__(self, actor: SourceActor, actor_id: str, owner: InProcessActors) -> None:
        self.actor, self.actor_id, self._owner = actor, actor_id, owner

    def start(self) -> Any:
        return self.actor.run()

    async def progress(self) -> SourceProgress:
        return self.actor.progress()

    async def stop(self) -> None:
        self.actor.stop()

    async def freeze(self) -> None:
        await self.actor.freeze()

    async def add_partitions(self, partitions: list[int]) -> None:
        await self.actor.add_partitions(partitions)

    async def fence_outputs(self) -> None:
        await self.actor.fence_outputs()

    async def recover_outputs(self, epoch: int, write_ahead: list[WriteAhead], committed: dict[str, int]) -> int:
        return await self.actor.recover_outputs(epoch, write_ahead, committed)

    async def begin_epoch(self, epoch: int) -> None:
        await self.actor.begin_epoch(epoch)

    async def checkpoint(self, epoch: int) -> SourceBarrier:
        return await self.actor.checkpoint(epoch)

    async def complete(self, epoch: int, resume: bool = True) -> SourceProgress:
        self._owner.log.append(f"commit {self.actor_id} {epoch}")
        return await self.actor.complete(epoch, resume)

    async def close(self) -> SourceProgress:
        return await self.actor.close()

    async def reassign(self, partitions: list[int], restored: SourceSnapshot, limits: dict[int, int | None],
                       downstream: Any, routes: Routes | None) -> None:  # fmt: skip
        await self.actor.reassign(partitions, restored, limits, downstream, routes)

    async def resume(self) -> None:
        await self.actor.resume()


class InProcessDownstream:
    def __init__(self, aggregates: list[AggregateActor]) -> None:
        self._aggregates = aggregates

    @property
    def owners(self) -> int:
        return len(self._aggregates)

    async def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None,
                   trace_context: str | None) -> None:  # fmt: skip
        self._aggregates[owner].process(sender, batch, watermark_ms, trace_context)

    async def drain(self) -> None:
        return None  # send() processed the batch already

    async def finish(self, sender: int) -> None:
        for aggregate in self._aggregates:
            aggregate.finish(sender)


class InProcessStageOwners:
    """The actors of a next keyed stage, called directly (pipelines.stages.chain.StageOwners)."""

    def __init__(self, aggregates: list[AggregateActor]) -> None:
        self._aggregates = aggregates

    @property
    def owners(self) -> int:
        return len(self._aggregates)

    @property
    def waited_s(self) -> float:
        return 0.0  # nothing waits: a send is processed at once

    def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None) -> None:
        self._aggregates[owner].process(sender, batch, watermark_ms, None)

    def drain(self) -> None:
        return None  # send() processed the batch already

    def finish(self, sender: int) -> None:
        for aggregate in self._aggregates:
            aggregate.finish(sender)


class InProcessActors:
    def __init__(self, die_at_checkpoint: int | None = None) -> None:
        self.log: list[str] = []
        self.killed: list[str] = []
        self.checkpoints = 0
        self.die_at_checkpoint = die_at_checkpoint

    def aggregate(self, config: PipelineConfig, actor_id: str, key_groups: list[int], senders: int,
                  slot: str, faults: FaultPlan = (), stage: int = 0,
                  next_stage: NextOwners | None = None) -> Any:  # fmt: skip
        feeds = self.next_stage(config, next_stage)
        actor = AggregateActor(config, actor_id, key_groups, senders, slot, faults, stage=stage, next_stage=feeds)
        return InProcessAggregate(actor, actor_id, self, stage)

    def source(self, config: PipelineConfig, actor_id: str, sender_index: int, partitions: list[int],
               limits: dict[int, int | None], clock: tuple[float, int], aggregates: list[Any],
               routes: Routes | None, restored: SourceSnapshot | None,
               faults: FaultPlan = ()) -> Any:  # fmt: skip
        downstream = InProcessDownstream([a.actor for a in aggregates]) if routes is not None else None
        actor = SourceActor(
            config, actor_id, sender_index, partitions, limits, *clock, downstream, routes, restored, faults
        )
        return InProcessSource(actor, actor_id, self)

    async def at_barrier(self, actor_id: str, epoch: int) -> None:
        """What happens as an aggregate's barrier call begins: here the kill at ``die_at_checkpoint``."""
        self.checkpoints += 1
        if self.checkpoints == self.die_at_checkpoint:
            raise ActorDied(f"{actor_id} was killed at the barrier of epoch {epoch}")

    def kill(self, handle: Any) -> None:
        self.killed.append(handle.actor_id)

    def recoverable(self, error: BaseException) -> bool:
        return isinstance(error, ActorDied) or transient_kafka_error(error)  # as RayActors decides

    async def ping(self, handle: Any) -> None:
        return None  # an in-process actor cannot be stopped apart from this process

    def nodes(self) -> int:
        return 1

    def downstream(self, config: PipelineConfig, aggregates: list[Any]) -> InProcessDownstream:
        return InProcessDownstream([a.actor for a in aggregates])

    def next_stage(self, config: PipelineConfig, owners: NextOwners | None) -> NextStage | None:
        if owners is None:
            return None
        actors = [cast(InProcessAggregate, handle).actor for handle in owners.handles]
        return NextStage(InProcessStageOwners(actors), owners.owner_of_group, owners.sender)


def orders(tmp_path: Path, aggregate_actors: int) -> PipelineConfig:
    """The orders pipeline with its mask key resolved, as the driver hands it to the Supervisor."""
    return resolve_secrets(_orders(tmp_path, aggregate_actors), os.environ)


def _orders(tmp_path: Path, aggregate_actors: int) -> PipelineConfig:
    return orders_pipeline(
        runtime__max_events=EVENTS,
        runtime__duration_s=None,
        runtime__aggregate_actors=aggregate_actors,
        source__rate_per_s=None,
        source__start_time_ms=START_TIME_MS,
        tracing__enabled=False,
        checkpoint__uri=str(tmp_path / "checkpoints"),
        dead_letter__path=str(tmp_path / "dead"),
        sinks=[
            {"type": "console", "top": 3, "sort_by": "revenue_cents"},
            {"type": "jsonl", "path": str(tmp_path / "out")},
        ],
    )


def test_an_in_process_run_equals_the_reference_and_commits_after_the_aggregates(tmp_path: Path) -> None:
    config = orders(tmp_path, aggregate_actors=3)
    actors = InProcessActors()

    summary = asyncio.run(Supervisor(config, "t1", actors).run())

    expected, invalid = reference_orders(
        config.source,  # type: ignore[arg-type]
        partition_limits(8, EVENTS),
        START_TIME_MS,
        10_000,
    )
    rows = read_jsonl_dir(tmp_path / "out")
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in rows}
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}
    assert summary.progress.events_in == EVENTS
    assert summary.progress.dead_lettered == invalid
    assert summary.preview[0]["revenue_cents"] == max(value["revenue_cents"] for value in expected.values())
    barriers = [i for i, entry in enumerate(actors.log) if entry.startswith("checkpoint")]
    commits = [i for i, entry in enumerate(actors.log) if entry.startswith("commit")]
    closes = [i for i, entry in enumerate(actors.log) if entry.startswith("close")]
    assert len(closes) == 3 and len(commits) == 2 * summary.checkpoints and summary.checkpoints >= 1
    assert max(barriers) < max(commits) < min(closes), "offsets are committed after every aggregate's barrier"


def test_stop_finishes_cleanly_and_reports_it(tmp_path: Path) -> None:
    config = orders(tmp_path, aggregate_actors=1).model_copy(update={"runtime": orders(tmp_path, 1).runtime.model_copy(
        update={"max_events": None})})  # fmt: skip
    supervisor = Supervisor(config, "t2", InProcessActors())

    async def run_then_stop() -> Any:
        run = asyncio.ensure_future(supervisor.run())
        await asyncio.sleep(0.5)
        await supervisor.stop()
        return await asyncio.wait_for(run, timeout=30)

    summary = asyncio.run(run_then_stop())

    assert summary.stopped_early
    assert summary.progress.events_in > 0
    assert summary.progress.windows_emitted > 0, "open windows are emitted at stop, not lost"


def test_an_actor_killed_at_a_barrier_is_restored_and_exactly_once_files_equal_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_released: list[bool] = []

    def release() -> bool:
        memory_released.append(True)
        return True

    monkeypatch.setattr(supervisor_module, "release_freed_memory", release)
    config = orders(tmp_path, aggregate_actors=2).model_copy(update={"delivery": "exactly_once"})
    assert config.checkpoint is not None
    config = config.model_copy(update={"checkpoint": config.checkpoint.model_copy(update={"interval_ms": 100})})
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"batch_size": 256})})
    # paced at 20,000 events/s: the run lasts about a second, so it holds several 100 ms epochs
    assert config.source is not None
    config = config.model_copy(update={"source": config.source.model_copy(update={"rate_per_s": 20_000})})
    actors = InProcessActors(die_at_checkpoint=5)  # the barrier of the third epoch, on one of two aggregates

    summary = asyncio.run(Supervisor(config, "t3", actors).run())

    assert len(summary.recoveries_s) == 1
    assert actors.killed, "the whole topology is replaced"
    assert memory_released == [True], "the memory the replaced topology freed is handed back once"
    assert summary.progress.events_in == EVENTS, "events before the checkpoint are counted once"
    expected, invalid = reference_orders(config.source, partition_limits(8, EVENTS), START_TIME_MS, 10_000)  # type: ignore[arg-type]
    rows = read_jsonl_dir(tmp_path / "out")
    keys = [(r["customer_id"], r["window_start_ms"]) for r in rows]
    assert len(keys) == len(set(keys)), "no window is written twice"
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in rows}
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}
    assert len(read_jsonl_dir(tmp_path / "dead")) == invalid, "each invalid event is dead-lettered exactly once"


class StillOpenDownstream(InProcessDownstream):
    """The first half of an input: its end is not the end of the aggregates' input (windows stay open)."""

    async def finish(self, sender: int) -> None:
        return None


async def test_regroup_moves_key_groups_between_live_aggregates_and_loses_nothing(tmp_path: Path) -> None:
    """Two aggregates share the key groups; at a barrier the first takes over all of them (a scale-in) from
    the checkpoint: its windows then equal the reference, each emitted once."""
    config = orders(tmp_path, aggregate_actors=2)
    groups = [list(range(64)), list(range(64, 128))]
    owners = [0] * 64 + [1] * 64
    first, second = (AggregateActor(config, f"a{i}", groups[i], senders=1, slot=f"aggregate-{i}") for i in (0, 1))
    limits = partition_limits(8, EVENTS)
    half = {p: (limit or 0) // 2 for p, limit in limits.items()}
    first_half = SourceActor(config, "s", 0, list(range(8)), cast(dict[int, int | None], half), 0.0, START_TIME_MS,
                             StillOpenDownstream([first, second]), {0: owners})  # fmt: skip
    await first_half.run()
    barrier = await first_half.checkpoint(1)
    snapshots = [first.checkpoint(1), second.checkpoint(1)]
    for actor in (first, second):
        actor.complete(1)
    await first_half.complete(1)
    await first_half.close()

    taken = first.regroup(list(range(128)), senders=1, snapshots=snapshots)
    rest: dict[int, int | None] = {p: (limit or 0) - half[p] for p, limit in limits.items()}
    second_half = SourceActor(config, "s2", 0, list(range(8)), rest, 0.0, START_TIME_MS,
                              InProcessDownstream([first]), {0: [0] * 128}, barrier.snapshot)  # fmt: skip
    await second_half.run()
    first.checkpoint(2)
    first.complete(2)
    await second_half.close()
    first.close()
    second.close()

    assert taken > 0, "the second aggregate's open windows moved"
    expected, _ = reference_orders(config.source, partition_limits(8, EVENTS), START_TIME_MS, 10_000)  # type: ignore[arg-type]
    rows = read_jsonl_dir(tmp_path / "out")
    keys = [(r["customer_id"], r["window_start_ms"]) for r in rows]
    assert len(keys) == len(set(keys)), "no window emitted twice"
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in rows}
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}


def test_progress_while_an_actor_is_dead_is_the_last_progress_not_an_error(tmp_path: Path) -> None:
    """The driver polls progress during the run: an actor that just died (its recovery is under way) must not
    fail the poll, which the driver would take for the Supervisor's own death."""
    config = orders(tmp_path, aggregate_actors=1).model_copy(update={"runtime": orders(tmp_path, 1).runtime.model_copy(
        update={"max_events": None})})  # fmt: skip
    supervisor = Supervisor(config, "t4", InProcessActors())

    async def dead_source_progress() -> SourceProgress:
        raise ActorDied("the source's process was killed")

    async def poll_through_a_death() -> tuple[Any, Any]:
        run = asyncio.ensure_future(supervisor.run())
        for _ in range(3_000):  # until the sources run (a bound, not a pace)
            if supervisor._sources:
                break
            await asyncio.sleep(0.01)
        before = await supervisor.progress()
        supervisor._sources[0].progress = dead_source_progress  # type: ignore[method-assign]
        during = await supervisor.progress()
        await supervisor.stop()
        await asyncio.wait_for(run, timeout=30)
        return before, during

    before, during = asyncio.run(poll_through_a_death())

    assert during == before


class MachineLost(Exception):
    """Not an actor death the run recovers from: the run fails and leaves its last checkpoint unfinished."""


class LostAtCheckpoint(InProcessActors):
    def __init__(self, lost_at_checkpoint: int) -> None:
        super().__init__()
        self.lost_at_checkpoint = lost_at_checkpoint

    async def at_barrier(self, actor_id: str, epoch: int) -> None:
        self.checkpoints += 1
        if self.checkpoints == self.lost_at_checkpoint:
            raise MachineLost(f"the machine of {actor_id} was lost at epoch {epoch}")


def test_a_resumed_run_reads_state_by_meaning_and_refuses_a_changed_window_keeping_the_checkpoint(
    tmp_path: Path,
) -> None:
    """A run fails mid-way; the next run of the same pipeline resumes from its checkpoint. With the aggregations
    reordered and one removed it reads the windows' partials by meaning: the output equals the reference. With
    another window size it fails at the restore, naming the difference, and the checkpoint stays for a run with
    the config that wrote it."""
    config = orders(tmp_path, aggregate_actors=2).model_copy(update={"delivery": "exactly_once"})
    assert config.checkpoint is not None
    config = config.model_copy(update={"checkpoint": config.checkpoint.model_copy(update={"interval_ms": 100})})
    assert config.source is not None
    config = config.model_copy(update={"source": config.source.model_copy(update={"rate_per_s": 20_000})})
    assert config.aggregate is not None and list(config.aggregate.aggregations)[:2] == ["orders", "revenue_cents"]
    with pytest.raises(PipelineFailed, match="was lost"):
        asyncio.run(Supervisor(config, "t-lost", LostAtCheckpoint(lost_at_checkpoint=5)).run())

    resized = config.model_copy(update={"aggregate": config.aggregate.model_copy(
        update={"window": config.aggregate.window.model_copy(update={"size_ms": 5_000})})})  # fmt: skip
    with pytest.raises(PipelineFailed) as refused:
        asyncio.run(Supervisor(resized, "t-resized", InProcessActors()).run())
    assert "window was 'tumbling size_ms=10000' where this pipeline has 'tumbling size_ms=5000'" in str(refused.value)

    aggregations = config.aggregate.aggregations
    reordered = config.model_copy(update={"aggregate": config.aggregate.model_copy(update={"aggregations": {
        "revenue_cents": aggregations["revenue_cents"], "orders": aggregations["orders"]}})})  # fmt: skip
    summary = asyncio.run(Supervisor(reordered, "t-reordered", InProcessActors()).run())

    assert summary.resumed_from is not None, "the refused run left the checkpoint unfinished"
    assert 0 < summary.progress.events_in < EVENTS, "this run read on from the checkpoint's offsets"
    expected, _ = reference_orders(config.source, partition_limits(8, EVENTS), START_TIME_MS, 10_000)  # type: ignore[arg-type]
    rows = read_jsonl_dir(tmp_path / "out")
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in rows}
    assert len(actual) == len(rows), "no window is written twice"
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}


class HangingAtCheckpoint(InProcessActors):
    """The aggregate's barrier call of the ``hang_at_checkpoint``-th checkpoint never returns (a stuck client in
    an actor that still answers the watchdog)."""

    def __init__(self, hang_at_checkpoint: int) -> None:
        super().__init__()
        self.hang_at_checkpoint = hang_at_checkpoint
        self.hung: list[str] = []

    async def at_barrier(self, actor_id: str, epoch: int) -> None:
        self.checkpoints += 1
        if self.checkpoints == self.hang_at_checkpoint:
            self.hung.append(f"{actor_id} at epoch {epoch}")
            await asyncio.Event().wait()  # for ever


def test_an_epoch_stuck_past_the_checkpoint_timeout_restores_the_topology_and_loses_nothing(tmp_path: Path) -> None:
    config = orders(tmp_path, aggregate_actors=2).model_copy(update={"delivery": "exactly_once"})
    assert config.checkpoint is not None
    config = config.model_copy(
        update={"checkpoint": config.checkpoint.model_copy(update={"interval_ms": 100, "timeout_ms": 1_000})}
    )
    assert config.source is not None
    config = config.model_copy(update={"source": config.source.model_copy(update={"rate_per_s": 20_000})})
    actors = HangingAtCheckpoint(hang_at_checkpoint=5)

    summary = asyncio.run(Supervisor(config, "t-hang", actors).run())

    assert actors.hung, "the barrier call hung"
    assert len(summary.recoveries_s) == 1 and actors.killed, "the stuck topology was replaced"
    expected, invalid = reference_orders(config.source, partition_limits(8, EVENTS), START_TIME_MS, 10_000)  # type: ignore[arg-type]
    rows = read_jsonl_dir(tmp_path / "out")
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in rows}
    assert len(actual) == len(rows), "no window is written twice"
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}
    assert len(read_jsonl_dir(tmp_path / "dead")) == invalid


class SteppingClock(ManualClock):
    """A clock one second further on at every monotonic reading."""

    def monotonic(self) -> float:
        self.advance(1.0)
        return super().monotonic()


@pytest.mark.parametrize(("clock", "periodic_epochs"), [(ManualClock(), False), (SteppingClock(), True)])
def test_epochs_are_paced_by_the_supervisors_clock(tmp_path: Path, clock: ManualClock, periodic_epochs: bool) -> None:
    config = orders(tmp_path, aggregate_actors=2)
    assert config.checkpoint is not None
    config = config.model_copy(update={"checkpoint": config.checkpoint.model_copy(update={"interval_ms": 100})})
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"batch_size": 256})})

    summary = asyncio.run(Supervisor(config, "t-clock", InProcessActors(), clock=clock).run())

    assert summary.progress.events_in == EVENTS
    if periodic_epochs:
        assert summary.checkpoints > 1, "every reading of the clock passes the interval: epochs keep coming"
    else:
        assert summary.checkpoints == 1, "a clock that never moves leaves only the final epoch"
