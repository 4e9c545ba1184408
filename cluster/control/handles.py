"""The thin layer through which eventray talks to Ray actors: every ``.remote()`` of the runtime is here.

The Supervisor sees :class:`SourceHandle` and :class:`AggregateHandle` (async methods, plain results), and
source actors see :class:`RayDownstream`; tests can substitute in-process fakes for all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import ray
from aiokafka.errors import KafkaError, KafkaTimeoutError

from actors.reports import AggregateProgress, SourceProgress
from actors.source_actor import SourceBarrier
from cluster.control.remote import (
    POSITION_WAIT_GROUP,
    QUERY_GROUP,
    WATCHDOG_GROUP,
    remote_aggregate,
    remote_query_router,
    remote_source,
)
from pipelines.config.pipeline import PipelineConfig
from pipelines.errors import FatalError, RetriableError, causes
from pipelines.stages.chain import NextStage
from pipelines.stages.source_stage import Routes
from pipelines.state.checkpoint_store import AggregateSnapshot, SourceSnapshot, WriteAhead
from pipelines.state.queryable import NotOwner, ViewAnswer
from pipelines.testing import FaultPlan

__all__ = [
    "ActorFactory",
    "AggregateHandle",
    "NextOwners",
    "OwnerGone",
    "QueryRouterHandle",
    "RayActors",
    "RayDownstream",
    "RayStageOwners",
    "SourceHandle",
    "SupervisorHandle",
    "actor_died",
    "ask_owner",
    "kill_actor",
    "kill_named_actors",
    "owner_dead",
    "transient_kafka_error",
]


class RayDownstream:
    """Sends a source actor's batches to aggregate actors, with a bound on unprocessed batches."""

    def __init__(self, aggregates: list[Any], max_in_flight: int) -> None:
        self._aggregates = aggregates
        self._max_in_flight = max_in_flight
        self._in_flight: deque[Any] = deque()

    @property
    def owners(self) -> int:
        return len(self._aggregates)

    async def send(
        self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> None:
        self._in_flight.append(self._aggregates[owner].process.remote(sender, batch, watermark_ms, trace_context))
        while len(self._in_flight) > self._max_in_flight:
            await self._in_flight.popleft()

    async def drain(self) -> None:
        while self._in_flight:
            await self._in_flight.popleft()

    async def finish(self, sender: int) -> None:
        await self.drain()
        await asyncio.gather(*(aggregate.finish.remote(sender) for aggregate in self._aggregates))


class RayStageOwners:
    """Sends an aggregate actor's results to the actors of the next keyed stage (a
    :class:`~pipelines.stages.chain.StageOwners`), with a bound on unprocessed batches. It runs inside a
    (synchronous) aggregate actor, so it waits with ``ray.get``; the actors of a later stage never call back."""

    def __init__(self, aggregates: list[Any], max_in_flight: int) -> None:
        self._aggregates = aggregates
        self._max_in_flight = max_in_flight
        self._in_flight: deque[Any] = deque()
        self.waited_s = 0.0  # in ray.get: the next stage's time, kept out of this actor's busy time

    @property
    def owners(self) -> int:
        return len(self._aggregates)

    def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None) -> None:
        self._in_flight.append(self._aggregates[owner].process.remote(sender, batch, watermark_ms, None))
        while len(self._in_flight) > self._max_in_flight:
            self._wait(self._in_flight.popleft())

    def drain(self) -> None:
        while self._in_flight:
            self._wait(self._in_flight.popleft())

    def finish(self, sender: int) -> None:
        self.drain()
        self._wait([aggregate.finish.remote(sender) for aggregate in self._aggregates])

    def _wait(self, references: Any) -> None:
        started = time.perf_counter()
        try:
            ray.get(references)
        finally:
            self.waited_s += time.perf_counter() - started


@dataclass(frozen=True)
class NextOwners:
    """The actors of the keyed stage after an aggregate actor's, which of them owns each key group, and the
    actor's place among their senders."""

    handles: list[AggregateHandle]
    owner_of_group: list[int]
    sender: int


class _ActorHandle:
    """What both kinds of actor answer: the epoch protocol's shared steps (see :mod:`cluster.control.epochs`)."""

    def __init__(self, actor: Any, actor_id: str) -> None:
        self.actor = actor
        self.actor_id = actor_id

    async def begin_epoch(self, epoch: int) -> None:
        await self.actor.begin_epoch.remote(epoch)

    async def fence_outputs(self) -> None:
        await self.actor.fence_outputs.remote()

    async def recover_outputs(self, epoch: int, write_ahead: list[WriteAhead], committed: dict[str, int]) -> int:
        result: int = await self.actor.recover_outputs.remote(epoch, write_ahead, committed)
        return result


