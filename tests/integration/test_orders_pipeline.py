"""The orders pipeline on a local Ray cluster equals a plain-Python reference, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.control.assignment import partition_limits
from cluster.control.runner import run_pipeline
from pipelines.examples.orders import orders_pipeline
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir, reference_orders

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVENTS = 200_000
START_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so the reference sees the same events


@pytest.mark.parametrize("aggregate_actors", [1, 3])
def test_orders_aggregates_equal_the_reference(
    ray_driver: LocalRayCluster, tmp_path: Path, aggregate_actors: int
) -> None:
    config = orders_pipeline(
        runtime__max_events=EVENTS,
        runtime__duration_s=None,
        runtime__aggregate_actors=aggregate_actors,
        source__rate_per_s=None,
        source__start_time_ms=START_TIME_MS,
        dead_letter__path=str(tmp_path / "dead_letter"),
        sinks=[
            {"type": "console", "top": 5, "sort_by": "revenue_cents"},
            {"type": "jsonl", "path": str(tmp_path / "windows")},
        ],
    )

    summary = run_pipeline(config, address=ray_driver.address)

    expected, invalid = reference_orders(
        config.source,  # type: ignore[arg-type]
        partition_limits(config.source.partitions, EVENTS),  # type: ignore[union-attr]
        START_TIME_MS,
        10_000,
    )
    rows = read_jsonl_dir(tmp_path / "windows")
    actual = {
        (row["customer_id"], row["window_start_ms"]): {
            name: row[name] for name in ("orders", "revenue_cents", "avg_order_cents", "max_order_cents")
        }
        for row in rows
    }
    assert len(rows) == len(actual), "a (customer, window) was emitted more than once"
    assert actual == expected
    dead = read_jsonl_dir(tmp_path / "dead_letter")
    assert len(dead) == invalid == summary.progress.dead_lettered
    assert summary.progress.events_in == EVENTS
    assert summary.progress.late_events == 0
    assert summary.progress.windows_emitted == len(expected)
    assert len(summary.preview) == 5
    assert summary.preview[0]["revenue_cents"] == max(value["revenue_cents"] for value in expected.values())
