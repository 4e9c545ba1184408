"""Fault injection for the chaos suite: SIGKILL of actor processes of the session's Ray cluster, torn files.

Faults are scheduled by the run's progress (events read, checkpoint epochs), never by wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic
from actors.kafka.commit_markers import CommitMarker, commit_marker_topic
from cluster.commands.produce import produce_events
from cluster.control.actor_ids import ACTOR_ID
from cluster.control.run_report import RunSummary
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig
from tests.integration.pipelines_under_test import PARTITIONS, START_TIME_MS, connection
from tests.integration.ray_cluster import LocalRayCluster

ACTOR_KINDS = ("SourceActor", "AggregateActor")


def actor_processes(cluster: LocalRayCluster, kinds: tuple[str, ...]) -> list[psutil.Process]:
    """Live worker processes of this cluster (descendants of its ``ray start``) running one of ``kinds``."""
    found = []
    for process in psutil.Process(cluster.process.pid).children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(title.startswith(f"ray::{kind}") for kind in kinds):
            found.append(process)
    return found


@dataclass(frozen=True)
class Progress:
    """What the newest complete checkpoint says of a run: its epoch, events read, when it was written, and which
    topology wrote it: ``topology``, the Supervisor's attempt (1 for the first; each recovery starts the next, a
    rescale keeps it; a replaced Supervisor counts from 1 again), and ``incarnation``, the run id and attempt
    (``<run id>[s<restarts>]-<attempt>``), which every recovery changes, a Supervisor's replacement included."""

    epoch: int = 0
    events_in: int = 0
    created_at_s: float = 0.0
    topology: int = 0
    incarnation: str = ""


def checkpointed_progress(checkpoints: Path) -> Progress:
    """The newest complete checkpoint's progress under ``checkpoints`` (zeros before the first one).

    Progress is read from the metadata the Supervisor writes at each barrier, where the counts are exact, so a
    schedule built on it depends on how far the run got, never on how fast the machine is.
    """
    newest = Progress()
    for metadata in _checkpoint_files(checkpoints):
        try:
            data = json.loads(metadata.read_bytes())
        except (OSError, ValueError):  # pruned or replaced while we read it
            continue
        if data["epoch"] > newest.epoch:
            attempt, incarnation = _topology(data)
            newest = Progress(data["epoch"], data["counts"]["events_in"], data["created_at_s"], attempt, incarnation)
    return newest


def _topology(checkpoint: dict[str, Any]) -> tuple[int, str]:
    """The newest attempt number in the checkpoint's actor ids, and its run id with it
    (:mod:`cluster.control.actor_ids`)."""
    actor_ids = [actor["actor_id"] for actor in [*checkpoint["sources"], *checkpoint["aggregates"]]]
    found = (ACTOR_ID.match(actor_id) for actor_id in actor_ids)
    return max(((int(m["attempt"]), f"{m['run']}-{m['attempt']}") for m in found if m is not None), default=(0, ""))


def _checkpoint_files(checkpoints: Path) -> list[Path]:
    """Every ``_checkpoint.json`` under ``checkpoints``. The store prunes old epochs while we walk, and a
    directory that vanishes mid-walk makes the walk raise: walk again (a pruning is over in milliseconds)."""
    while True:
        try:
            return list(checkpoints.rglob("_checkpoint.json"))
        except FileNotFoundError:  # noqa: PERF203 - a retry, not a hot loop
            continue


@dataclass(frozen=True)
class KillRecord:
    planned_at_events: int
    seen: Progress  # the checkpointed progress that released the kill
    victim: str