class SourceHandle(_ActorHandle):
    def start(self) -> Any:
        """Start the actor's read loop; the returned reference resolves to its final progress."""
        return self.actor.run.remote()

    async def progress(self) -> SourceProgress:
        result: SourceProgress = await self.actor.progress.remote()
        return result

    async def stop(self) -> None:
        await self.actor.stop.remote()

    async def freeze(self) -> None:
        await self.actor.freeze.remote()

    async def add_partitions(self, partitions: list[int]) -> None:
        await self.actor.add_partitions.remote(partitions)

    async def checkpoint(self, epoch: int) -> SourceBarrier:
        result: SourceBarrier = await self.actor.checkpoint.remote(epoch)
        return result

    async def complete(self, epoch: int, resume: bool = True) -> SourceProgress:
        result: SourceProgress = await self.actor.complete.remote(epoch, resume)
        return result

    async def close(self) -> SourceProgress:
        result: SourceProgress = await self.actor.close.remote()
        return result

    async def reassign(
        self,
        partitions: list[int],
        restored: SourceSnapshot,
        limits: dict[int, int | None],
        downstream: Any,
        routes: Routes | None,
    ) -> None:
        await self.actor.reassign.remote(partitions, restored, limits, downstream, routes)

    async def resume(self) -> None:
        await self.actor.resume.remote()


class AggregateHandle(_ActorHandle):
    """An actor of keyed stage ``stage`` (0: the first, or the one)."""

    def __init__(self, actor: Any, actor_id: str, stage: int = 0) -> None:
        super().__init__(actor, actor_id)
        self.stage = stage

    async def progress(self) -> AggregateProgress:
        result: AggregateProgress = await self.actor.progress.remote()
        return result

    async def close(self) -> AggregateProgress:
        result: AggregateProgress = await self.actor.close.remote()
        return result

    async def restore(self, snapshots: list[AggregateSnapshot]) -> int:
        result: int = await self.actor.restore.remote(snapshots)
        return result

    async def regroup(
        self, key_groups: list[int], senders: int, snapshots: list[AggregateSnapshot], next_stage: Any = None
    ) -> int:
        """``next_stage``: from :meth:`ActorFactory.next_stage`, when a keyed stage follows this actor's."""
        result: int = await self.actor.regroup.remote(key_groups, senders, snapshots, next_stage)
        return result

    async def checkpoint(self, epoch: int) -> AggregateSnapshot:
        result: AggregateSnapshot = await self.actor.checkpoint.remote(epoch)
        return result

    async def complete(self, epoch: int) -> AggregateProgress:
        result: AggregateProgress = await self.actor.complete.remote(epoch)
        return result


def kill_actor(handle: SourceHandle | AggregateHandle) -> None:
    ray.kill(handle.actor, no_restart=True)


def actor_died(error: BaseException) -> bool:
    """True when ``error`` means an actor process died (recoverable from a checkpoint), also when it reached
    us through another actor's call (a source whose aggregate died); not when its ``__init__`` raised one of
    eventray's fatal errors, which no restart cures (a secret missing from its node's environment)."""
    return any(
        isinstance(cause, ray.exceptions.RayActorError) and not _init_failed_fatally(cause) for cause in causes(error)
    )


def _init_failed_fatally(error: ray.exceptions.RayActorError) -> bool:
    """Ray keeps only the text of an exception raised in ``__init__``: its last line names the class."""
    if not error.actor_init_failed:
        return False
    return any(f"{name}: " in error.error_msg for name in _fatal_error_names())


def _fatal_error_names(kind: type[BaseException] = FatalError) -> list[str]:
    return [kind.__name__, *(name for sub in kind.__subclasses__() for name in _fatal_error_names(sub))]


def transient_kafka_error(error: BaseException) -> bool:
    """True when ``error`` is, or was caused by, a Kafka error that may pass (a broker restarting or out of
    reach: aiokafka marks those ``retriable``; a request or send that timed out, which aiokafka's admin client
    raises as the built-in ``TimeoutError``), or an eventray :class:`RetriableError`."""
    return any(
        isinstance(cause, RetriableError | KafkaTimeoutError | TimeoutError | asyncio.TimeoutError)
        or (isinstance(cause, KafkaError) and cause.retriable)
        for cause in causes(error)
    )


