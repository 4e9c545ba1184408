"""The chaos suite: runs of >= 100,000 events while actor processes are SIGKILLed, the Supervisor is killed, a
crash is injected between producing and committing, and a torn snapshot file is left behind. Every run is
checked by the delivery checker (``eventray verify``): lost, duplicated, aborted-read and out-of-order events,
and every window recomputed from the input.

``pytest -m chaos`` runs it (it is part of ``make test``); ``--chaos-events N`` makes the runs larger.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.examples.orders import orders_pipeline
from pipelines.testing import CrashAt
from pipelines.verify.delivery_check import DeliveryReport
from tests.chaos.chaos_tools import (
    ProduceGates,
    ScheduledKiller,
    checkpointed_progress,
    leave_markers_of_an_earlier_location,
    planned_kills,
    try_leaving_torn_state_file,
)
from tests.integration.pipelines_under_test import (
    PARTITIONS,
    START_TIME_MS,
    connection,
    create_topic,
    topic_records,
    unique,
)
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.chaos, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


# The generator is paced (events / PACED_RUN_S per second), so its input arrives over time as a live topic's
# would. Runs with scheduled kills read it unbounded and end by condition (``run_until_the_kills_are_behind``):
# once every planned kill happened and was recovered and at least ``events`` were read. The schedule therefore
# always fits, however slow the machine or a recovery is.
PACED_RUN_S = 20


def chaos_orders(tmp_path: Path, events: int, delivery: str, *, bounded: bool = False, **extra: Any) -> PipelineConfig:
    """The orders pipeline on the generator at ``events / PACED_RUN_S`` per second, checkpointed every 500 ms;
    ``bounded``: it ends after ``events``, else it reads until it is stopped."""
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    rate_per_s = max(1, events // PACED_RUN_S)
    data.update(
        name=unique("chaos"),
        source={"type": "generator", "partitions": PARTITIONS, "seed": 11, "rate_per_s": rate_per_s,
                "invalid_fraction": 0.01, "start_time_ms": START_TIME_MS},
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        runtime={**data["runtime"], "duration_s": None, "max_events": events if bounded else None,
                 "source_actors": 2, "aggregate_actors": 2, "batch_size": 2_048},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        delivery=delivery,
        tracing={"enabled": False},
    )  # fmt: skip
    data["aggregate"]["window"] = {"type": "tumbling", "size_ms": 1_000}  # many windows: every epoch emits some
    data.update(extra)
    return parse_config(data)


def kafka_exactly_once_orders(
    tmp_path: Path, events: int, name: str, bootstrap: str, kafka: dict[str, Any] | None = None, **extra: Any
) -> PipelineConfig:
    """:func:`chaos_orders` bounded, exactly once, reading ``<name>.in`` from its start and writing results
    (``<name>.out``) and dead letters (``<name>.dlq``) to Kafka; ``kafka`` adds to the connection settings."""
    return chaos_orders(
        tmp_path, events, "exactly_once", bounded=True,
        name=name,
        source={"type": "kafka", "topic": f"{name}.in", "group_id": name, "start": "earliest"},
        sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
        dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
        kafka={"bootstrap_servers": bootstrap, **(kafka or {})},
        **extra,
    )  # fmt: skip


def run_until_the_kills_are_behind(
    config: PipelineConfig, cluster: LocalRayCluster, killer: ScheduledKiller, events: int
) -> RunSummary:
    """Run ``config`` until ``killer`` made its planned kills and saw each recovered, and at least ``events`` were
    read; then the run drains (as after Ctrl-C) and its final checkpoint records where reading stopped."""

    def kills_behind(progress: RunProgress) -> bool:
        return not killer.is_alive() and progress.events_in >= events

    return run_pipeline(config, address=cluster.address, stop_when=kills_behind)


def verified(config: PipelineConfig) -> DeliveryReport:
    return asyncio.run(verify_run(config))


def assert_exactly_once(report: DeliveryReport, events: int) -> None:
    assert report.input_records == events
    assert report.failures("exactly_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0 and windows.duplicated.count == 0
    assert windows.emissions == windows.expected, "every window emitted exactly once"
    assert report.dead_letters.duplicated.count == 0 and report.dead_letters.missing.count == 0


def test_exactly_once_survives_repeated_kills_of_sources_and_aggregates(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    config = chaos_orders(tmp_path, chaos_events, "exactly_once")
    plan = planned_kills(chaos_events, kills=3)
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, seed=1) as killer:
        summary = run_until_the_kills_are_behind(config, ray_driver, killer, chaos_events)

    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) >= len(plan), f"each kill was recovered: {summary.recoveries_s}, {killer.killed}"
    report = verified(config)
    assert summary.progress.events_in >= chaos_events
    assert summary.progress.events_in == report.input_records, "the summary counts each event once across recoveries"
    assert_exactly_once(report, report.input_records)


def test_a_stopped_aggregate_and_a_stopped_source_are_killed_by_the_watchdog_and_recovered_exactly_once(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    """SIGSTOP leaves an actor process alive but silent: no RayActorError ever comes, and every call to it would
    wait for ever. The Supervisor's watchdog kills each one ``unresponsive_after_s`` after its last answer, and
    the topology is recovered from the last checkpoint as from a dead actor."""
    config = chaos_orders(tmp_path, chaos_events, "exactly_once")
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"unresponsive_after_s": 3.0})})
    first, second = planned_kills(chaos_events, kills=2)
    recovered: list[int] = []
    checkpoints = tmp_path / "checkpoints"
    aggregate = ScheduledKiller(ray_driver, checkpoints, [first], kinds=("AggregateActor",), seed=5, suspend=True,
                                after_each_kill=recovered.append)  # fmt: skip
    source = ScheduledKiller(ray_driver, checkpoints, [second], kinds=("SourceActor",), seed=6, suspend=True,
                             start_when=lambda: len(recovered) >= 1)  # fmt: skip

    def both_behind(progress: RunProgress) -> bool:
        return not aggregate.is_alive() and not source.is_alive() and progress.events_in >= chaos_events

    with aggregate, source:
        summary = run_pipeline(config, address=ray_driver.address, stop_when=both_behind)

    aggregate.assert_planned_kills_happened()
    source.assert_planned_kills_happened()
    assert "AggregateActor" in aggregate.killed[0].victim and "SourceActor" in source.killed[0].victim
    assert len(summary.recoveries_s) >= 2, f"each stopped actor was found and recovered: {summary.recoveries_s}"
    report = verified(config)
    assert_exactly_once(report, report.input_records)


def test_at_least_once_loses_nothing_under_kills_and_counts_its_duplicates(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    config = chaos_orders(tmp_path, chaos_events, "at_least_once")
    plan = planned_kills(chaos_events, kills=2)
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, seed=2) as killer:
        summary = run_until_the_kills_are_behind(config, ray_driver, killer, chaos_events)

    killer.assert_planned_kills_happened()
    report = verified(config)
    assert len(summary.recoveries_s) >= len(plan), f"each kill was recovered: {summary.recoveries_s}, {killer.killed}"
    assert report.failures("at_least_once") == [], "nothing lost, every window has a correct emission"
    windows = report.outputs[0].windows
    assert windows is not None and windows.missing.count == 0
    # windows flushed before a kill and emitted again after the restore are duplicates, counted and reported
    # (``duplicated`` counts windows; one emitted three times across two recoveries is one of them)
    assert windows.emissions >= windows.expected + windows.duplicated.count
    assert windows.extra.count == 0


def test_a_killed_supervisor_is_replaced_and_resumes_from_its_checkpoint(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    config = chaos_orders(tmp_path, chaos_events, "exactly_once")
    plan = planned_kills(chaos_events, kills=1, first=0.25)
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, kinds=("Supervisor",), seed=3) as killer:
        run_until_the_kills_are_behind(config, ray_driver, killer, chaos_events)

    killer.assert_planned_kills_happened()
    report = verified(config)
    # the replaced Supervisor resumed from a checkpoint and counts from there: the input is the checker's count
    assert report.input_records >= chaos_events
    assert_exactly_once(report, report.input_records)


def test_a_torn_snapshot_from_a_crash_mid_write_is_never_restored(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    """A crash while writing a state file leaves a torn file in an epoch that has no metadata; the next
    recovery must restore the newest complete epoch, never the torn file."""
    config = chaos_orders(tmp_path, chaos_events, "exactly_once")
    checkpoints = tmp_path / "checkpoints"
    torn: list[Path] = []

    def torn_file_left() -> bool:  # the kill's precondition: a torn file beside a complete checkpoint
        if not torn and (left := try_leaving_torn_state_file(checkpoints)) is not None:
            torn.append(left)
        return bool(torn)

    plan = planned_kills(chaos_events, kills=1, first=0.25)
    with ScheduledKiller(ray_driver, checkpoints, plan, kinds=("AggregateActor",), start_when=torn_file_left) as killer:
        summary = run_until_the_kills_are_behind(config, ray_driver, killer, chaos_events)

    assert torn, "a torn state file was left behind"
    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) == 1, summary.recoveries_s
    assert_exactly_once(verified(config), summary.progress.events_in)


def test_eventray_run_restarted_after_its_driver_was_killed_resumes_from_the_last_checkpoint(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    config = chaos_orders(tmp_path, chaos_events, "exactly_once", bounded=True)
    config_file = tmp_path / "chaos.yaml"
    config_file.write_text(config.to_yaml())
    command = [sys.executable, "-m", "cluster.cli", "run", str(config_file), "--address", ray_driver.address, "--quiet"]
    first = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    checkpoints = tmp_path / "checkpoints"
    kill_at = chaos_events // 4
    deadline = time.monotonic() + 300  # a generous bound: the condition is progress, not time
    while (seen := checkpointed_progress(checkpoints)).events_in < kill_at and first.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint with {kill_at} events read after 300 s; saw {seen}"
        time.sleep(0.1)
    assert first.poll() is None, f"the run ended before {kill_at} events were checkpointed: saw {seen}"
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies: its Supervisor and actors die with it
    first.wait(timeout=30)
    assert first.returncode != 0

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)

    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from checkpoint" in second.stdout
    assert_exactly_once(verified(config), chaos_events)


@pytest.mark.kafka
def test_kafka_exactly_once_survives_kills_and_a_crash_between_producing_and_committing(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path, chaos_events: int
) -> None:
    """Kafka in, Kafka out (results and dead letters in transactions). Events arrive live at 15,000/s while
    actors are killed, and aggregate-0 exits after the checkpoint of an epoch (the first from 4 on with outputs)
    is complete but before it commits its transaction: recovery must re-emit that epoch from the write-ahead
    exactly once.

    The input is released in parts, each only once the fault planned before it is behind, so the schedule
    always fits before the input ends, however fast or slow the machine is."""
    name = unique("chaos-kafka")
    topic = f"{name}.in"
    create_topic(kafka_bootstrap, topic)
    # 1 ms of event time per event: an epoch with input closes windows of many customers, so it has outputs
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=11, rate_per_s=None, event_time_rate_per_s=1_000,
                                      invalid_fraction=0.01)  # fmt: skip
    checkpoints = tmp_path / "checkpoints"
    recovered: list[int] = []
    gates = ProduceGates(chaos_events, [
        (0.2, lambda: checkpointed_progress(checkpoints).epoch >= 3),  # the rest arrives during epoch 4
        (0.4, lambda: len(recovered) >= 1),  # the first kill is behind
        (0.7, lambda: len(recovered) >= 2),  # the second kill is behind
    ])  # fmt: skip
    producing = threading.Thread(
        target=lambda: asyncio.run(
            produce_events(connection(kafka_bootstrap), topic, chaos_events, generator, 15_000, START_TIME_MS,
                           on_progress=gates.hold_at_gate)
        ),
        daemon=True,
    )  # fmt: skip
    crash = CrashAt("aggregate-0", epoch=4)
    config = kafka_exactly_once_orders(tmp_path, chaos_events, name, kafka_bootstrap)
    # the kills start once the injected crash is behind (the first epoch from 4 on in which aggregate-0 has
    # outputs, then a checkpoint of the recovered topology): a kill before it could restore a checkpoint past
    # epoch 4, which drops the fault, and the crash would never happen
    killer = ScheduledKiller(
        ray_driver, checkpoints, plan=[int(chaos_events * 0.25), int(chaos_events * 0.5)], seed=4,
        start_when=lambda: checkpointed_progress(checkpoints).topology >= 2, after_each_kill=recovered.append,
    )  # fmt: skip
    producing.start()
    killer.start()
    try:
        summary = run_pipeline(config, address=ray_driver.address, faults=(crash,))
    finally:
        killer.stop()
        gates.release_all()
        producing.join(timeout=60)

    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) >= 1 + len(killer.plan), f"the crash and each kill: {summary.recoveries_s}"
    assert summary.reemitted_rows > 0, "the interrupted commit was redone from the write-ahead"
    report = verified(config)
    assert_exactly_once(report, chaos_events)
    assert report.outputs[0].aborted_read.count == 0
    records = topic_records(kafka_bootstrap, f"{name}.out")
    assert all(dict(record.headers).get("eventray.epoch") for record in records), "each record names its epoch"


@pytest.mark.kafka
def test_markers_of_an_earlier_checkpoint_location_do_not_suppress_a_needed_redo(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Epoch numbers start again at 1 in a new checkpoint location, while the pipeline's commit-marker topic
    keeps the old location's markers (here epoch 1,000 of every slot). aggregate-0 exits after an early epoch's
    checkpoint is complete, before it commits its transaction: recovery must redo that epoch, not take the old
    markers for its commit, or the epoch's windows are lost."""
    events = 20_000
    name = unique("chaos-lineage")
    topic = f"{name}.in"
    create_topic(kafka_bootstrap, topic)
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=11, rate_per_s=None, event_time_rate_per_s=1_000,
                                      invalid_fraction=0.01)  # fmt: skip
    asyncio.run(produce_events(connection(kafka_bootstrap), topic, events, generator, None, START_TIME_MS))
    asyncio.run(leave_markers_of_an_earlier_location(kafka_bootstrap, name, epoch=1_000))
    config = kafka_exactly_once_orders(
        tmp_path, events, name, kafka_bootstrap,
        checkpoint={"interval_ms": 200, "uri": str(tmp_path / "checkpoints"), "keep": 3},
    )  # fmt: skip

    summary = run_pipeline(config, address=ray_driver.address, faults=(CrashAt("aggregate-0", epoch=1),))

    assert len(summary.recoveries_s) >= 1, "the injected crash, recovered"
    assert summary.reemitted_rows > 0, "the interrupted epoch was redone from the write-ahead"
    assert_exactly_once(verified(config), events)
