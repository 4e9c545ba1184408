"""Is a system's output the job's output? Read what it wrote and compare it with :func:`expected_output`.

W1/W1D/W3: every emitted (customer, window) must have the expected count and sum (W1D: over the valid events
only), none twice; every window that closes on event time (end at or before the final watermark) must be there.
Windows after that need an end-of-input flush, which streaming systems without bounded input do not do: they
are reported, not required.
W2: every order exactly once with the expected fields, nothing else.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from actors.kafka.admin import partition_count
from benchmarks.workloads import WINDOW_MS, Expected, WindowKey, order_tuple
from pipelines.config.kafka import KafkaConnectionConfig

__all__ = ["Verdict", "read_jsonl_dir", "read_topic_values", "verify_orders", "verify_windows"]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    summary: str
    checked: int

    def as_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "summary": self.summary, "checked": self.checked}


async def _read_topic(bootstrap: str, topic: str, idle_s: float = 1.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed",
        max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
    )  # fmt: skip
    partitions = await partition_count(KafkaConnectionConfig(bootstrap_servers=bootstrap), topic)
    tps = [TopicPartition(topic, partition) for partition in range(partitions)]
    await consumer.start()
    values: list[bytes] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + 300
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=50_000)
            values.extend(record.value for records in batch.values() for record in records)
            if asyncio.get_running_loop().time() > deadline:
                break
    finally:
        await consumer.stop()
    return values


def read_topic_values(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every committed record of ``topic``, decoded from JSON."""
    return [orjson.loads(value) for value in asyncio.run(_read_topic(bootstrap, topic))]


def read_jsonl_dir(directory: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in sorted(directory.glob("*.jsonl")):
        rows.extend(json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line)
    return rows


def verify_windows(rows: list[dict[str, Any]], expected: Expected) -> Verdict:
    seen: Counter[WindowKey] = Counter()
    wrong = malformed = 0
    for row in rows:
        try:
            key = (str(row["customer_id"]), int(row["window_start_ms"]))
            value = (int(row["orders"]), int(row["revenue_cents"]))
            well_formed = int(row["window_end_ms"]) == key[1] + WINDOW_MS
        except (KeyError, TypeError, ValueError):
            malformed += 1
            continue
        seen[key] += 1
        if not well_formed:
            malformed += 1
        elif expected.windows.get(key) != value:
            wrong += 1
    duplicates = sum(count - 1 for count in seen.values() if count > 1)
    closable = {key for key in expected.windows if key[1] + WINDOW_MS <= expected.final_watermark_ms}
    missing = len(closable - seen.keys())
    tail = len(expected.windows) - len(closable)
    tail_emitted = sum(1 for key in seen if key not in closable and key in expected.windows)
    unexpected = sum(1 for key in seen if key not in expected.windows)
    correct = not (wrong or malformed or duplicates or missing or unexpected)
    parts = [f"{len(seen)}/{len(expected.windows)} windows", f"tail {tail_emitted}/{tail} flushed"]
    for label, count in (("wrong values", wrong), ("malformed", malformed), ("duplicates", duplicates),
                         ("missing closable", missing), ("unexpected", unexpected)):  # fmt: skip
        if count:
            parts.append(f"{count} {label}")
    return Verdict(correct, ", ".join(parts), len(rows))


def verify_orders(rows: list[dict[str, Any]], expected: Expected) -> Verdict:
    seen: Counter[str] = Counter()
    wrong = malformed = 0
    for row in rows:
        try:
            event_id = str(row["event_id"])
            value = order_tuple(row)
        except (KeyError, TypeError):
            malformed += 1
            continue
        seen[event_id] += 1
        if expected.orders.get(event_id) != value:
            wrong += 1
    duplicates = sum(count - 1 for count in seen.values() if count > 1)
    missing = len(expected.orders.keys() - seen.keys())
    correct = not (wrong or malformed or duplicates or missing)
    parts = [f"{len(seen)}/{len(expected.orders)} orders"]
    for label, count in (("wrong", wrong), ("malformed", malformed), ("duplicates", duplicates),
                         ("missing", missing)):  # fmt: skip
        if count:
            parts.append(f"{count} {label}")
    return Verdict(correct, ", ".join(parts), len(rows))
