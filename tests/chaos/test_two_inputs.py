"""The two-input pipeline (orders and payments, configs/orders_payments.yaml) under SIGKILLs of source and
aggregate actors: exactly once, every window equal to a recomputation from both inputs (``eventray verify``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config.pipeline import PipelineConfig, parse_config
from tests.chaos.chaos_tools import ScheduledKiller, planned_kills
from tests.chaos.test_recovery import PACED_RUN_S, assert_exactly_once, run_until_the_kills_are_behind, verified
from tests.integration.pipelines_under_test import START_TIME_MS, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.chaos, pytest.mark.ray, pytest.mark.slow]

TWO_INPUTS_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_payments.yaml"


def chaos_two_inputs(tmp_path: Path, events: int) -> PipelineConfig:
    """configs/orders_payments.yaml paced so that ``events`` arrive over PACED_RUN_S, exactly once, checkpointed
    every 500 ms, 1 s windows (every epoch emits some); unbounded: it reads until it is stopped."""
    data: dict[str, Any] = yaml.safe_load(TWO_INPUTS_YAML.read_text(encoding="utf-8"))
    for spec in data["inputs"].values():  # both inputs at the same pace, each over its own partitions
        spec["source"].update(rate_per_s=max(1, events // PACED_RUN_S // 2), start_time_ms=START_TIME_MS)
    data["aggregate"]["window"]["size_ms"] = 1_000
    data.update(
        name=unique("chaos-two"),
        delivery="exactly_once",
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        runtime={"duration_s": None, "source_actors": 2, "aggregate_actors": 2, "batch_size": 2_048},
        tracing={"enabled": False},
    )
    return parse_config(data)


def test_two_inputs_exactly_once_under_kills_of_sources_and_aggregates(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    events = chaos_events // 3  # the single-input runs cover the long schedules; this one the second input
    config = chaos_two_inputs(tmp_path, events)
    plan = planned_kills(events, kills=2)
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, seed=3) as killer:
        summary = run_until_the_kills_are_behind(config, ray_driver, killer, events)

    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) >= len(plan), f"each kill was recovered: {summary.recoveries_s}, {killer.killed}"
    report = verified(config)
    assert summary.progress.events_in == report.input_records >= events
    assert_exactly_once(report, report.input_records)
