"""configs/orders_two_stages.yaml on a real broker: an at-least-once producer delivered a range of events twice,
and the pipeline deduplicates by event id (stage 0, shuffled by event_id, 1 actor), then sums per customer per
window (stage 1, shuffled by customer_id, 3 actors), exactly once into a Kafka topic. ``eventray verify``
recomputes the chain from the topic (duplicates included) and finds every window once and right."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, parse_config
from tests.integration.pipelines_under_test import PARTITIONS, START_TIME_MS, connection, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

TWO_STAGES_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_two_stages.yaml"
EVENTS = 24_000
REPLAYED = 8_000  # the first events of every partition, produced again


def test_dedup_then_windows_on_kafka_counts_replayed_events_once_exactly_once(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("orders-replayed")
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=9, rate_per_s=None, start_time_ms=START_TIME_MS)
    for count in (EVENTS, REPLAYED):  # the second call produces the same first events again (same ids)
        asyncio.run(produce_events(connection(kafka_bootstrap), topic, count, generator, None, START_TIME_MS))
    data: dict[str, Any] = yaml.safe_load(TWO_STAGES_YAML.read_text(encoding="utf-8"))
    name = unique("two-stages")
    data.update(
        name=name,
        source={"type": "kafka", "topic": topic, "group_id": name, "start": "earliest"},
        sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
        dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
        kafka={"bootstrap_servers": kafka_bootstrap},
        delivery="exactly_once",
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        runtime={"source_actors": 2, "aggregate_actors": 2, "duration_s": None, "max_events": EVENTS + REPLAYED},
        tracing={"enabled": False},
    )
    data["stages"][0]["actors"], data["stages"][1]["actors"] = 1, 3
    config = parse_config(data)

    summary = run_pipeline(config, address=ray_driver.address)

    assert summary.progress.events_in == EVENTS + REPLAYED
    assert summary.progress.dropped_intended > 0, "the replayed orders were dropped by the first stage"
    report = asyncio.run(verify_run(config))
    assert report.input_records == EVENTS + REPLAYED
    assert report.failures("exactly_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0 and windows.emissions == windows.expected
    assert summary.progress.windows_emitted == windows.emissions


STAGED_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_payments_staged.yaml"


def test_a_stage_fed_by_a_topic_and_a_stage_on_kafka_exactly_once(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """configs/orders_payments_staged.yaml on two topics, both with a range produced twice: the payments are
    deduplicated (stage 0, 1 actor), the orders are not (their repeats count twice); the windows (stage 1, 3
    actors) take both, exactly once into a topic, and ``eventray verify`` recomputes the tree from the topics."""
    topics = {"orders": unique("orders-staged"), "payments": unique("payments-staged")}
    for topic, seed, prefix in zip(topics.values(), (42, 7), ("o", "p"), strict=True):
        generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=seed, rate_per_s=None,
                                          start_time_ms=START_TIME_MS, event_id_prefix=prefix)  # fmt: skip
        for count in (EVENTS, REPLAYED):
            asyncio.run(produce_events(connection(kafka_bootstrap), topic, count, generator, None, START_TIME_MS))
    data: dict[str, Any] = yaml.safe_load(STAGED_YAML.read_text(encoding="utf-8"))
    name = unique("staged")
    for input_name, topic in topics.items():
        data["inputs"][input_name]["source"] = {"type": "kafka", "topic": topic, "group_id": name, "start": "earliest"}
    data.update(
        name=name,
        sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
        dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
        kafka={"bootstrap_servers": kafka_bootstrap},
        delivery="exactly_once",
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3},
        runtime={"source_actors": 2, "aggregate_actors": 2, "duration_s": None, "max_events": 2 * (EVENTS + REPLAYED)},
        tracing={"enabled": False},
    )
    data["stages"][0]["actors"], data["stages"][1]["actors"] = 1, 3
    config = parse_config(data)

    summary = run_pipeline(config, address=ray_driver.address)

    assert summary.progress.events_in == 2 * (EVENTS + REPLAYED)
    assert summary.progress.dropped_intended > 0, "the replayed payments were dropped by the dedup stage"
    report = asyncio.run(verify_run(config))
    assert report.input_records == 2 * (EVENTS + REPLAYED)
    assert report.failures("exactly_once") == []
    windows = report.outputs[0].windows
    assert windows is not None and windows.expected > 0 and windows.emissions == windows.expected
