"""The temporal join of configs/orders_enriched.yaml on a local Ray cluster and a real broker: orders from a topic
of 8 partitions, inventory updates from a topic of 3, both pre-filled and read from earliest (a replay), the
inventory running 10 minutes ahead of the orders or 10 minutes behind them; exactly once to a Kafka topic
through a crash between producing and committing. ``eventray verify`` recomputes the join in plain Python
(pipelines/verify/join_check.py) and finds 0 lost, 0 duplicated, 0 wrongly joined; then it finds a tampered
output's faults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.testing import CrashAt
from tests.integration.pipelines_under_test import START_TIME_MS, connection, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ENRICHED_YAML = Path(__file__).resolve().parents[2] / "configs" / "orders_enriched.yaml"
PER_PARTITION = 2_500  # max_events is split evenly over the 11 pipeline partitions: each topic holds this many each
MINUTE_MS = 60_000


def enriched_from_topics(
    bootstrap: str, tmp_path: Path, inventory_start_ms: int, sinks: list[dict[str, Any]], dead_letter: dict[str, Any]
) -> PipelineConfig:
    """Orders (8 partitions, 2,000 events/s of event time: 10 s) and inventory (3 partitions, 12 events/s: about
    10 minutes from ``inventory_start_ms``) produced to two topics, joined from earliest, exactly once."""
    name = unique("enriched")
    orders = GeneratorSourceConfig(partitions=8, seed=42, rate_per_s=None, event_time_rate_per_s=2_000, skus=200,
                                   event_id_prefix="o")  # fmt: skip
    inventory = GeneratorSourceConfig(partitions=3, seed=7, rate_per_s=None, event_time_rate_per_s=12, skus=200,
                                      event_id_prefix="i")  # fmt: skip
    for topic, generator, start_ms in ((f"{name}.orders", orders, START_TIME_MS),
                                       (f"{name}.inventory", inventory, inventory_start_ms)):  # fmt: skip
        count = PER_PARTITION * generator.partitions
        asyncio.run(produce_events(connection(bootstrap), topic, count, generator, None, start_ms))
    data: dict[str, Any] = yaml.safe_load(ENRICHED_YAML.read_text(encoding="utf-8"))
    data["inputs"]["orders"]["source"] = {"type": "kafka", "topic": f"{name}.orders", "start": "earliest",
                                          "group_id": name}  # fmt: skip
    data["inputs"]["inventory"]["source"] = {"type": "kafka", "topic": f"{name}.inventory", "start": "earliest"}
    data.update(
        name=name,
        kafka={"bootstrap_servers": bootstrap},
        delivery="exactly_once",
        sinks=sinks,
        dead_letter=dead_letter,
        checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints")},
        runtime={"duration_s": None, "max_events": PER_PARTITION * 11, "source_actors": 2, "aggregate_actors": 2,
                 "batch_size": 1_000},
        tracing={"enabled": False},
    )  # fmt: skip
    return parse_config(data)


@pytest.mark.parametrize("inventory_shift_ms", [0, -11 * MINUTE_MS], ids=["table-10-min-ahead", "table-10-min-behind"])
def test_the_join_of_8_and_3_partitions_replayed_from_earliest_is_exactly_once_through_a_crash(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path, inventory_shift_ms: int
) -> None:
    config = enriched_from_topics(
        kafka_bootstrap,
        tmp_path,
        START_TIME_MS + inventory_shift_ms,
        sinks=[{"type": "kafka", "topic": f"{tmp_path.name}.enriched", "key_column": "sku"}],
        dead_letter={"type": "kafka", "topic": f"{tmp_path.name}.dlq"},
    )
    summary = run_pipeline(config, address=ray_driver.address, faults=(CrashAt("aggregate-1", epoch=1),))

    assert len(summary.recoveries_s) >= 1 and summary.reemitted_rows > 0, "the interrupted commit was redone"
    report = asyncio.run(verify_run(config))
    assert report.input_records == PER_PARTITION * 11 == summary.progress.events_in
    assert report.failures("exactly_once") == []
    output = report.outputs[0]
    assert output.rows > 9_000 and output.lost.count == output.duplicated.count == output.wrong.count == 0
    assert report.dead_letters.late.count == 0, "a replay marks nothing late: the watermark waits for both sides"


def test_verify_finds_a_wrongly_joined_a_lost_and_a_duplicated_result(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "enriched"
    config = enriched_from_topics(
        kafka_bootstrap,
        tmp_path,
        START_TIME_MS,
        sinks=[{"type": "jsonl", "path": str(out)}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dlq")},
    )
    run_pipeline(config, address=ray_driver.address)
    assert asyncio.run(verify_run(config)).failures("exactly_once") == []

    part = sorted(out.glob("part-*.jsonl"))[0]
    rows = [json.loads(line) for line in part.read_text().splitlines()]
    met = next(index for index, row in enumerate(rows) if row["in_stock"] is not None)
    rows[met]["in_stock"] += 1  # wrongly joined
    lost = rows.pop(met + 1)
    rows.append(rows[0])  # duplicated
    part.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = asyncio.run(verify_run(config))

    output = report.outputs[0]
    assert output.wrong.examples == (rows[met]["_event_id"],)
    assert output.lost.examples == (lost["_event_id"],)
    assert output.duplicated.examples == (rows[0]["_event_id"],)
    assert report.failures("at_least_once") == [
        f"{output.name}: 1 lost (e.g. {lost['_event_id']})",
        f"{output.name}: 1 wrongly joined (e.g. {rows[met]['_event_id']})",
    ]
