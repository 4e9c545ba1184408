"""The joins of configs/orders_enriched.yaml (temporal and window; orders on 8 partitions, inventory on 3)
under SIGKILLs of source and join actors: exactly once, every result equal to ``eventray verify``'s
plain-Python recomputation of the join over what was read (0 lost, 0 duplicated, 0 wrongly joined)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config.pipeline import PipelineConfig, parse_config
from tests.chaos.chaos_tools import ScheduledKiller, planned_kills
from tests.chaos.test_recovery import PACED_RUN_S, run_until_the_kills_are_behind, verified
from tests.integration.pipelines_under_test import START_TIME_MS, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.chaos, pytest.mark.ray, pytest.mark.slow]

ENRICHED_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_enriched.yaml"


def chaos_join(tmp_path: Path, events: int, **keyed: Any) -> PipelineConfig:
    """configs/orders_enriched.yaml paced so that ``events`` arrive over PACED_RUN_S, exactly once, checkpointed
    every 500 ms; unbounded: it reads until it is stopped."""
    data: dict[str, Any] = yaml.safe_load(ENRICHED_YAML.read_text(encoding="utf-8"))
    for spec in data["inputs"].values():
        spec["source"].update(rate_per_s=max(1, events // PACED_RUN_S // 2), start_time_ms=START_TIME_MS)
    data["keyed"].update(keyed)
    data.update(
        name=unique("chaos-join"),
        delivery="exactly_once",
        sinks=[{"type": "jsonl", "path": str(tmp_path / "enriched")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        runtime={"duration_s": None, "source_actors": 2, "aggregate_actors": 2, "batch_size": 2_048},
        tracing={"enabled": False},
    )
    return parse_config(data)


@pytest.mark.parametrize(
    "keyed",
    # the interval join runs on the window join's operator (IntervalJoin): in process it is checked on its own
    [{}, {"mode": "window", "size_ms": 1_000}],
    ids=["temporal", "window"],
)
def test_a_join_of_8_and_3_partitions_is_exactly_once_under_kills_of_sources_and_joins(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int, keyed: dict[str, Any]
) -> None:
    events = chaos_events // 3
    config = chaos_join(tmp_path, events, **keyed)
    plan = planned_kills(events, kills=2)
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, seed=5) as killer:
        summary = run_until_the_kills_are_behind(config, ray_driver, killer, events)

    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) >= len(plan), f"each kill was recovered: {summary.recoveries_s}, {killer.killed}"
    report = verified(config)
    assert summary.progress.events_in == report.input_records >= events
    assert report.failures("exactly_once") == []
    output = report.outputs[0]
    assert output.rows > events // 4, "the orders (half the events) came out joined"
    assert output.duplicated.count == output.lost.count == output.wrong.count == 0
    assert report.dead_letters.duplicated.count == 0 and report.dead_letters.missing.count == 0
