"""Admin-side Kafka calls: topics, partition counts, end and committed offsets, reading a topic to its end."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipelines.errors import ConfigError
from pipelines.kafka_config import KafkaConnectionConfig, client_options

__all__ = ["committed_offsets", "end_offsets", "ensure_topic", "partition_count", "read_topic"]


async def ensure_topic(connection: KafkaConnectionConfig, topic: str, partitions: int, compacted: bool = False) -> None:
    """Create ``topic`` with ``partitions`` partitions if it does not exist (replication factor 1 on a dev
    broker; pass a real cluster's topics in ready-made)."""
    admin = AIOKafkaAdminClient(**client_options(connection))
    await admin.start()
    configs = {"cleanup.policy": "compact"} if compacted else {}
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=configs)]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    await _wait_for_metadata(connection, topic)


async def _wait_for_metadata(connection: KafkaConnectionConfig, topic: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await partition_count(connection, topic, required=False) == 0:
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(f"topic {topic!r} was created but has no partitions after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def partition_count(connection: KafkaConnectionConfig, topic: str, required: bool = True) -> int:
    """How many partitions ``topic`` has; raise ConfigError naming the topic when it does not exist."""
    admin = AIOKafkaAdminClient(**client_options(connection))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p for entry in described if entry["error_code"] == 0 for p in entry["partitions"]]
    if not partitions and required:
        raise ConfigError(
            f"source.topic: topic {topic!r} does not exist on the brokers. Operator action: create it, "
            "or produce to it first (eventray produce creates it)"
        )
    return len(partitions)


async def end_offsets(connection: KafkaConnectionConfig, topic: str) -> dict[int, int]:
    tps = [TopicPartition(topic, partition) for partition in range(await partition_count(connection, topic))]
    consumer = AIOKafkaConsumer(**client_options(connection))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def committed_offsets(connection: KafkaConnectionConfig, topic: str, group_id: str) -> dict[int, int | None]:
    partitions = range(await partition_count(connection, topic))
    consumer = AIOKafkaConsumer(group_id=group_id, enable_auto_commit=False, **client_options(connection))
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await consumer.stop()


async def read_topic(connection: KafkaConnectionConfig, topic: str, idle_s: float = 2.0) -> list[Any]:
    """Every committed record of ``topic`` from the beginning (read_committed), once the end is reached."""
    ends = await end_offsets(connection, topic)
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest",
        **client_options(connection),
    )  # fmt: skip
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, partition) for partition in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + 120
        while [tp for tp in tps if await consumer.position(tp) < ends[tp.partition]]:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000)
            for partition_records in batch.values():
                records.extend(partition_records)
            if asyncio.get_running_loop().time() > deadline:
                break
    finally:
        await consumer.stop()
    return records
