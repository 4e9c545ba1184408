"""Two keyed stages on Ray, rescaled by the autoscaler and under SIGKILLs of their actors: revenue per customer
per 1 s window, then per customer per 10 s the windows with orders, their revenue and the best 1 s window.
Exactly once: every 10 s result is written once and equals a recomputation in plain Python from the generator's
events (tests/reference.py for the first stage), and ``eventray verify`` (its columnar recomputation of the
chain) finds nothing lost, duplicated or wrong, dead letters included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.examples.orders import orders_pipeline
from pipelines.stages.topology import partition_limits
from pipelines.testing import CrashAt
from tests.chaos.chaos_tools import ScheduledKiller, planned_kills
from tests.chaos.test_recovery import PACED_RUN_S, assert_exactly_once, verified
from tests.integration.pipelines_under_test import PARTITIONS, START_TIME_MS, unique
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import (
    WindowsOfWindows,
    read_jsonl_dir,
    reference_windows_of_windows,
    windows_of_windows_stage,
    written_windows_of_windows,
)

pytestmark = [pytest.mark.chaos, pytest.mark.ray, pytest.mark.slow]

FIRST_MS = 1_000
# bounds the first policy tick must meet: both stages go from 2 actors to 3 at once, then stay (cooldown)
RESCALE_TO_THREE = {
    "min_source_actors": 2,
    "max_source_actors": 2,
    "min_aggregate_actors": 3,
    "max_aggregate_actors": 3,
    "interval_s": 1.0,
    "cooldown_s": 600,
}
SECOND_MS = 10_000


def chain_under_kills(tmp_path: Path, events: int) -> PipelineConfig:
    """Bounded at ``events``, paced over PACED_RUN_S, 2 sources and 2 actors per stage rescaled to 3 by the first
    autoscaler tick, exactly once."""
    data = orders_pipeline().model_dump(mode="json", by_alias=True, exclude_none=True)
    first = data.pop("aggregate")
    first["window"] = {"type": "tumbling", "size_ms": FIRST_MS}
    second = windows_of_windows_stage(SECOND_MS)
    data.update(
        name=unique("chaos-stages"),
        source={"type": "generator", "partitions": PARTITIONS, "seed": 5, "rate_per_s": max(1, events // PACED_RUN_S),
                "invalid_fraction": 0.01, "start_time_ms": START_TIME_MS},
        stages=[{"aggregate": first}, {"aggregate": second}],
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        runtime={**data["runtime"], "duration_s": None, "max_events": events, "source_actors": 2,
                 "aggregate_actors": 2, "batch_size": 2_048, "autoscale": RESCALE_TO_THREE},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        delivery="exactly_once",
        tracing={"enabled": False},
    )  # fmt: skip
    return parse_config(data)


def recomputed(config: PipelineConfig, events: int) -> WindowsOfWindows:
    source = config.all_inputs[0].source
    assert isinstance(source, GeneratorSourceConfig)
    limits = partition_limits(PARTITIONS, events)
    return reference_windows_of_windows(source, limits, START_TIME_MS, FIRST_MS, SECOND_MS)


def run_rescaled_under_kills(
    ray_driver: LocalRayCluster, tmp_path: Path, config: PipelineConfig, events: int, seed: int
) -> list[dict[str, Any]]:
    """Run ``config`` with 2 planned kills of keyed-stage actors; check each was recovered, every event read,
    both stages rescaled once, each result counted once and exactly once by ``eventray verify``; return the
    rows written."""
    plan = planned_kills(events, kills=2)
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, kinds=("AggregateActor",), seed=seed) as killer:
        summary = run_pipeline(config, address=ray_driver.address)

    killer.assert_planned_kills_happened()
    # a kill made once a checkpoint had seen the whole input (a long recovery lets the paced input pile up, and
    # the rest is read at once) may land after the last epoch, when no actor is needed any more: no recovery
    mid_run = [kill for kill in killer.killed if kill.seen.events_in < events]
    assert mid_run, f"a kill landed while the input was being read: {killer.killed}"
    assert len(summary.recoveries_s) >= len(mid_run), f"each was recovered: {summary.recoveries_s}, {killer.killed}"
    assert summary.progress.events_in == events
    assert [rescale.aggregates for rescale in summary.rescales] == [(2, 3)], "both stages were rescaled, once"
    rows = read_jsonl_dir(tmp_path / "windows")
    assert summary.progress.windows_emitted == len(rows), "the last stage's results, each counted once"
    assert_exactly_once(verified(config), events)
    return rows


def test_two_keyed_stages_rescaled_exactly_once_under_kills_of_their_actors(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    events = chaos_events // 3  # the single-stage runs cover the long schedules; this one the chain
    config = chain_under_kills(tmp_path, events)

    rows = run_rescaled_under_kills(ray_driver, tmp_path, config, events, seed=2)

    assert written_windows_of_windows(rows) == recomputed(config, events)


def test_a_rescale_interrupted_by_a_crash_of_a_regrouped_actor_is_finished_by_the_recovery_exactly_once(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    """The first tick rescales both stages from 2 actors to 3; the first stage's actor 0 exits as it is regrouped
    (the second stage, placed first, has its new actor by then). The recovery starts 3 actors per stage from the
    last checkpoint and records the rescale once, through the recovery; the results are exactly once."""
    events = chaos_events // 3
    config = chain_under_kills(tmp_path, events)

    summary = run_pipeline(config, address=ray_driver.address, faults=(CrashAt("aggregate-0", 1, point="regroup"),))

    assert summary.recoveries_s, "the crash at the regroup, recovered"
    rescales = [(r.sources, r.aggregates, r.through_recovery) for r in summary.rescales]
    assert rescales == [((2, 2), (2, 3), True)], "the rescale was done by the recovery, and recorded once"
    assert summary.progress.events_in == events
    assert_exactly_once(verified(config), events)
    assert written_windows_of_windows(read_jsonl_dir(tmp_path / "windows")) == recomputed(config, events)


STAGED_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_payments_staged.yaml"


def staged_under_kills(tmp_path: Path, events: int) -> PipelineConfig:
    """configs/orders_payments_staged.yaml (payments deduplicated, then windows over the orders and the payments
    paid once): bounded at ``events`` over both inputs, paced over PACED_RUN_S, rescaled from 2 actors per stage
    to 3 by the first autoscaler tick, exactly once."""
    data = yaml.safe_load(STAGED_YAML.read_text(encoding="utf-8"))
    partitions = sum(spec["source"]["partitions"] for spec in data["inputs"].values())
    for spec in data["inputs"].values():
        share = events * spec["source"]["partitions"] // partitions
        spec["source"].update(rate_per_s=max(1, share // PACED_RUN_S), start_time_ms=START_TIME_MS)
    data.update(
        name=unique("chaos-staged"),
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        runtime={"duration_s": None, "max_events": events, "source_actors": 2, "aggregate_actors": 2,
                 "batch_size": 2_048, "autoscale": RESCALE_TO_THREE},
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        delivery="exactly_once",
        tracing={"enabled": False},
    )  # fmt: skip
    return parse_config(data)


def test_a_stage_fed_by_an_input_and_a_stage_rescaled_exactly_once_under_kills(
    ray_driver: LocalRayCluster, tmp_path: Path, chaos_events: int
) -> None:
    """The orders go straight to the windows, the payments through dedup first: the windows' actors take both
    the sources and the dedup actors as senders, through a rescale and kills of any keyed-stage actor."""
    events = chaos_events // 3
    config = staged_under_kills(tmp_path, events)
    assert config.stage_graph.input_stage == (1, 0)  # orders -> windows, payments -> dedup

    run_rescaled_under_kills(ray_driver, tmp_path, config, events, seed=3)
