"""A replay of a pre-filled topic over many partitions, read by one source actor: a partition that waits for its
turn is not idle, so no event is late and every window equals the offline recomputation (ARCHITECTURE.md
section 3). With idleness by time since the last event alone (Flink's ``withIdleness``), 40 % of such a replay
was marked late."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig
from tests.integration.pipelines_under_test import START_TIME_MS, connection, orders_with, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

BACKLOG_PARTITIONS = 24
# sized for CI; `eventray produce --events 1000000 --partitions 24` and the same run by hand gave the same result
BACKLOG_EVENTS = 240_000


def test_a_backlog_replay_over_many_partitions_marks_no_event_late(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("backlog")
    generator = GeneratorSourceConfig(partitions=BACKLOG_PARTITIONS, seed=5, rate_per_s=None, invalid_fraction=0.0)
    produced = asyncio.run(produce_events(connection(kafka_bootstrap), topic, BACKLOG_EVENTS, generator, None,
                                          START_TIME_MS))  # fmt: skip
    assert produced.events == BACKLOG_EVENTS
    config = orders_with(
        {"type": "kafka", "topic": topic, "group_id": topic, "start": "earliest"},
        tmp_path,
        # one actor visits 24 partitions in turn, each for one batch: a turn takes far longer than 300 ms
        {"source_actors": 1, "aggregate_actors": 1, "duration_s": 0.5, "batch_size": 1_024},
        kafka={"bootstrap_servers": kafka_bootstrap},
    )
    config = config.model_copy(
        update={"aggregate": config.aggregate.model_copy(update={"idle_timeout_ms": 300})}  # type: ignore[union-attr]
    )

    summary = run_pipeline(config, address=ray_driver.address)

    assert summary.progress.events_in == BACKLOG_EVENTS, "the drain read the whole backlog"
    assert summary.progress.late_events == 0
    report = asyncio.run(verify_run(config))
    assert report.failures("at_least_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0
    assert windows.missing.count == 0 and windows.extra.count == 0, "every window equals the recomputation"
