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
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cluster.produce import produce_events
from cluster.runner import run_pipeline
from cluster.verify import verify_run
from pipelines.config import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.delivery_check import DeliveryReport
from pipelines.orders import orders_pipeline
from tests.chaos.chaos_tools import Killer, actor_processes, leave_torn_state_file, newest_complete_epoch
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


def chaos_orders(tmp_path: Path, events: int, delivery: str, rate_per_s: int | None = 12_000, **extra: Any
                 ) -> PipelineConfig:  # fmt: skip
    """The orders pipeline on the generator (paced: 120,000 events take 10 s, so kills land mid-run),
    checkpointed every 500 ms."""
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    data.update(
        name=unique("chaos"),
        source={"type": "generator", "partitions": PARTITIONS, "seed": 11, "rate_per_s": rate_per_s,
                "invalid_fraction": 0.01, "start_time_ms": START_TIME_MS},
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        runtime={**data["runtime"], "duration_s": None, "max_events": events, "source_actors": 2,
                 "aggregate_actors": 2, "batch_size": 2_048},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        delivery=delivery,
        tracing={"enabled": False},
    )  # fmt: skip
    data["aggregate"]["window"] = {"type": "tumbling", "size_ms": 1_000}  # many windows: every epoch emits some
    data.update(extra)
    return parse_config(data)


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
    with Killer(ray_driver, kills=4, first_after_s=2.0, interval_s=2.0, seed=1) as killer:
        summary = run_pipeline(config, address=ray_driver.address)

    assert len(killer.killed) >= 3, killer.killed
    assert len(summary.recoveries_s) >= 3, "each kill (that hit a live actor) was recovered from a checkpoint"
    assert summary.progress.events_in == chaos_events, "the summary counts each event once across recoveries"
    assert_exactly_once(verified(config), chaos_events)


def test_at_least_once_loses_nothing_under_kills_and_counts_its_duplicates(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    config = chaos_orders(tmp_path, chaos_events, "at_least_once")
    with Killer(ray_driver, kills=3, first_after_s=2.0, interval_s=2.0, seed=2):
        summary = run_pipeline(config, address=ray_driver.address)

    report = verified(config)
    assert len(summary.recoveries_s) >= 2
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
    with Killer(ray_driver, kinds=("Supervisor",), kills=1, first_after_s=3.0, seed=3) as killer:
        run_pipeline(config, address=ray_driver.address)

    assert len(killer.killed) == 1
    assert_exactly_once(verified(config), chaos_events)


def test_a_torn_snapshot_from_a_crash_mid_write_is_never_restored(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    """A crash while writing a state file leaves a torn file in an epoch that has no metadata; the next
    recovery must restore the newest complete epoch, never the torn file."""
    config = chaos_orders(tmp_path, chaos_events, "exactly_once")
    torn: list[Path] = []

    def leave_torn_file_then_kill() -> None:
        torn.append(leave_torn_state_file(tmp_path / "checkpoints"))
        for victim in actor_processes(ray_driver, ("AggregateActor",))[:1]:
            victim.kill()

    worker = threading.Timer(3.0, leave_torn_file_then_kill)
    worker.start()
    try:
        summary = run_pipeline(config, address=ray_driver.address)
    finally:
        worker.join(timeout=40)

    assert torn, "a torn state file was left behind"
    assert len(summary.recoveries_s) == 1
    assert_exactly_once(verified(config), chaos_events)


def test_eventray_run_restarted_after_its_driver_was_killed_resumes_from_the_last_checkpoint(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    config = chaos_orders(tmp_path, chaos_events, "exactly_once")
    config_file = tmp_path / "chaos.yaml"
    config_file.write_text(config.to_yaml())
    command = [sys.executable, "-m", "cluster.cli", "run", str(config_file), "--address", ray_driver.address, "--quiet"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    first = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 60
    while len(list(checkpoints.rglob("_checkpoint.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies: its Supervisor and actors die with it
    first.wait(timeout=30)
    assert first.returncode != 0

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)

    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from checkpoint" in second.stdout
    assert_exactly_once(verified(config), chaos_events)


@pytest.mark.kafka
def test_kafka_exactly_once_survives_kills_and_a_crash_between_producing_and_committing(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path, chaos_events: int
) -> None:
    """Kafka in, Kafka out (results and dead letters in transactions). Events arrive live at 15,000/s while
    actors are killed, and aggregate-0 exits after epoch 4's checkpoint is complete but before it commits its
    transaction: recovery must re-emit that epoch from the write-ahead exactly once."""
    name = unique("chaos-kafka")
    topic = f"{name}.in"
    create_topic(kafka_bootstrap, topic)
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=11, rate_per_s=None, invalid_fraction=0.01)
    producing = threading.Thread(
        target=lambda: asyncio.run(
            produce_events(connection(kafka_bootstrap), topic, chaos_events, generator, 15_000, START_TIME_MS)
        ),
        daemon=True,
    )
    config = chaos_orders(
        tmp_path, chaos_events, "exactly_once",
        name=name,
        source={"type": "kafka", "topic": topic, "group_id": name, "start": "earliest"},
        sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
        dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
        kafka={"bootstrap_servers": kafka_bootstrap},
        faults=[{"point": "before_commit", "slot": "aggregate-0", "epoch": 4}],
    )  # fmt: skip
    # the kills start once the injected crash is behind (epoch 4, then recovery): a kill before it could make
    # the restored topology skip epoch 4's number, and the crash would never happen
    after_the_crash = partial(lambda path: newest_complete_epoch(path) >= 6, tmp_path / "checkpoints")
    killer = Killer(ray_driver, kills=2, first_after_s=2.0, interval_s=2.0, seed=4, start_when=after_the_crash)
    producing.start()
    killer.start()
    try:
        summary = run_pipeline(config, address=ray_driver.address)
    finally:
        killer.stop()
        producing.join(timeout=60)

    assert len(summary.recoveries_s) >= 2, "the injected crash and at least one kill were recovered"
    assert summary.reemitted_rows > 0, "the interrupted commit was redone from the write-ahead"
    report = verified(config)
    assert_exactly_once(report, chaos_events)
    assert report.outputs[0].aborted_read.count == 0
    records = topic_records(kafka_bootstrap, f"{name}.out")
    assert all(dict(record.headers).get("eventray.epoch") for record in records), "each record names its epoch"