@dataclass(eq=False)  # a Thread must stay hashable
class ScheduledKiller(threading.Thread):
    """SIGKILLs one random process of ``kinds`` at each point of ``plan``: a number of events read, as the
    newest complete checkpoint counts them (:func:`checkpointed_progress`).

    Each kill waits for the topology to have recovered from the one before (a complete checkpoint written after
    it by another topology), so every kill hits a running topology and is recovered on its own. ``start_when``
    is a further condition for the first kill. After the run, :meth:`assert_planned_kills_happened` fails with
    the kills that did not happen and the progress last seen: a run that ended first was sized too small for
    its schedule.
    """

    cluster: LocalRayCluster
    checkpoints: Path
    plan: list[int]
    kinds: tuple[str, ...] = ACTOR_KINDS
    seed: int = 7
    start_when: Callable[[], bool] | None = None
    after_each_kill: Callable[[int], None] | None = None  # called with the kill's index once it is recovered
    suspend: bool = False  # SIGSTOP instead of SIGKILL: alive but silent (the watchdog must find it)
    suspended: list[psutil.Process] = field(default_factory=list)
    killed: list[KillRecord] = field(default_factory=list)
    last_seen: Progress = Progress()
    error: BaseException | None = None

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="chaos-killer", daemon=True)
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            self._run_plan()
        except BaseException as error:  # the assertions after the run say so, instead of a silent thread death
            self.error = error
            raise

    def _run_plan(self) -> None:
        rng = random.Random(self.seed)
        if not self._wait_for(lambda: self.start_when is None or self.start_when()):
            return
        for index, at_events in enumerate(self.plan):
            if not self._wait_for(partial(self._has_read, at_events)):
                return
            victim = self._kill_one(rng)
            if victim is None:
                return
            killed_at_s, seen = time.time(), self.last_seen
            self.killed.append(KillRecord(at_events, seen, victim))
            if not self._wait_for(partial(self._recovered_since, killed_at_s, seen.incarnation)):
                return  # the run ended before it recovered: the assertions on the run's summary will say so
            if self.after_each_kill is not None:
                self.after_each_kill(index)

    def _has_read(self, events: int) -> bool:
        return self._observe().events_in >= events

    def _recovered_since(self, killed_at_s: float, incarnation: str) -> bool:
        """A complete checkpoint written after the kill by another topology (a recovery, or a replaced
        Supervisor, starts one). Counting epochs instead is no proof (the epoch in flight may complete without
        the victim, which had acked) and costs a checkpoint: after a long recovery the paced input has piled up,
        and a run that read the rest in two epochs ended before the next planned kill."""
        progress = self._observe()
        return progress.created_at_s > killed_at_s and progress.incarnation != incarnation

    def _observe(self) -> Progress:
        self.last_seen = checkpointed_progress(self.checkpoints)
        return self.last_seen

    def _wait_for(self, condition: Callable[[], bool]) -> bool:
        """Poll ``condition`` until it holds (True) or the killer is stopped (False)."""
        while not condition():
            if self._stop_event.wait(0.05):
                return False
        return True

    def _kill_one(self, rng: random.Random) -> str | None:
        while not self._stop_event.is_set():
            victims = actor_processes(self.cluster, self.kinds)
            if victims:
                victim = rng.choice(victims)
                try:
                    title = " ".join(victim.cmdline())
                    if self.suspend:
                        victim.suspend()  # SIGSTOP: the process stays, answering nothing
                        self.suspended.append(victim)
                    else:
                        victim.kill()  # SIGKILL: no cleanup, no flush
                except psutil.NoSuchProcess:
                    continue
                return title
            self._stop_event.wait(0.05)
        return None

    def assert_planned_kills_happened(self) -> None:
        missing = self.plan[len(self.killed) :]
        assert self.error is None, f"the killer failed: {self.error!r}"
        assert not missing, (
            f"planned kills at {missing} events read did not happen ({len(self.killed)} of {len(self.plan)} did); "
            f"the run ended at checkpoint {self.last_seen.epoch} with {self.last_seen.events_in} events read: "
            "give the run more input for this schedule"
        )

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        for victim in self.suspended:  # one the run did not kill would hold up the cluster's shutdown
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.kill()

    def __enter__(self) -> ScheduledKiller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def planned_kills(events: int, kills: int, first: float = 0.15, last: float = 0.5) -> list[int]:
    """``kills`` points evenly between fractions ``first`` and ``last`` of a run's input (events read)."""
    if kills == 1:
        return [int(events * first)]
    step = (last - first) / (kills - 1)
    return [int(events * (first + i * step)) for i in range(kills)]


