"""What a user would write by hand: aiokafka ``getmany`` + orjson + dicts + an aiokafka producer, one process.

W1 keeps ``{window start: {customer: [count, sum]}}`` and the same watermark as eventray (minimum over the
partitions still being read of their newest event time, minus the allowed disorder), emits each window once
the watermark passes its end and everything left at the end of the input. W2 filters and enriches event by
event. W3 runs W1's aggregation on the generator's payloads and writes JSONL, with no broker. The producer is
configured like eventray's Kafka sink (``acks=all``, idempotent, 5 ms linger, 1 MiB batches).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.systems.bare_getmany import GENERATOR_CHUNK, drain_consumer
from benchmarks.workloads import (
    ALLOWED_DISORDER_MS,
    PARTITIONS,
    START_TIME_MS,
    WINDOW_MS,
    enrich,
    generator_config,
    per_partition_events,
    window_record,
)
from pipelines.io.generator import generate_events

__all__ = ["WindowAggregator", "run"]

_NO_TIME = -(1 << 62)
Closed = list[tuple[str, int, int, int]]  # (customer, window start, count, sum)


class WindowAggregator:
    """Tumbling event-time windows of count and sum per customer, over decoded JSON payloads."""

    def __init__(self, partitions: int) -> None:
        self._windows: dict[int, dict[str, list[int]]] = {}
        self._newest = dict.fromkeys(range(partitions), _NO_TIME)
        self._finished: set[int] = set()
        self.watermark_ms = _NO_TIME
        self.late = 0

    def add(self, partition: int, payloads: Iterable[bytes]) -> None:
        windows, watermark, newest = self._windows, self.watermark_ms, self._newest[partition]
        for payload in payloads:
            event = orjson.loads(payload)
            event_time = event["event_time_ms"]
            newest = max(newest, event_time)
            if event["event_type"] != "OrderCreated":
                continue
            start = event_time - event_time % WINDOW_MS
            if start + WINDOW_MS <= watermark:
                self.late += 1
                continue
            window = windows.get(start)
            if window is None:
                window = windows[start] = {}
            totals = window.get(event["customer_id"])
            if totals is None:
                window[event["customer_id"]] = [1, event["amount_cents"]]
            else:
                totals[0] += 1
                totals[1] += event["amount_cents"]
        self._newest[partition] = newest

    def finish(self, partition: int) -> None:
        """``partition`` has no more input: it no longer holds the watermark back."""
        self._finished.add(partition)

    def advance(self) -> Closed:
        """Move the watermark and return the windows it closed."""
        reading = [newest for partition, newest in self._newest.items() if partition not in self._finished]
        lowest = min(reading) if reading else max(self._newest.values())
        if lowest == _NO_TIME:
            return []
        watermark = lowest - ALLOWED_DISORDER_MS
        if watermark <= self.watermark_ms:
            return []
        self.watermark_ms = watermark
        return self._close([start for start in self._windows if start + WINDOW_MS <= watermark])

    def flush(self) -> Closed:
        return self._close(list(self._windows))

    def _close(self, starts: list[int]) -> Closed:
        closed: Closed = []
        for start in sorted(starts):
            for customer, (count, total) in self._windows.pop(start).items():
                closed.append((customer, start, count, total))
        return closed


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1 << 20
    )


async def _send_windows(producer: AIOKafkaProducer, topic: str, closed: Closed) -> None:
    for customer, start, count, total in closed:
        await producer.send(topic, orjson.dumps(window_record(customer, start, count, total)), key=customer.encode())


async def _consume(spec: RunSpec, report: ChildReport) -> None:
    assert spec.bootstrap is not None and spec.input_topic is not None and spec.output_topic is not None
    out = spec.output_topic
    consumer = drain_consumer(spec.bootstrap, "bench-handwritten")
    producer = _producer(spec.bootstrap)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(spec.input_topic, partition) for partition in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if spec.rate_per_s:  # a latency run: the topic fills while we read, with this many per partition
            ends = dict(zip(tps, per_partition_events(spec.events), strict=True))
        else:
            ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        aggregator = WindowAggregator(PARTITIONS)
        report.ready_s = time.time()
        spec.signal_ready()
        while remaining:
            fetched = await consumer.getmany(timeout_ms=100)
            if fetched and not report.first_event_s:
                report.first_event_s = time.time()
            for tp, records in fetched.items():
                report.events_in += len(records)
                if spec.workload == "W1":
                    aggregator.add(tp.partition, (record.value for record in records))
                else:
                    report.outputs += await _enrich_and_send(producer, out, records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
                    aggregator.finish(tp.partition)
            if spec.workload == "W1":
                closed = aggregator.advance()
                report.outputs += len(closed)
                await _send_windows(producer, out, closed)
        if spec.workload == "W1":
            closed = aggregator.flush()
            report.outputs += len(closed)
            await _send_windows(producer, out, closed)
            report.extra["late_events"] = aggregator.late
        await producer.flush()
        report.done_s = time.time()
    finally:
        await producer.stop()
        await consumer.stop()


async def _enrich_and_send(producer: AIOKafkaProducer, topic: str, records: list[object]) -> int:
    sent = 0
    for record in records:
        event = orjson.loads(record.value)  # type: ignore[attr-defined]
        if event["event_type"] != "OrderCreated":
            continue
        enriched = enrich(event)
        await producer.send(topic, orjson.dumps(enriched), key=str(enriched["customer_id"]).encode())
        sent += 1
    return sent


def _embedded(spec: RunSpec, report: ChildReport) -> None:
    """W3: the generator's payloads straight into the aggregator, windows to a JSONL file."""
    config = generator_config()
    limits = per_partition_events(spec.events)
    positions = [0] * PARTITIONS
    aggregator = WindowAggregator(PARTITIONS)
    directory = Path(spec.work_dir) / "windows"
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "part-handwritten.jsonl").open("wb") as output:

        def write(closed: Closed) -> None:
            report.outputs += len(closed)
            output.writelines(orjson.dumps(window_record(*window)) + b"\n" for window in closed)

        report.ready_s = report.first_event_s = time.time()
        while any(position < limit for position, limit in zip(positions, limits, strict=True)):
            for partition, limit in enumerate(limits):
                count = min(GENERATOR_CHUNK, limit - positions[partition])
                if count <= 0:
                    continue
                generated = generate_events(config, partition, positions[partition], count, START_TIME_MS)
                aggregator.add(partition, generated.payloads.to_pylist())
                report.events_in += count
                positions[partition] += count
                if positions[partition] >= limit:
                    aggregator.finish(partition)
            write(aggregator.advance())
        write(aggregator.flush())
    report.done_s = time.time()
    report.extra["late_events"] = aggregator.late


def run(spec: RunSpec, report: ChildReport) -> None:
    if spec.workload == "W3":
        _embedded(spec, report)
    else:
        asyncio.run(_consume(spec, report))
