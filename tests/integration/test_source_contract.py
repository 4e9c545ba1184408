"""One set of behavioural tests, bound to every source: the generator, files, and Kafka.

Each binding holds the same events (the generator's, seed 42, 8 partitions); every test runs a real pipeline
on the session's Ray cluster and checks what came out against what went in.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.commands.produce import produce_events
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.io.generator import generate_events
from pipelines.stages.topology import partition_limits
from tests.integration.pipelines_under_test import (
    PARTITIONS,
    START_TIME_MS,
    connection,
    generator_source,
    orders_with,
    passthrough,
    unique,
)
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir, reference_orders

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVENTS = 40_000
GENERATOR = GeneratorSourceConfig(partitions=PARTITIONS, seed=42, rate_per_s=None)


@dataclass(frozen=True)
class BoundSource:
    """A source holding the contract's events, as pipeline config sections."""

    source: dict[str, Any]
    kafka: dict[str, Any] | None
    bounded_by: dict[str, Any]


def _bind_generator(_: pytest.FixtureRequest, __: Path) -> BoundSource:
    return BoundSource(generator_source(), None, {"max_events": EVENTS})


def _bind_files(_: pytest.FixtureRequest, folder: Path) -> BoundSource:
    for partition, limit in partition_limits(PARTITIONS, EVENTS).items():
        assert limit is not None
        events = generate_events(GENERATOR, partition, 0, limit, START_TIME_MS)
        (folder / f"events-{partition}.jsonl").write_bytes(b"\n".join(events.payloads.to_pylist()) + b"\n")
    return BoundSource({"type": "file", "format": "jsonl", "paths": [str(folder / "events-*.jsonl")]}, None, {})


def _bind_kafka(request: pytest.FixtureRequest, _: Path) -> BoundSource:
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    topic = unique("contract")
    asyncio.run(produce_events(connection(bootstrap), topic, EVENTS, GENERATOR, None, START_TIME_MS))
    source = {"type": "kafka", "topic": topic, "start": "earliest"}
    return BoundSource(source, {"bootstrap_servers": bootstrap}, {"duration_s": 0.5})


@pytest.fixture(params=[pytest.param(_bind_generator, id="generator"), pytest.param(_bind_files, id="files"),
                        pytest.param(_bind_kafka, id="kafka", marks=pytest.mark.kafka)])  # fmt: skip
def bound(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BoundSource:
    binding = request.param
    return binding(request, tmp_path_factory.mktemp("contract-input"))  # type: ignore[no-any-return]


def _expected_invalid() -> int:
    return sum(
        int((generate_events(GENERATOR, p, 0, limit or 0, START_TIME_MS).invalid_kind != "").sum())
        for p, limit in partition_limits(PARTITIONS, EVENTS).items()
    )


@pytest.mark.parametrize("source_actors", [1, 3])
def test_every_valid_event_once_in_partition_order_and_every_invalid_one_dead_lettered(
    ray_driver: LocalRayCluster, bound: BoundSource, tmp_path: Path, source_actors: int
) -> None:
    config = passthrough(
        source=bound.source,
        sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")},
        runtime={"source_actors": source_actors, **bound.bounded_by},
        kafka=bound.kafka,
    )

    summary = run_pipeline(config, address=ray_driver.address)

    invalid = _expected_invalid()
    ids: Counter[str] = Counter()
    for part in sorted((tmp_path / "out").glob("part-*.jsonl")):
        offsets: dict[int, list[int]] = defaultdict(list)
        for line in part.read_text().splitlines():
            event = json.loads(line)
            ids[event["event_id"]] += 1
            offsets[event["_partition"]].append(event["_offset"])
        for partition, seen in offsets.items():
            assert seen == sorted(seen), f"{part.name}: partition {partition} out of order"
    assert summary.progress.events_in == EVENTS
    assert len(ids) == EVENTS - invalid and max(ids.values()) == 1
    dead = read_jsonl_dir(tmp_path / "dead")
    assert len(dead) == invalid == summary.progress.dead_lettered
    assert {row["error_type"] for row in dead} == {"undecodable", "invalid"}


def test_the_orders_aggregate_equals_the_reference(
    ray_driver: LocalRayCluster, bound: BoundSource, tmp_path: Path
) -> None:
    config = orders_with(bound.source, tmp_path, {"aggregate_actors": 2, **bound.bounded_by}, bound.kafka)

    summary = run_pipeline(config, address=ray_driver.address)

    expected, invalid = reference_orders(GENERATOR, partition_limits(PARTITIONS, EVENTS), START_TIME_MS, 10_000)
    actual = {
        (row["customer_id"], row["window_start_ms"]): {
            name: row[name] for name in ("orders", "revenue_cents", "avg_order_cents", "max_order_cents")
        }
        for row in read_jsonl_dir(tmp_path / "windows")
    }
    assert actual == expected
    assert summary.progress.dead_lettered == invalid