def try_leaving_torn_state_file(checkpoints: Path) -> Path | None:
    """If a complete checkpoint with a non-empty state file exists, leave half of that file in a newer epoch
    directory without metadata (what a crash in the middle of writing the next snapshot leaves behind) and
    return its path; None when there is no such checkpoint yet."""
    complete = sorted(path.parent for path in _checkpoint_files(checkpoints))
    if not complete:
        return None
    states = [state for state in sorted(complete[-1].glob("state-*.arrow")) if state.stat().st_size > 4096]
    if not states:
        return None
    try:
        data = states[0].read_bytes()
    except OSError:  # pruned meanwhile: the next call finds a newer checkpoint
        return None
    epoch = int(complete[-1].name.removeprefix("epoch-"))
    torn_dir = complete[-1].parent / f"epoch-{epoch + 1000:06d}"  # far ahead: the Supervisor never writes it
    torn_dir.mkdir(exist_ok=True)
    torn = torn_dir / states[0].name
    torn.write_bytes(data[: len(data) // 2])
    return torn


class ProduceGates:
    """Holds a producer at fractions of its input until each gate's condition holds (``on_progress`` of
    :func:`cluster.commands.produce.produce_events`): the input cannot end before the faults planned ahead of it."""

    def __init__(self, events: int, gates: list[tuple[float, Callable[[], bool]]], timeout_s: float = 300) -> None:
        self._gates = [(int(events * fraction), condition) for fraction, condition in gates]
        self._opened = [False] * len(gates)
        self._timeout_s = timeout_s
        self._release_all = threading.Event()

    def hold_at_gate(self, sent: int) -> None:
        for index, (limit, condition) in enumerate(self._gates):
            if sent < limit or self._opened[index]:
                continue
            deadline = time.monotonic() + self._timeout_s
            while not (self._release_all.is_set() or condition()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the producer waited {self._timeout_s} s at {limit} events for its gate")
                time.sleep(0.05)
            self._opened[index] = True

    def release_all(self) -> None:
        self._release_all.set()


def run_with_gated_input(
    cluster: LocalRayCluster, config: PipelineConfig, bootstrap: str, events: int, seed: int, gate: Callable[[], bool]
) -> RunSummary:
    """Run ``config`` (reading ``<config.name>.in``) while ``events`` generator events are produced to that topic,
    held at 30 % until ``gate`` holds (it applies a fault once a checkpoint is complete, say); return the
    run's summary once the input is all produced and read."""
    gates = ProduceGates(events, [(0.3, gate)])
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=seed, rate_per_s=None, event_time_rate_per_s=1_000,
                                      invalid_fraction=0.01)  # fmt: skip
    producing = threading.Thread(
        target=lambda: asyncio.run(produce_events(connection(bootstrap), f"{config.name}.in", events, generator,
                                                  10_000, START_TIME_MS, on_progress=gates.hold_at_gate)),
        daemon=True,
    )  # fmt: skip
    producing.start()
    try:
        return run_pipeline(config, address=cluster.address)
    finally:
        gates.release_all()
        producing.join(timeout=120)


def orders_output_slots(aggregates: int = 2, sources: int = 2) -> list[str]:
    """The exactly-once output slots of the orders pipeline with Kafka sink and dead letters, as markers name
    them: each aggregate's sink and its late-event dead letters, each source's dead letters."""
    slots = [f"aggregate-{n}{late}/{output}" for n in range(aggregates)
             for late, output in (("", "sink-0"), ("-late", "dead-letter"))]  # fmt: skip
    return slots + [f"source-{n}/dead-letter" for n in range(sources)]


async def leave_markers_of_an_earlier_location(bootstrap: str, pipeline: str, epoch: int) -> None:
    """Committed markers of every orders slot (:func:`orders_output_slots`) at ``epoch``, as an earlier
    checkpoint location's long run leaves them: in the format before lineages (key = slot) and in another
    lineage."""
    await ensure_topic(connection(bootstrap), commit_marker_topic(pipeline), 1, compacted=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for slot in orders_output_slots():
            for marker in (CommitMarker(slot, epoch), CommitMarker(slot, epoch, "an-earlier-location")):
                await producer.send(commit_marker_topic(pipeline), marker.value(), key=marker.key(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
