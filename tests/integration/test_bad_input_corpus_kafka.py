"""The bad-input corpus through Kafka, on the session's Ray cluster: the corpus files' records, records with too
many, too large and non-UTF-8 headers, forged traceparents, event times far ahead of and far behind their Kafka
timestamps and late events, among valid orders of which 30 % share one hot key. Nothing halts the run, every
injected record is in the dead-letter topic exactly once with its expected error type (an oversize one trimmed
to fit), every other record comes through, and the delivery checker's recomputation of the windows agrees.

A bad deploy, thousands of invalid records in a row, trips the default circuit breaker; the corpus, as many bad
records spread among valid ones, does not."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from actors.kafka.admin import committed_offsets
from cluster.commands.verify import verify_run
from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig, parse_config
from pipelines.errors import FatalError
from pipelines.io.generator import generate_events
from pipelines.io.kafka_records import TRIMMED_HEADER
from tests.integration.pipelines_under_test import START_TIME_MS, connection, orders_with, topic_records, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
MANIFEST: dict[str, str | None] = json.loads((CORPUS / "manifest.json").read_text())
PARTITIONS = 4
VALID_PER_PARTITION = 1_500
HOT_CUSTOMER = "c-hot"
HOT_SHARE = 3  # of every 10 valid orders
MAX_RECORD_BYTES = 4 * 1024 * 1024  # the input topic takes the corpus's oversize record (1.1 MB)
HOUR_MS = 3_600_000
GOOD_TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Planned:
    """A record to produce and what must become of it (``expected``: its dead-letter error type, or None)."""

    name: str
    value: bytes
    expected: str | None
    timestamp_ms: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    key: bytes | None = None


def order(number: int, event_time_ms: int, **fields: object) -> bytes:
    record = {
        "event_id": f"planned-{number}", "event_type": "OrderCreated", "event_time_ms": event_time_ms,
        "customer_id": f"c{number % 5:05d}", "order_id": f"o-planned-{number}", "amount_cents": 100 + number,
        "currency": "EUR", "sku": "sku-0001", "quantity": 1,
    }  # fmt: skip
    record.update(fields)
    return msgspec.json.encode(record)


def corpus_records() -> list[Planned]:
    """Every record of every corpus file, timestamped at the run's start (their event times are near it)."""
    planned = []
    for name, error_type in MANIFEST.items():
        for index, line in enumerate((CORPUS / name).read_bytes().splitlines()):
            planned.append(Planned(f"{name}:{index}", line, error_type, START_TIME_MS))
    return planned


def header_and_time_records() -> list[Planned]:
    """Classes only Kafka can carry (headers, record timestamps), each on an otherwise valid order."""
    at = START_TIME_MS + 1_000

    def valid(number: int) -> bytes:
        return order(number, at)

    return [
        Planned("too many headers", valid(1), "limit", at, [("h", b"1")] * 65),
        Planned("a huge header", valid(2), "limit", at, [("blob", b"x" * 70_000)]),
        Planned("a non-UTF-8 header", valid(3), None, at, [("x-bin", b"\xff\xfe\x00")]),
        Planned("a forged traceparent", valid(4), None, at, [("traceparent", b"00-forged-by-someone")]),
        Planned("a non-UTF-8 traceparent", valid(5), None, at, [("traceparent", b"\xff\xff")]),
        Planned("a valid traceparent", valid(6), None, at, [("traceparent", GOOD_TRACEPARENT)]),
        Planned("2 h after its timestamp", order(7, at + 2 * HOUR_MS), "timestamp", at),
        Planned("30 days before its timestamp", order(8, at - 30 * 24 * HOUR_MS), "timestamp", at),
    ]


def late_records() -> list[Planned]:
    """Orders an hour older than anything read before them (and their timestamps the same: not out of time)."""
    at = START_TIME_MS - HOUR_MS
    return [Planned(f"late {number}", order(number, at + number), "late", at + number) for number in range(20, 26)]


def valid_orders(partition: int) -> list[Planned]:
    """Generated orders of one partition, 3 in 10 of them for the hot customer, keyed by customer."""
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=5, rate_per_s=None, invalid_fraction=0.0)
    payloads = generate_events(generator, partition, 0, VALID_PER_PARTITION, START_TIME_MS).payloads.to_pylist()
    planned = []
    for index, payload in enumerate(payloads):
        record = msgspec.json.decode(payload)
        if index % 10 < HOT_SHARE:
            record["customer_id"] = HOT_CUSTOMER
        key = record["customer_id"].encode() if record["customer_id"] else None
        planned.append(Planned("valid", msgspec.json.encode(record), None, record["event_time_ms"], key=key))
    return planned


