"""Kafka sinks: results and dead letters produced with acks=all and idempotence, flushed on demand.

Contract (as every sink): ``write`` hands records to the producer and returns without waiting for acks;
``flush`` returns when every record written so far is acknowledged by the brokers, and raises if any failed;
``close`` flushes and stops the producer.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

import pyarrow as pa
from aiokafka import AIOKafkaProducer

from actors.kafka.loop_thread import BackgroundLoop
from actors.telemetry import Telemetry
from pipelines.kafka_config import KafkaConnectionConfig, KafkaSinkConfig, client_options
from pipelines.kafka_records import OutgoingRecord, dead_letter_records, encode_rows

__all__ = ["KafkaDeadLetterSink", "KafkaSink", "KafkaTopicProducer"]


class KafkaTopicProducer:
    """One idempotent producer writing to one topic, driven from synchronous code."""

    def __init__(
        self,
        connection: KafkaConnectionConfig,
        topic: str,
        client_id: str,
        linger_ms: int = 5,
        compression: str = "none",
    ) -> None:
        self.topic = topic
        self._loop = BackgroundLoop(f"kafka-producer-{client_id}")
        self._pending: list[Future[list[asyncio.Future[Any]]]] = []
        options = client_options(connection)
        self._producer = self._loop.run(
            _started_producer(
                options,
                client_id=client_id,
                linger_ms=linger_ms,
                compression=None if compression == "none" else compression,
            )
        )
        self.partitions = len(self._loop.run(self._producer.partitions_for(topic)) or [0])

    def send(self, records: list[OutgoingRecord]) -> None:
        if records:
            self._pending.append(self._loop.submit(self._send_all(records)))

    async def _send_all(self, records: list[OutgoingRecord]) -> list[asyncio.Future[Any]]:
        return [
            await self._producer.send(
                self.topic, value=record.value, key=record.key, partition=record.partition, headers=record.headers
            )
            for record in records
        ]

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        deliveries = [delivery for batch in pending for delivery in batch.result()]
        if deliveries:
            self._loop.run(_await_all(deliveries))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._loop.run(self._producer.stop())
            self._loop.close()


async def _started_producer(options: dict[str, Any], **extra: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        compression_type=extra.pop("compression"),
        max_batch_size=1 << 20,
        **options,
        **extra,
    )
    await producer.start()
    return producer


async def _await_all(deliveries: list[asyncio.Future[Any]]) -> None:
    await asyncio.gather(*deliveries)


class KafkaSink:
    """Rows as JSON records; keyed by ``key_column`` or kept on their source partition number. Each record
    carries its row's ``_traceparent`` as a header; with tracing on, each write is a PRODUCER span."""

    def __init__(
        self, config: KafkaSinkConfig, connection: KafkaConnectionConfig, writer: str, telemetry: Telemetry
    ) -> None:
        self._config = config
        self._telemetry = telemetry
        self._producer = KafkaTopicProducer(connection, config.topic, writer, config.linger_ms, config.compression)

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        if rows.num_rows:
            by_source = self._config.partition_by == "source_partition"
            with self._telemetry.producer_span(self._config.topic, rows.num_rows):
                self._producer.send(encode_rows(rows, self._config.key_column, by_source, self._producer.partitions))

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


class KafkaDeadLetterSink:
    """Dead letters to a topic: original key and bytes, the reason and origin in ``eventray.*`` headers."""

    def __init__(self, topic: str, connection: KafkaConnectionConfig, writer: str, pipeline: str) -> None:
        self._pipeline = pipeline
        self._producer = KafkaTopicProducer(connection, topic, writer)

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        batches = rows.to_batches() if isinstance(rows, pa.Table) else [rows]
        for batch in batches:
            self._producer.send(dead_letter_records(batch, self._pipeline))

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()
