"""An event's trace across actors and across a Kafka hop between two pipelines (ARCHITECTURE.md section 6)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from cluster.commands.trace_view import load_trace
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.io.trace_context import parse_traceparent
from tests.integration.pipelines_under_test import create_topic, topic_records, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
START_MS = 1_767_225_600_000


def _order(index: int, customer: str) -> bytes:
    event = {"event_id": f"t{index}", "event_type": "OrderCreated", "event_time_ms": START_MS + index,
             "customer_id": customer, "amount_cents": 100 + index}  # fmt: skip
    return json.dumps(event).encode()


async def _produce(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, _order(0, "c1"), partition=0, headers=[("traceparent", TRACEPARENT.encode())]
        )
        for index in range(1, 200):
            await producer.send(topic, _order(index, "c1"), partition=0)  # one window: one row reaches B
        await producer.flush()
    finally:
        await producer.stop()


def _pipeline(bootstrap: str, name: str, source_topic: str, out_topic: str, fields: dict[str, str],
              time_field: str, total: str, ratio: float, traces: Path) -> PipelineConfig:  # fmt: skip
    data: dict[str, Any] = {
        "name": unique(name),
        "kafka": {"bootstrap_servers": bootstrap},
        "source": {"type": "kafka", "topic": source_topic, "start": "earliest"},
        "schema": {"fields": fields, "required": ["customer_id"], "event_time_field": time_field},
        "aggregate": {"key": "customer_id", "window": {"type": "tumbling", "size_ms": 10_000},
                      "aggregations": {"orders": {"fn": "count"}, "total": {"fn": "sum", "column": total}}},
        "sinks": [{"type": "kafka", "topic": out_topic, "key_column": "customer_id"}],
        "dead_letter": {"type": "jsonl", "path": str(traces.parent / f"dead-{name}")},
        "tracing": {"enabled": True, "sampling_ratio": ratio, "jsonl_path": str(traces)},
        "runtime": {"source_actors": 1, "aggregate_actors": 1, "duration_s": 0.5},
    }  # fmt: skip
    return parse_config(data)


def _run_two_pipelines(ray: LocalRayCluster, bootstrap: str, traces: Path, ratio: float) -> list[Any]:
    first, middle, last = unique("traced-in"), unique("traced-mid"), unique("traced-out")
    for topic in (first, middle, last):
        create_topic(bootstrap, topic, 1)
    asyncio.run(_produce(bootstrap, first))
    order_fields = {"event_id": "string", "event_time_ms": "int64", "customer_id": "string", "amount_cents": "int64"}
    window_fields = {"customer_id": "string", "window_start_ms": "int64", "revenue": "int64"}
    pipeline_a = _pipeline(bootstrap, "a", first, middle, order_fields, "event_time_ms", "amount_cents", ratio, traces)
    pipeline_b = _pipeline(bootstrap, "b", middle, last, window_fields | {"total": "int64"}, "window_start_ms",
                           "total", ratio, traces)  # fmt: skip
    run_pipeline(pipeline_a, address=ray.address)
    run_pipeline(pipeline_b, address=ray.address)
    return topic_records(bootstrap, last)


def _trace_ids(records: list[Any]) -> set[str]:
    found = set()
    for record in records:
        for name, value in record.headers:
            parsed = parse_traceparent(value.decode()) if name == "traceparent" else None
            if parsed is not None:
                found.add(f"{parsed.trace_id:032x}")
    return found


def test_a_trace_follows_the_event_through_both_pipelines(ray_driver: LocalRayCluster, kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    traces = tmp_path / "traces"

    records = _run_two_pipelines(ray_driver, kafka_bootstrap, traces, ratio=1.0)

    assert TRACE_ID in _trace_ids(records), "pipeline B's output must continue the event's trace"
    spans = {span.span_id: span for span in load_trace(traces, TRACE_ID)}
    seen = [(span.name, span.resource.get("process.pid"), span.parent_span_id, span.span_id) for span in spans.values()]
    assert len({span.resource["process.pid"] for span in spans.values()}) >= 4, seen
    stages = {(span.attributes["eventray.pipeline"].split("-")[0], span.attributes["eventray.stage"]): span
              for span in spans.values()}  # fmt: skip
    source_a, aggregate_a = stages[("a", "source")], stages[("a", "aggregate")]
    source_b, aggregate_b = stages[("b", "source")], stages[("b", "aggregate")]
    assert source_a.parent_span_id == TRACEPARENT.split("-")[2], "A's source continues the producer's span"
    assert aggregate_a.parent_span_id == source_a.span_id
    assert source_b.parent_span_id == aggregate_a.span_id, "the Kafka hop keeps the parent"
    assert aggregate_b.parent_span_id == source_b.span_id
    for source in (source_a, source_b):
        assert source.name.startswith("process ")
        assert source.attributes["messaging.system"] == "kafka"
        assert source.attributes["messaging.destination.partition.id"] == "0"
        assert source.attributes["messaging.batch.message_count"] >= 1
        assert source.attributes["messaging.consumer.group.name"].startswith("eventray-")
    assert source_a.linked_traces > 0, "the batch's other sampled events are linked"
    exported = [json.loads(line) for file in traces.glob("spans-*.jsonl") for line in file.read_text().splitlines()]
    producers = [span for span in exported if span["kind"] == "PRODUCER"]
    assert producers and all(span["name"].startswith("send traced-") for span in producers)
    assert all(span["attributes"]["messaging.operation.type"] == "send" for span in producers)


def test_sampling_at_zero_exports_nothing_but_still_propagates(ray_driver: LocalRayCluster, kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:  # fmt: skip
    traces = tmp_path / "traces"

    records = _run_two_pipelines(ray_driver, kafka_bootstrap, traces, ratio=0.0)

    assert TRACE_ID in _trace_ids(records)
    exported = [line for file in traces.glob("spans-*.jsonl") for line in file.read_text().splitlines()]
    assert exported == []
