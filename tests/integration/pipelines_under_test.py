"""Pipeline configs the integration tests run, built from configs/orders.yaml so they stay in step with it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic, read_topic
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.orders import orders_pipeline

START_TIME_MS = 1_767_225_600_000  # fixed, so references see the same events as the pipeline
PARTITIONS = 8


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def connection(bootstrap: str) -> KafkaConnectionConfig:
    return KafkaConnectionConfig(bootstrap_servers=bootstrap)


def generator_source(invalid_fraction: float = 0.01) -> dict[str, Any]:
    return {
        "type": "generator", "partitions": PARTITIONS, "seed": 42, "rate_per_s": None,
        "invalid_fraction": invalid_fraction, "start_time_ms": START_TIME_MS,
    }  # fmt: skip


def passthrough(
    source: dict[str, Any],
    sinks: list[dict[str, Any]],
    dead_letter: dict[str, Any],
    runtime: dict[str, Any],
    kafka: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
) -> PipelineConfig:
    """The orders schema and validation (``schema`` overrides its settings), no aggregate: every valid event goes
    out with its id and origin."""
    orders = orders_pipeline()
    data: dict[str, Any] = {
        "name": unique("passthrough"),
        "source": source,
        "schema": {**orders.all_inputs[0].schema.model_dump(mode="json"), **(schema or {})},
        "operators": [{"op": "select", "columns": ["event_id", "event_type", "_partition", "_offset"]}],
        "sinks": sinks,
        "dead_letter": dead_letter,
        "runtime": {"duration_s": None, **runtime},
    }
    if kafka is not None:
        data["kafka"] = kafka
    return parse_config(data)


def orders_with(source: dict[str, Any], out: Path, runtime: dict[str, Any], kafka: dict[str, Any] | None = None,
                ) -> PipelineConfig:  # fmt: skip
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    data.update(
        name=unique("orders"),
        source=source,
        sinks=[{"type": "jsonl", "path": str(out / "windows")}],
        dead_letter={"type": "jsonl", "path": str(out / "dead_letter")},
        runtime={**data["runtime"], "duration_s": None, **runtime},
    )
    if kafka is not None:
        data["kafka"] = kafka
    return parse_config(data)


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    asyncio.run(ensure_topic(connection(bootstrap), topic, partitions))


def topic_records(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(read_topic(connection(bootstrap), topic))


async def produce_payloads(
    bootstrap: str,
    topic: str,
    payloads: list[bytes],
    partition: int | None = None,
    compression: str | None = None,
    max_request_size: int = 1_048_576,
    max_batch_size: int = 16_384,
) -> None:
    """Produce ``payloads`` in order (acks from all replicas), compressed with ``compression`` if given; records
    up to ``max_request_size`` bytes and batches up to ``max_batch_size`` (aiokafka's limits, before compression)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=compression,
        max_request_size=max_request_size,
        max_batch_size=max_batch_size,
    )
    await producer.start()
    try:
        for payload in payloads:
            await producer.send(topic, payload, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def produce_events(bootstrap: str, topic: str, events: list[dict[str, Any]], key: str = "aggregate_id") -> None:
    """Produce ``events`` in order as JSON records keyed by their ``key`` (an aggregate's events in one partition,
    as an event-sourced pipeline writes them), idempotently, acks from all replicas."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, msgspec.json.encode(event), key=str(event[key]).encode())
        await producer.flush()
    finally:
        await producer.stop()
