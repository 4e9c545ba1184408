"""The ceiling: aiokafka ``getmany`` draining the input topic with no processing at all (W1, W2).

Same consumer settings as eventray's sources (manual assignment, ``read_committed``, 4 MiB per partition and
32 MiB per fetch). For W3, which has no broker, the ceiling is generating the events and nothing else.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.workloads import PARTITIONS, START_TIME_MS, generator_config, per_partition_events
from pipelines.io.generator import generate_events

__all__ = ["drain_consumer", "run"]

GENERATOR_CHUNK = 4_096  # eventray's default batch size


def drain_consumer(bootstrap: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer as a careful user would configure one for draining (also used by the hand-written system)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
    )


async def _drain(spec: RunSpec, report: ChildReport) -> None:
    assert spec.bootstrap is not None and spec.input_topic is not None
    consumer = drain_consumer(spec.bootstrap, "bench-bare-getmany")
    await consumer.start()
    try:
        tps = [TopicPartition(spec.input_topic, partition) for partition in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        report.ready_s = time.time()
        while remaining:
            fetched = await consumer.getmany(timeout_ms=100)
            if fetched and not report.first_event_s:
                report.first_event_s = time.time()
            for tp, records in fetched.items():
                report.events_in += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        report.done_s = time.time()
    finally:
        await consumer.stop()


def _generate_only(spec: RunSpec, report: ChildReport) -> None:
    config = generator_config()
    limits = per_partition_events(spec.events)
    positions = [0] * PARTITIONS
    report.ready_s = report.first_event_s = time.time()
    while any(position < limit for position, limit in zip(positions, limits, strict=True)):
        for partition, limit in enumerate(limits):
            count = min(GENERATOR_CHUNK, limit - positions[partition])
            if count > 0:
                generated = generate_events(config, partition, positions[partition], count, START_TIME_MS)
                report.events_in += len(generated.payloads)
                positions[partition] += count
    report.done_s = time.time()


def run(spec: RunSpec, report: ChildReport) -> None:
    if spec.workload == "W3":
        _generate_only(spec, report)
    else:
        asyncio.run(_drain(spec, report))
