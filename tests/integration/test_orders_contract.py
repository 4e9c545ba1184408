"""The orders pipeline gives the same results however it is run: its stages in this process
(:func:`pipelines.testing.run_stages`), one source and one aggregate actor on a local Ray cluster, or several of
each; each run equals a plain-Python reference (:mod:`tests.reference`) exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import PipelineConfig
from pipelines.examples.orders import orders_pipeline
from pipelines.stages.topology import partition_limits
from pipelines.testing import run_stages
from tests.reference import read_jsonl_dir, reference_orders

EVENTS = 200_000
START_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so the reference sees the same events
ON_RAY = [pytest.mark.ray, pytest.mark.slow]


@dataclass(frozen=True)
class Outcome:
    """What a run wrote and counted, whichever way it ran."""

    windows: list[dict[str, Any]]
    dead_letters: int
    events_in: int
    late_events: int
    windows_emitted: int


Runner = Callable[[PipelineConfig, pytest.FixtureRequest], Outcome]


def in_process(config: PipelineConfig, request: pytest.FixtureRequest) -> Outcome:
    run = run_stages(config, senders=config.runtime.source_actors, owners=config.runtime.aggregate_actors)
    windows = run.results.rows()
    late = len(run.late.rows())
    return Outcome(windows, len(run.dead_letters.rows()), run.events_in, late, len(windows))


def on_ray(config: PipelineConfig, request: pytest.FixtureRequest) -> Outcome:
    ray_driver = request.getfixturevalue("ray_driver")
    summary = run_pipeline(config, address=ray_driver.address)
    sink = config.sinks[-1]
    dead_letter = config.dead_letter
    assert sink.type == "jsonl" and dead_letter.type == "jsonl"
    dead = read_jsonl_dir(Path(dead_letter.path))
    assert len(dead) == summary.progress.dead_lettered, "every dead letter counted is written"
    assert len(summary.preview) == 5 and summary.preview == sorted(
        summary.preview, key=lambda row: row["revenue_cents"], reverse=True
    )
    progress = summary.progress
    windows = read_jsonl_dir(Path(sink.path))
    return Outcome(windows, len(dead), progress.events_in, progress.late_events, progress.windows_emitted)


@pytest.mark.parametrize(
    ("runner", "sources", "aggregates"),
    [
        pytest.param(in_process, 2, 3, id="stages-in-process-2x3"),
        pytest.param(on_ray, 1, 1, marks=ON_RAY, id="ray-1x1"),
        pytest.param(on_ray, 2, 3, marks=ON_RAY, id="ray-2x3"),
    ],
)
def test_orders_equal_the_reference_however_they_run(
    request: pytest.FixtureRequest, tmp_path: Path, runner: Runner, sources: int, aggregates: int
) -> None:
    config = orders_pipeline(
        runtime__max_events=EVENTS,
        runtime__duration_s=None,
        runtime__source_actors=sources,
        runtime__aggregate_actors=aggregates,
        source__rate_per_s=None,
        source__start_time_ms=START_TIME_MS,
        dead_letter__path=str(tmp_path / "dead_letter"),
        sinks=[
            {"type": "console", "top": 5, "sort_by": "revenue_cents"},
            {"type": "jsonl", "path": str(tmp_path / "windows")},
        ],
    )

    outcome = runner(config, request)

    source = config.source
    assert source is not None and source.type == "generator"
    expected, invalid = reference_orders(source, partition_limits(source.partitions, EVENTS), START_TIME_MS, 10_000)
    actual = {
        (row["customer_id"], row["window_start_ms"]): {
            name: row[name] for name in ("orders", "revenue_cents", "avg_order_cents", "max_order_cents")
        }
        for row in outcome.windows
    }
    assert len(outcome.windows) == len(actual), "a (customer, window) was emitted more than once"
    assert actual == expected
    assert outcome.dead_letters == invalid
    assert outcome.events_in == EVENTS
    assert outcome.late_events == 0
    assert outcome.windows_emitted == len(expected)