def kill_named_actors(prefix: str, run_id: str) -> int:
    """Kill the live named actors of eventray's namespace whose names start with ``prefix`` and contain
    ``run_id`` (the leftovers of a Supervisor that died); return how many."""
    killed = 0
    for name in ray.util.list_named_actors():
        if name.startswith(prefix) and run_id in name:
            try:
                ray.kill(ray.get_actor(name), no_restart=True)
                killed += 1
            except ValueError:  # it died on its own in between
                continue
    return killed


class ActorFactory(Protocol):
    """How the Supervisor gets its actors: on Ray (:class:`RayActors`), or in-process fakes in unit tests."""

    def aggregate(
        self,
        config: PipelineConfig,
        actor_id: str,
        key_groups: list[int],
        senders: int,
        slot: str,
        faults: FaultPlan = (),
        stage: int = 0,
        next_stage: NextOwners | None = None,
    ) -> AggregateHandle:
        """An actor of keyed stage ``stage``; ``next_stage``: the actors its results go to, when a stage follows."""
        ...  # fmt: skip

    def source(
        self,
        config: PipelineConfig,
        actor_id: str,
        sender_index: int,
        partitions: list[int],
        limits: dict[int, int | None],
        clock: tuple[float, int],
        aggregates: list[AggregateHandle],
        routes: Routes | None,
        restored: SourceSnapshot | None,
        faults: FaultPlan = (),
    ) -> SourceHandle: ...

    def kill(self, handle: SourceHandle | AggregateHandle) -> None: ...

    def recoverable(self, error: BaseException) -> bool:
        """Whether restoring the topology from the last checkpoint may get past ``error`` (from a handle call
        or the Supervisor's own Kafka calls): an actor died, or Kafka failed in a way that may pass."""
        ...

    async def ping(self, handle: SourceHandle | AggregateHandle) -> None:
        """Return when the actor answers the watchdog's ping (:mod:`cluster.control.watchdog`), however long that
        takes; an actor found dead counts as answering: the calls waiting on it start the recovery."""
        ...

    def nodes(self) -> int:
        """Alive nodes of the cluster (the autoscaling record shows them)."""
        ...

    def downstream(self, config: PipelineConfig, aggregates: list[AggregateHandle]) -> Any:
        """How a source sends to ``aggregates`` (given to a running source when a rescale changes them)."""
        ...

    def next_stage(self, config: PipelineConfig, owners: NextOwners | None) -> Any:
        """How an aggregate actor sends to the actors of the next keyed stage (None: none follows)."""
        ...


class RayActors:
    """Actors on Ray, with the options of :mod:`cluster.control.remote`; named ``<pipeline>-<actor id>``."""

    def aggregate(
        self, config: PipelineConfig, actor_id: str, key_groups: list[int], senders: int, slot: str,
        faults: FaultPlan = (), stage: int = 0, next_stage: NextOwners | None = None,
    ) -> AggregateHandle:  # fmt: skip
        name = f"{config.name}-{actor_id}"
        actor = remote_aggregate(config, name).remote(
            config,
            actor_id,
            key_groups,
            senders,
            slot,
            faults,
            stage=stage,
            next_stage=self.next_stage(config, next_stage),
        )
        return AggregateHandle(actor, actor_id, stage)

    def source(
        self,
        config: PipelineConfig,
        actor_id: str,
        sender_index: int,
        partitions: list[int],
        limits: dict[int, int | None],
        clock: tuple[float, int],
        aggregates: list[AggregateHandle],
        routes: Routes | None,
        restored: SourceSnapshot | None,
        faults: FaultPlan = (),
    ) -> SourceHandle:
        """``clock``: (wall-clock start of the run in s, event time of offset 0 in ms) for generator sources."""
        downstream = self.downstream(config, aggregates) if routes is not None else None
        started_at_s, start_time_ms = clock
        actor = remote_source(config, f"{config.name}-{actor_id}").remote(
            config, actor_id, sender_index, partitions, limits, started_at_s, start_time_ms, downstream, routes,
            restored, faults,
        )  # fmt: skip
        return SourceHandle(actor, actor_id)

    def kill(self, handle: SourceHandle | AggregateHandle) -> None:
        kill_actor(handle)

    def recoverable(self, error: BaseException) -> bool:
        return actor_died(error) or transient_kafka_error(error)

    async def ping(self, handle: SourceHandle | AggregateHandle) -> None:
        with contextlib.suppress(ray.exceptions.RayError):
            await handle.actor.alive.options(concurrency_group=WATCHDOG_GROUP).remote()

    def downstream(self, config: PipelineConfig, aggregates: list[AggregateHandle]) -> RayDownstream:
        return RayDownstream([handle.actor for handle in aggregates], config.runtime.max_in_flight_batches)

    def next_stage(self, config: PipelineConfig, owners: NextOwners | None) -> NextStage | None:
        if owners is None:
            return None
        sending = RayStageOwners([handle.actor for handle in owners.handles], config.runtime.max_in_flight_batches)
        return NextStage(sending, owners.owner_of_group, owners.sender)

    def nodes(self) -> int:
        alive: list[bool] = [bool(node.get("Alive")) for node in ray.nodes()]  # type: ignore[no-untyped-call]
        return sum(alive)


