"""Kafka sinks: results and dead letters produced with acks=all and idempotence, flushed on demand.

Contract (as every sink): ``write`` hands records to the producer and returns without waiting for acks;
``flush`` returns when every record written so far is acknowledged by the brokers, and raises if any failed;
``close`` flushes and stops the producer.
"""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import Future
from typing import Any

import pyarrow as pa
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from actors.kafka.clients import start_or_stop
from actors.kafka.loop_thread import BackgroundLoop
from actors.telemetry import Telemetry
from pipelines.config.kafka import KafkaConnectionConfig, KafkaSinkConfig, client_options
from pipelines.io.avro_rows import AvroRowEncoder
from pipelines.io.kafka_records import (
    DEFAULT_DEAD_LETTER_RECORD_BYTES,
    UNROUTED_HEADER,
    OutgoingRecord,
    dead_letter_records,
    encode_rows,
    route_rows,
)
from pipelines.schemas.sink_schemas import run_apart, writer_schema_ids

__all__ = ["KafkaDeadLetterSink", "KafkaSink", "KafkaTopicProducer", "partition_for_key"]


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: the partition of ``partitions`` a record keyed ``key`` goes to (murmur2), as
    Java clients and aiokafka place it."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class KafkaTopicProducer:
    """One idempotent producer writing to one topic (or, through :meth:`send` with ``topic``, to others in the
    same transaction), driven from synchronous code."""

    def __init__(
        self,
        connection: KafkaConnectionConfig,
        topic: str,
        client_id: str,
        linger_ms: int = 5,
        compression: str = "none",
        transactional_id: str | None = None,
    ) -> None:
        """``transactional_id``: write in transactions (:meth:`commit_transaction`); starting the producer
        fences every earlier producer with the same id and aborts its open transaction."""
        self.topic = topic
        self._loop = BackgroundLoop(f"kafka-producer-{client_id}")
        self._pending: list[Future[list[asyncio.Future[Any]]]] = []
        self._transactional = transactional_id is not None
        self._in_transaction = False
        self.extra_headers: list[tuple[str, bytes]] = []  # added to every record (exactly-once: slot and epoch)
        options = client_options(connection)
        self._producer = self._loop.run(
            _started_producer(
                options,
                client_id=client_id,
                linger_ms=linger_ms,
                compression=None if compression == "none" else compression,
                transactional_id=transactional_id,
            )
        )
        self._partitions_by_topic: dict[str, int] = {}
        self.partitions = self.partitions_of(topic)
        self._key_partitions: dict[tuple[str, bytes], int] = {}
        self._round_robin = itertools.count()

    def partitions_of(self, topic: str) -> int:
        """How many partitions ``topic`` has (asked of the brokers once per topic)."""
        known = self._partitions_by_topic.get(topic)
        if known is None:
            known = self._partitions_by_topic[topic] = len(self._loop.run(self._producer.partitions_for(topic)) or [0])
        return known

    def send(self, records: list[OutgoingRecord], topic: str | None = None) -> None:
        """``records`` to ``topic`` (by default the producer's own)."""
        if records:
            self.begin_transaction()
            target = topic or self.topic
            self.partitions_of(target)  # known before the send runs on the producer's loop
            self._pending.append(self._loop.submit(self._send_batched(target, records, list(self.extra_headers))))

    def send_to(self, topic: str, key: bytes, value: bytes) -> None:
        """One record to another topic, in the same transaction (commit markers)."""
        self.begin_transaction()
        self._pending.append(self._loop.submit(self._send_one(topic, key, value)))

    async def _send_one(self, topic: str, key: bytes, value: bytes) -> list[asyncio.Future[Any]]:
        return [await self._producer.send(topic, value=value, key=key)]

    def begin_transaction(self) -> None:
        """Open a transaction unless one is open (the first one waits for the producer id, which fences older
        producers of the same transactional id). Synchronous, before sends: a send outside one is refused."""
        if self._transactional and not self._in_transaction:
            self._loop.run(self._producer.begin_transaction())
            self._in_transaction = True

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    def commit_transaction(self) -> None:
        """Wait for every record of the open transaction, then commit it (no-op when none is open)."""
        self.flush()
        if self._in_transaction:
            self._loop.run(self._producer.commit_transaction())
            self._in_transaction = False

    async def _send_batched(
        self, topic: str, records: list[OutgoingRecord], extra_headers: list[tuple[str, bytes]]
    ) -> list[asyncio.Future[Any]]:
        """Records grouped by partition into producer batches: one future per batch, not per record (the
        per-record ``send`` was the top cost of the aggregate actor, benchmarks/PROFILE.md)."""
        by_partition: dict[int, list[OutgoingRecord]] = {}
        partitions = self._partitions_by_topic[topic]
        unkeyed_partition = next(self._round_robin) % partitions  # sticky per call, as Kafka's partitioner
        for record in records:
            partition = record.partition
            if partition is None:
                partition = (
                    unkeyed_partition if record.key is None else self._partition_of(topic, record.key, partitions)
                )
            by_partition.setdefault(partition, []).append(record)
        deliveries = []
        for partition, group in by_partition.items():
            batch = self._producer.create_batch()
            for record in group:
                headers = record.headers + extra_headers if extra_headers else record.headers
                if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers) is None:
                    deliveries.append(await self._producer.send_batch(batch, topic, partition=partition))
                    batch = self._producer.create_batch()
                    batch.append(key=record.key, value=record.value, timestamp=None, headers=headers)
            deliveries.append(await self._producer.send_batch(batch, topic, partition=partition))
        return deliveries

    def _partition_of(self, topic: str, key: bytes, partitions: int) -> int:
        """Kafka's default partitioner (murmur2 of the key), so keyed records land where Java clients put them."""
        partition = self._key_partitions.get((topic, key))
        if partition is None:
            if len(self._key_partitions) > 1 << 20:
                self._key_partitions.clear()
            partition = self._key_partitions[topic, key] = partition_for_key(key, partitions)
        return partition

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        deliveries = [delivery for batch in pending for delivery in batch.result()]
        if deliveries:
            self._loop.run(_await_all(deliveries))

    def close(self) -> None:
        try:
            if not self._in_transaction:  # an open transaction is left to be aborted (never half-committed)
                self.flush()
        finally:
            self._loop.run(self._producer.stop())
            self._loop.close()


