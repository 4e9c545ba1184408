"""Kafka in, Kafka out, against a real broker: exactly-once output without faults, order, offsets, resume,
dead-letter topic headers, the circuit breaker, publish-subscribe."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import fastavro
import pytest

from actors.kafka.admin import committed_offsets, end_offsets
from cluster.commands.produce import produce_events
from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from pipelines.config.kafka import CircuitBreakerConfig
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.errors import FatalError
from pipelines.examples.orders import orders_pipeline
from tests.integration.pipelines_under_test import (
    PARTITIONS,
    START_TIME_MS,
    connection,
    create_topic,
    passthrough,
    produce_payloads,
    topic_records,
    unique,
)
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

EVENTS = 100_000


@pytest.fixture(scope="module")
def orders_topic(kafka_bootstrap: str) -> tuple[str, int]:
    """A topic pre-filled with 100,000 generated events over 8 partitions; returns (topic, invalid count)."""
    topic = unique("orders-in")
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=42, rate_per_s=None)
    report = asyncio.run(produce_events(connection(kafka_bootstrap), topic, EVENTS, generator, None, START_TIME_MS))
    assert report.events == EVENTS
    return topic, report.invalid


def kafka_passthrough(bootstrap: str, topic: str, out: str, dlq: str, source_actors: int, **source: object
                      ) -> PipelineConfig:  # fmt: skip
    create_topic(bootstrap, out)
    return passthrough(
        source={"type": "kafka", "topic": topic, "start": "committed", **source},
        sinks=[{"type": "kafka", "topic": out, "partition_by": "source_partition"}],
        dead_letter={"type": "kafka", "topic": dlq},
        runtime={"source_actors": source_actors, "duration_s": 0.5},
        kafka={"bootstrap_servers": bootstrap},
    )


def ids_and_order(bootstrap: str, topic: str) -> tuple[Counter[str], dict[int, list[int]]]:
    ids: Counter[str] = Counter()
    offsets_by_source: dict[int, list[int]] = defaultdict(list)
    for record in topic_records(bootstrap, topic):
        event = json.loads(record.value)
        ids[event["event_id"]] += 1
        offsets_by_source[event["_partition"]].append(event["_offset"])
    return ids, offsets_by_source


@pytest.mark.parametrize("source_actors", [1, 2, 4])
def test_every_event_comes_out_once_in_order_and_offsets_are_committed(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, orders_topic: tuple[str, int], source_actors: int
) -> None:
    topic, invalid = orders_topic
    out = unique("orders-out")
    config = kafka_passthrough(kafka_bootstrap, topic, out, unique("orders-dlq"), source_actors)

    summary = run_pipeline(config, address=ray_driver.address)

    ids, offsets_by_source = ids_and_order(kafka_bootstrap, out)
    assert summary.progress.events_in == EVENTS
    assert sum(ids.values()) == EVENTS - invalid == summary.progress.events_out
    assert max(ids.values()) == 1, "an event id came out twice"
    for partition, offsets in offsets_by_source.items():
        assert offsets == sorted(offsets), f"partition {partition} out of order"
    ends = asyncio.run(end_offsets(connection(kafka_bootstrap), topic))
    committed = asyncio.run(committed_offsets(connection(kafka_bootstrap), topic, config.group_id))
    assert committed == ends


def test_a_restarted_pipeline_resumes_from_its_committed_offsets(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, orders_topic: tuple[str, int]
) -> None:
    topic, invalid = orders_topic
    out, dlq = unique("resume-out"), unique("resume-dlq")
    first = kafka_passthrough(kafka_bootstrap, topic, out, dlq, 2)
    first = first.model_copy(update={"runtime": first.runtime.model_copy(update={"max_events": EVENTS // 2})})
    group = {"group_id": first.group_id}
    second = kafka_passthrough(kafka_bootstrap, topic, out, dlq, 2, **group)

    run_pipeline(first, address=ray_driver.address)
    halfway = asyncio.run(committed_offsets(connection(kafka_bootstrap), topic, first.group_id))
    resumed = run_pipeline(second, address=ray_driver.address)

    assert sum(offset or 0 for offset in halfway.values()) == EVENTS // 2
    assert resumed.progress.events_in == EVENTS - EVENTS // 2
    ids, _ = ids_and_order(kafka_bootstrap, out)
    assert sum(ids.values()) == EVENTS - invalid
    assert max(ids.values()) == 1


def test_invalid_records_reach_the_dead_letter_topic_with_their_headers(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, orders_topic: tuple[str, int]
) -> None:
    topic, invalid = orders_topic
    dlq = unique("orders-dlq")
    config = kafka_passthrough(kafka_bootstrap, topic, unique("dlq-out"), dlq, 2)

    run_pipeline(config, address=ray_driver.address)

    dead = topic_records(kafka_bootstrap, dlq)
    assert len(dead) == invalid
    originals = {(r.partition, r.offset): r.value for r in topic_records(kafka_bootstrap, topic)}
    kinds: Counter[str] = Counter()
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["eventray.pipeline"] == config.name
        assert headers["eventray.source.topic"] == topic
        source = (int(headers["eventray.source.partition"]), int(headers["eventray.source.offset"]))
        assert record.value == originals[source], "the dead letter must keep the original bytes"
        assert headers["eventray.reason"] and record.value.decode(errors="replace") not in headers["eventray.reason"]
        kinds[headers["eventray.error_type"]] += 1
    assert kinds["undecodable"] > 0 and kinds["invalid"] > 0


def test_the_circuit_breaker_halts_on_a_bad_deploy_burst(ray_driver: LocalRayCluster, kafka_bootstrap: str) -> None:
    topic = unique("bad-deploy")
    generator = GeneratorSourceConfig(partitions=2, seed=7, rate_per_s=None, invalid_fraction=0.9)
    asyncio.run(produce_events(connection(kafka_bootstrap), topic, 5_000, generator, None, START_TIME_MS))
    config = kafka_passthrough(kafka_bootstrap, topic, unique("bad-out"), unique("bad-dlq"), 1)
    breaker = CircuitBreakerConfig(max_invalid_ratio=0.5, window_events=2_000, min_events=500)
    # no periodic checkpoint before the trip, however slowly the first 500 events are read: the only commit
    # that could happen is the halted run's own, which must not
    never = config.checkpoint.model_copy(update={"interval_ms": 3_600_000}) if config.checkpoint else None
    config = config.model_copy(update={"circuit_breaker": breaker, "checkpoint": never})

    with pytest.raises(FatalError, match="circuit breaker tripped") as raised:
        run_pipeline(config, address=ray_driver.address)

    assert "Operator action" in str(raised.value)
    committed = asyncio.run(committed_offsets(connection(kafka_bootstrap), topic, config.group_id))
    assert all(offset is None for offset in committed.values()), "a halted run must not commit its input"


def test_publish_subscribe_two_groups_read_the_same_topic_independently(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, orders_topic: tuple[str, int]
) -> None:
    topic, invalid = orders_topic
    billing = kafka_passthrough(kafka_bootstrap, topic, unique("billing"), unique("billing-dlq"), 2)
    analytics = kafka_passthrough(kafka_bootstrap, topic, unique("analytics"), unique("analytics-dlq"), 1)
    assert billing.group_id != analytics.group_id

    first = run_pipeline(billing, address=ray_driver.address)
    second = run_pipeline(analytics, address=ray_driver.address)

    assert first.progress.events_in == second.progress.events_in == EVENTS
    assert first.progress.events_out == second.progress.events_out == EVENTS - invalid


def test_avro_payloads_are_decoded_and_corrupt_ones_dead_lettered(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("avro-orders")
    create_topic(kafka_bootstrap, topic, 2)
    writer = fastavro.parse_schema(AVRO_ORDER)
    payloads = []
    for index in range(2_000):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(
            buffer, writer, {"event_id": f"e{index}", "amount_cents": index, "event_time_ms": index}
        )
        payloads.append(buffer.getvalue()[:2] if index % 100 == 0 else buffer.getvalue())
    asyncio.run(produce_payloads(kafka_bootstrap, topic, payloads))
    config = parse_config(
        {
            "name": unique("avro"),
            "kafka": {"bootstrap_servers": kafka_bootstrap},
            "source": {"type": "kafka", "topic": topic, "start": "earliest"},
            "schema": {
                "format": "avro",
                "avro_schema": AVRO_ORDER,
                "fields": {"event_id": "string", "amount_cents": "int64", "event_time_ms": "int64"},
                "required": ["event_id"],
                "event_time_field": "event_time_ms",
            },
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
            "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
            "runtime": {"source_actors": 2, "duration_s": 0.5},
        }
    )

    summary = run_pipeline(config, address=ray_driver.address)

    rows = read_jsonl_dir(tmp_path / "out")
    assert summary.progress.events_in == 2_000
    assert sorted(row["amount_cents"] for row in rows) == [i for i in range(2_000) if i % 100]
    assert len(read_jsonl_dir(tmp_path / "dead")) == 20


AVRO_ORDER = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "event_time_ms", "type": "long"},
    ],
}


def test_a_quiet_partition_does_not_stall_windows(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Data only in partition 0 of 2; the unbounded run must emit windows while running, not only at stop."""
    topic = unique("quiet-partition")
    create_topic(kafka_bootstrap, topic, 2)
    orders = [json.dumps({"event_id": f"q{i}", "event_type": "OrderCreated", "event_time_ms": START_TIME_MS + i * 100,
                          "customer_id": f"c{i % 3}", "amount_cents": 100}).encode() for i in range(1_000)]  # fmt: skip
    asyncio.run(produce_payloads(kafka_bootstrap, topic, orders, partition=0))
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    data.update(
        name=unique("quiet"),
        kafka={"bootstrap_servers": kafka_bootstrap},
        source={"type": "kafka", "topic": topic, "start": "earliest"},
        sinks=[{"type": "jsonl", "path": str(tmp_path / "windows")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")},
        runtime={"source_actors": 2, "aggregate_actors": 1, "duration_s": None},
    )
    data["aggregate"]["idle_timeout_ms"] = 1_000
    seen: list[RunProgress] = []

    def stop_once_windows_close(progress: RunProgress) -> None:
        stopping = bool(seen) and (seen[-1].windows_emitted > 0 or seen[-1].elapsed_s > 60)
        seen.append(progress)
        if not stopping and (progress.windows_emitted > 0 or progress.elapsed_s > 60):
            raise KeyboardInterrupt  # as a person would, once

    summary = run_pipeline(parse_config(data), address=ray_driver.address, on_progress=stop_once_windows_close)

    closed_while_running = [p for p in seen if p.windows_emitted > 0]
    assert closed_while_running, f"no window closed by the watermark while running: {seen[-3:]}"
    assert closed_while_running[0].elapsed_s < 60
    assert summary.stopped_early
    assert summary.progress.events_in == 1_000


def test_one_input_reads_several_topics_each_event_once_and_commits_each_topic(
    ray_driver: LocalRayCluster, kafka_bootstrap: str
) -> None:
    topics, invalid = [unique("web-orders"), unique("shop-orders")], 0
    for prefix, topic in zip("ws", topics, strict=True):
        generator = GeneratorSourceConfig(partitions=4, seed=7, rate_per_s=None, event_id_prefix=prefix)
        report = asyncio.run(produce_events(connection(kafka_bootstrap), topic, 20_000, generator, None, START_TIME_MS))
        invalid += report.invalid
    out = unique("both-out")
    config = kafka_passthrough(kafka_bootstrap, "", out, unique("both-dlq"), 2, topics=topics)
    assert [spec.name for spec in config.all_inputs] == [f"input[{topic}]" for topic in topics]

    summary = run_pipeline(config, address=ray_driver.address)

    ids, offsets_by_source = ids_and_order(kafka_bootstrap, out)
    assert summary.progress.events_in == 40_000
    assert sum(ids.values()) == 40_000 - invalid == summary.progress.events_out
    assert max(ids.values()) == 1, "an event id came out twice"
    assert {partition >> 16 for partition in offsets_by_source} == {0, 1}, "partitions of both topics, apart"
    for partition, offsets in offsets_by_source.items():
        assert offsets == sorted(offsets), f"partition {partition} out of order"
    for topic in topics:
        ends = asyncio.run(end_offsets(connection(kafka_bootstrap), topic))
        committed = asyncio.run(committed_offsets(connection(kafka_bootstrap), topic, config.group_id))
        assert committed == ends, f"{topic}: every offset committed under the one group"