async def create_input_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(MAX_RECORD_BYTES)}
        await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1, topic_configs=config)]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, by_partition: dict[int, list[Planned]]) -> dict[tuple[int, int], Planned]:
    """Produce each partition's records in order; returns them by (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_RECORD_BYTES, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for partition, records in by_partition.items():
            for record in records:
                future = await producer.send(
                    topic, record.value, key=record.key, partition=partition, timestamp_ms=record.timestamp_ms,
                    headers=record.headers,
                )  # fmt: skip
                sent.append((future, record))
        placed = {}
        for future, record in sent:
            metadata = await future
            placed[(metadata.partition, metadata.offset)] = record
        return placed
    finally:
        await producer.stop()


def corpus_pipeline(bootstrap: str, topic: str, dead_letters: str, out: Path) -> PipelineConfig:
    source = {"type": "kafka", "topic": topic, "group_id": unique("corpus"), "start": "earliest"}
    config = orders_with(
        source, out, {"source_actors": 1, "aggregate_actors": 1}, kafka={"bootstrap_servers": bootstrap}
    )
    data = config.model_dump(mode="json", by_alias=True)
    data["dead_letter"] = {"type": "kafka", "topic": dead_letters}
    data["schema"]["max_past_ms"] = 7 * 24 * HOUR_MS
    return parse_config(data)


def test_the_corpus_through_kafka_halts_nothing_and_dead_letters_each_injected_record_once(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, dead_letter_topic = unique("corpus-in"), unique("corpus-dlq")
    asyncio.run(create_input_topic(kafka_bootstrap, topic))
    injected = corpus_records() + header_and_time_records()
    by_partition: dict[int, list[Planned]] = {partition: [] for partition in range(PARTITIONS)}
    for index, record in enumerate(injected):  # the bad records first: their event times are the oldest
        by_partition[index % PARTITIONS].append(record)
    for partition in range(PARTITIONS):
        by_partition[partition] += valid_orders(partition)
    placed = asyncio.run(produce(kafka_bootstrap, topic, by_partition))
    config = corpus_pipeline(kafka_bootstrap, topic, dead_letter_topic, tmp_path)
    late: dict[tuple[int, int], Planned] = {}

    def produce_late_once_the_rest_is_read(progress: RunProgress) -> None:
        # every partition is read to its end, so the watermark is past the run's start: these are late
        late.update(asyncio.run(produce(kafka_bootstrap, topic, {0: late_records()})))

    started: list[threading.Thread] = []

    def read_everything(progress: RunProgress) -> bool:
        if progress.events_in >= len(placed) and not started:
            started.append(threading.Thread(target=produce_late_once_the_rest_is_read, args=(progress,)))
            started[0].start()
        if started and not started[0].is_alive() and not late:
            return True  # producing the late records failed: stop, and let the assertions say what is missing
        return bool(late) and progress.events_in >= len(placed) + len(late)

    summary = run_pipeline(config, address=ray_driver.address, stop_when=read_everything)
    started[0].join(timeout=60)

    everything = {**placed, **late}
    expected = {where: record.expected for where, record in everything.items() if record.expected is not None}
    dead = topic_records(kafka_bootstrap, dead_letter_topic)
    seen: Counter[tuple[int, int]] = Counter()
    observed: dict[tuple[int, int], str] = {}
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers if name.startswith("eventray.")}
        where = (int(headers["eventray.source.partition"]), int(headers["eventray.source.offset"]))
        seen[where] += 1
        observed[where] = headers["eventray.error_type"]
        assert len(record.value or b"") + len(record.key or b"") <= 1_000_000, "a dead letter fits its topic"
    assert [where for where, count in seen.items() if count > 1] == [], "each record is dead-lettered once"
    named = {everything[where].name: error_type for where, error_type in observed.items()}
    assert named == {everything[where].name: error_type for where, error_type in expected.items()}
    oversize = [r for r in dead if dict(r.headers).get(TRIMMED_HEADER)]
    assert len(oversize) == 1 and int(dict(oversize[0].headers)[TRIMMED_HEADER]) > 1_000_000
    assert summary.progress.events_in == len(everything), "every record was read; none halted the run"
    assert summary.progress.dead_lettered + summary.progress.late_events == len(expected)
    report = asyncio.run(verify_run(config))
    assert report.failures("at_least_once") == []
    windows = _windows(tmp_path)
    hot_orders = sum(row["orders"] for row in windows if row["customer_id"] == HOT_CUSTOMER)
    assert hot_orders >= 0.25 * sum(row["orders"] for row in windows), "the hot key's windows are all there"


def _windows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((out / "windows").rglob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    return rows


def test_a_bad_deploy_trips_the_default_circuit_breaker(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """3,000 good orders, then a producer deploy that writes ``amount_cents`` as a string for 12,000 orders in a
    row: the default breaker trips (more than half of the last 10,000 events invalid, before 10,000 in a row).
    The run halts with eventray's message and operator action, not Ray's wrapping, and commits nothing."""
    topic = unique("bad-deploy-in")
    asyncio.run(create_input_topic(kafka_bootstrap, topic))
    good = [Planned("good", order(n, START_TIME_MS + n), None, START_TIME_MS + n) for n in range(3_000)]
    broken = [
        Planned("broken", order(n, START_TIME_MS + n, amount_cents="1.00 EUR"), "invalid", START_TIME_MS + n)
        for n in range(3_000, 15_000)
    ]
    asyncio.run(produce(kafka_bootstrap, topic, {0: good + broken}))
    config = corpus_pipeline(kafka_bootstrap, topic, unique("bad-deploy-dlq"), tmp_path)
    never = config.checkpoint.model_copy(update={"interval_ms": 3_600_000}) if config.checkpoint else None
    config = config.model_copy(update={"checkpoint": never})  # nothing may commit before the trip

    with pytest.raises(FatalError, match="circuit breaker tripped") as raised:
        run_pipeline(config, address=ray_driver.address)

    message = str(raised.value)
    assert "events were invalid (limit 50%)" in message and "Operator action" in message
    assert "ray::" not in message and "pid=" not in message, message
    committed = asyncio.run(committed_offsets(connection(kafka_bootstrap), topic, config.group_id))
    assert all(offset is None for offset in committed.values()), "a halted run must not commit its input"