async def _started_producer(options: dict[str, Any], **extra: Any) -> AIOKafkaProducer:
    transactional_id = extra.pop("transactional_id")
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        compression_type=extra.pop("compression"),
        **({"transactional_id": transactional_id} if transactional_id else {}),
        max_batch_size=1 << 20,
        **options,
        **extra,
    )
    await start_or_stop(producer)
    return producer


async def _await_all(deliveries: list[asyncio.Future[Any]]) -> None:
    await asyncio.gather(*deliveries)


class KafkaSink:
    """Rows as JSON records (``format: avro``: Avro in the Confluent wire format, under the schema id the
    registry has for the topic's subject, looked up when the sink starts); keyed by ``key_column`` or kept on
    their source partition number. Each record carries its row's ``_traceparent`` as a header; with tracing on,
    each write is a PRODUCER span."""

    def __init__(
        self,
        config: KafkaSinkConfig,
        connection: KafkaConnectionConfig,
        writer: str,
        telemetry: Telemetry,
        transactional_id: str | None = None,
    ) -> None:
        self._config = config
        self._telemetry = telemetry
        self._avro: AvroRowEncoder | None = None
        self._schema_ids: dict[str, int] = {}
        if config.format == "avro":  # before the producer starts: a refusal leaves nothing open
            assert config.avro_schema is not None  # the config validator guarantees it
            self._avro = AvroRowEncoder(config.avro_schema)
            self._schema_ids = run_apart(writer_schema_ids(config, self._avro.schema_text))
        self.producer = self._producer = KafkaTopicProducer(
            connection, config.topic, writer, config.linger_ms, config.compression, transactional_id
        )
        self._routes = {topic: self._producer.partitions_of(topic) for topic in config.all_topics}

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        if not rows.num_rows:
            return
        by_source = self._config.partition_by == "source_partition"
        config = self._config
        for topic, routed, unrouted in route_rows(rows, config.topic, config.topic_column, config.topics):
            with self._telemetry.producer_span(topic, routed.num_rows):
                encoded = None if self._avro is None else self._avro.encode(routed, self._schema_ids[topic])
                records = encode_rows(routed, self._config.key_column, by_source, self._routes[topic], encoded)
                if unrouted is not None:
                    for record, named in zip(records, unrouted, strict=True):
                        record.headers.append((UNROUTED_HEADER, b"" if named is None else str(named).encode()))
                self._producer.send(records, topic)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


class KafkaDeadLetterSink:
    """Dead letters to a topic: original key and bytes, the reason and origin in ``eventray.*`` headers."""

    def __init__(
        self,
        topic: str,
        connection: KafkaConnectionConfig,
        writer: str,
        pipeline: str,
        transactional_id: str | None = None,
        max_record_bytes: int = DEFAULT_DEAD_LETTER_RECORD_BYTES,
    ) -> None:
        self._pipeline = pipeline
        self._max_record_bytes = max_record_bytes
        self.producer = self._producer = KafkaTopicProducer(
            connection, topic, writer, transactional_id=transactional_id
        )

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        batches = rows.to_batches() if isinstance(rows, pa.Table) else [rows]
        for batch in batches:
            self._producer.send(dead_letter_records(batch, self._pipeline, self._max_record_bytes))

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()