class OwnerGone(RetriableError):
    """The actor asked for a view's keys died (a recovery or a move replaces it): ask the next owner."""


async def owner_dead(actor: Any, timeout_s: float = 5.0) -> bool:
    """Whether the owner actor is dead (a busy one answers: ``alive`` runs in the watchdog's thread)."""
    try:
        await asyncio.wait_for(actor.alive.remote(), timeout_s)
    except ray.exceptions.RayActorError:
        return True
    except TimeoutError:
        return False
    return False


async def ask_owner(
    actor: Any, keys: list[str], consistency: str, min_position: str | None, wait_s: float, timeout_s: float
) -> ViewAnswer:
    """An owner's answer for ``keys`` of its view, asked in its query concurrency group (beside its batches; the
    position-wait group when it waits up to ``wait_s`` for ``min_position``); :class:`OwnerGone` when it died,
    does not own the keys (a rescale moves them) or gave no answer within ``timeout_s`` (its node cut off before
    Ray declared it dead)."""
    group = QUERY_GROUP if min_position is None else POSITION_WAIT_GROUP
    call = actor.query.options(concurrency_group=group).remote(keys, consistency, min_position, wait_s)
    try:
        answer: ViewAnswer = await asyncio.wait_for(call, timeout_s)
    except (TimeoutError, asyncio.TimeoutError):
        raise OwnerGone(f"no answer within {timeout_s:.1f} s") from None
    except ray.exceptions.RayError as error:
        if actor_died(error) or any(isinstance(cause, NotOwner) for cause in causes(error)):
            raise OwnerGone(str(error).splitlines()[0]) from None
        raise
    return answer


class QueryRouterHandle:
    """A pipeline's view of the query router it publishes to (:mod:`cluster.cqrs.router`). A router that died
    (with its node) answers False to :meth:`update`: the caller makes another."""

    def __init__(self, config: PipelineConfig, name: str) -> None:
        self._actor = remote_query_router(name).remote(config)

    async def serve(self) -> int:
        port: int = await self._actor.serve.remote()
        return port

    async def served(self) -> str:
        served: str = await self._actor.served.remote()
        return served

    async def update(self, table: Any, claim: bool) -> list[str] | None:
        """The views the router serves from ``table``; None when the router died."""
        try:
            served: list[str] = await self._actor.update.remote(table, claim)
        except ray.exceptions.RayActorError:
            return None
        return served

    def suspend(self, pipeline: str) -> None:
        """Not awaited: the Supervisor is recovering (a router found dead is replaced at the next update)."""
        self._actor.suspend.remote(pipeline)

    async def withdraw(self, pipeline: str) -> bool:
        """Forget the pipeline's owners; True when no pipeline is left on the router (or it is gone)."""
        try:
            return bool(await asyncio.wait_for(self._actor.withdraw.remote(pipeline), timeout=10))
        except ray.exceptions.RayActorError:
            return True
        except TimeoutError:  # a router too busy to answer may serve another pipeline: left running
            return False

    def kill(self) -> None:
        with contextlib.suppress(ray.exceptions.RayError):
            ray.kill(self._actor, no_restart=True)


class SupervisorHandle:
    """The driver's view of a Supervisor actor: start a run, poll it, stop it, collect its summary."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._run: Any = None

    def start(self) -> None:
        self._run = self._actor.run.remote()

    def wait(self, timeout_s: float) -> bool:
        """True once the run has ended (successfully or not)."""
        ready, _ = ray.wait([self._run], timeout=timeout_s)
        return bool(ready)

    def progress(self) -> Any:
        return ray.get(self._actor.progress.remote())

    def stop(self) -> None:
        ray.get(self._actor.stop.remote())

    def result(self) -> Any:
        """The run's summary; an actor's :class:`FatalError` is re-raised as itself, not as a RayTaskError."""
        try:
            return ray.get(self._run)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def shutdown(self) -> None:
        try:
            ray.get(self._actor.shutdown.remote())
        except ray.exceptions.RayActorError:
            pass  # it died: Ray killed the actors it owned with it
        finally:
            ray.kill(self._actor, no_restart=True)
