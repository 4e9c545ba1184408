"""`eventray produce`: write the generator's events into a Kafka topic at a given rate (demos, benchmarks).

Event ``i`` of generator partition ``p`` goes to topic partition ``p % partitions`` with key ``event_id``, so a
topic holds exactly the events a generator source would produce, and tests can recompute them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic, partition_count
from actors.kafka.clients import start_or_stop
from pipelines.config.kafka import KafkaConnectionConfig, client_options
from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.io.generator import GeneratedEvents, generate_events

__all__ = ["ProduceReport", "produce_events"]

_CHUNK = 2_000


@dataclass(frozen=True)
class ProduceReport:
    topic: str
    events: int
    invalid: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def produce_events(
    connection: KafkaConnectionConfig,
    topic: str,
    events: int,
    generator: GeneratorSourceConfig,
    rate_per_s: float | None = None,
    start_time_ms: int = 1_767_225_600_000,
    on_progress: Callable[[int], None] | None = None,
    client_id: str = "eventray-produce",
) -> ProduceReport:
    """Produce ``events`` generator events (spread evenly over the generator's partitions) and wait for acks;
    ``client_id`` names the producer to the brokers (their logs, quotas)."""
    await ensure_topic(connection, topic, generator.partitions)
    topic_partitions = await partition_count(connection, topic)
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1 << 20,
                                client_id=client_id, **client_options(connection))  # fmt: skip
    await start_or_stop(producer)
    started = time.monotonic()
    sent = invalid = 0
    unacknowledged: list[asyncio.Future[object]] = []
    try:
        per_partition = [events // generator.partitions + (p < events % generator.partitions)
                         for p in range(generator.partitions)]  # fmt: skip
        offsets = [0] * generator.partitions
        while sent < events:
            for partition, limit in enumerate(per_partition):
                count = min(_CHUNK, limit - offsets[partition])
                if count <= 0:
                    continue
                generated = generate_events(generator, partition, offsets[partition], count, start_time_ms)
                invalid += int((generated.invalid_kind != "").sum())
                unacknowledged += await _send_chunk(producer, topic, partition % topic_partitions, generated, partition)
                if len(unacknowledged) > 256:
                    await asyncio.gather(*unacknowledged)
                    unacknowledged = []
                offsets[partition] += count
                sent += count
                if on_progress is not None:
                    on_progress(sent)
                if rate_per_s:
                    ahead_s = sent / rate_per_s - (time.monotonic() - started)
                    if ahead_s > 0:
                        await asyncio.sleep(ahead_s)
        await asyncio.gather(*unacknowledged)
    finally:
        await producer.stop()
    return ProduceReport(topic, sent, invalid, time.monotonic() - started)


async def _send_chunk(
    producer: AIOKafkaProducer, topic: str, topic_partition: int, generated: GeneratedEvents, partition: int
) -> list[asyncio.Future[object]]:
    """Append records to producer batches; return the futures of their acknowledgements."""
    pending = []
    batch = producer.create_batch()
    for offset, payload in zip(generated.offsets.tolist(), generated.payloads.to_pylist(), strict=True):
        key = f"{partition}-{offset}".encode()
        if batch.append(key=key, value=payload, timestamp=None) is None:
            pending.append(await producer.send_batch(batch, topic, partition=topic_partition))
            batch = producer.create_batch()
            batch.append(key=key, value=payload, timestamp=None)
    pending.append(await producer.send_batch(batch, topic, partition=topic_partition))
    return pending
