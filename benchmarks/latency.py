"""End-to-end latency of W2 at a fixed input rate: 50 % of eventray's W2 drain throughput.

Each system starts on an empty topic; once it signals that it can consume, the driver produces the input at the
fixed rate (``produce_events`` with ``rate_per_s``, producer timestamps). The output topic stamps records with
the broker's append time (``LogAppendTime``), so latency = output append time - input producer time, matched by
event id, measured the same way for every system whatever timestamp it sets on what it produces. A system whose
measured drain throughput is below 1.2x the rate cannot keep up, and its latency would only grow: it is
reported as such instead of being run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from actors.kafka.admin import ensure_topic
from benchmarks.driver import RunResult, run_system
from benchmarks.protocol import RunSpec
from benchmarks.workloads import PARTITIONS, START_TIME_MS, generator_config
from cluster.commands.produce import produce_events
from pipelines.config.kafka import KafkaConnectionConfig

if TYPE_CHECKING:
    from benchmarks.run import Session

__all__ = ["measure_latency"]

LATENCY_SYSTEMS = ("eventray", "handwritten", "quix", "faust")
HEADROOM = 1.2


async def _create_log_append_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=config)])
    finally:
        await admin.close()
    await ensure_topic(KafkaConnectionConfig(bootstrap_servers=bootstrap), topic, PARTITIONS)  # waits for metadata


async def _timestamps(bootstrap: str, topic: str, by_key: bool) -> dict[str, int]:
    """Event id -> record timestamp for every record of ``topic`` (the id is the input's key, or in the JSON)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)  # fmt: skip
    await consumer.start()
    found: dict[str, int] = {}
    try:
        tps = [TopicPartition(topic, partition) for partition in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1_000, max_records=50_000)).values():
                for record in records:
                    event_id = record.key.decode() if by_key else orjson.loads(record.value)["event_id"]
                    found[event_id] = record.timestamp
    finally:
        await consumer.stop()
    return found


def _feeder(bootstrap: str, topic: str, events: int, rate_per_s: float, spec: RunSpec) -> Callable[[Path], None]:
    def feed(_: Path) -> None:
        deadline = time.monotonic() + 120
        while not spec.ready_marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # let every partition's first fetch go out
        connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)
        asyncio.run(produce_events(connection, topic, events, generator_config(), rate_per_s, START_TIME_MS))

    return feed


def _one(session: Session, system: str, rate_per_s: float, events: int, produce_s: float) -> dict[str, Any]:
    name = f"latency-{system}-{uuid.uuid4().hex[:6]}"
    source, output = f"bench-{name}-in", f"bench-{name}-out"
    asyncio.run(ensure_topic(KafkaConnectionConfig(bootstrap_servers=session.bootstrap), source, PARTITIONS))
    asyncio.run(_create_log_append_topic(session.bootstrap, output))
    expected = session.inputs.expected_for(events)
    spec = RunSpec(
        system=system, workload="W2", events=events, order_events=expected.order_events,
        work_dir=str(session.work / name), bootstrap=session.bootstrap, input_topic=source,
        output_topic=output, rate_per_s=rate_per_s,
    )  # fmt: skip
    feed = _feeder(session.bootstrap, source, events, rate_per_s, spec)
    result = run_system(spec, expected, session.broker_pid, produce_s * 4 + 120, feed=feed)
    if result.error or not result.correct:
        return {"system": system, "note": f"run failed or wrong: {result.error or result.verdict}"}
    produced = asyncio.run(_timestamps(session.bootstrap, source, by_key=True))
    emitted = asyncio.run(_timestamps(session.bootstrap, output, by_key=False))
    latencies = np.array([emitted[key] - produced[key] for key in emitted if key in produced], dtype=np.float64)
    return {
        "system": system,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
        "matched": len(latencies),
        "note": "",
    }


def measure_latency(
    session: Session, results: list[RunResult], systems: list[str], produce_s: float
) -> dict[str, Any] | None:
    """W2 latency of every selected system at 50 % of eventray's W2 drain throughput, ``produce_s`` of input."""
    capacity = {r.system: r.events_per_s for r in results if r.workload == "W2" and r.correct and r.source_actors == 2}
    if not capacity.get("eventray"):
        return None
    rate = 0.5 * capacity["eventray"]
    events = int(rate * produce_s) // PARTITIONS * PARTITIONS
    rows = []
    for system in (s for s in LATENCY_SYSTEMS if s in systems):
        if capacity.get(system, 0.0) < HEADROOM * rate:
            drained = capacity.get(system)
            reason = f"drains {drained:,.0f} events/s at most" if drained else "no correct W2 drain to size it"
            rows.append({"system": system, "note": f"not run: {reason}, below {HEADROOM}x the input rate"})
            continue
        rows.append(_one(session, system, rate, events, produce_s))
        print(f"  latency {system}: {rows[-1]}", flush=True)
    return {"rate_per_s": rate, "events": events, "rows": rows}
