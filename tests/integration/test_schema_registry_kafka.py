"""A topic mixing three writer versions of one event, registered in a real schema registry (Apicurio's
Confluent-compatible API), read by a run against a real broker into one reader schema: every event equal to
fastavro's own resolution of it, in every partition; unknown schema ids, records not in the wire format and
truncated bodies dead-lettered with their own error types, and nothing lost."""

from __future__ import annotations

import asyncio
import datetime
import io
from pathlib import Path
from typing import Any

import fastavro
import pytest

from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from cluster.examples.order_versions import register_versions
from pipelines.config.pipeline import parse_config
from pipelines.config.registry import RegistryConfig
from pipelines.examples import order_versions
from pipelines.examples.order_versions import READER, READER_FILE, WRITERS
from tests.integration.pipelines_under_test import create_topic, produce_payloads, unique
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

PARTITIONS = 4
ORDERS = 3_000
FIELDS = {
    "order_id": "string",
    "customer_id": "string",
    "amount_cents": "int64",
    "currency": "string",
    "channel": "string",
    "placed_ms": "timestamp_ms",
}


def reference(payload: bytes, version: int) -> dict[str, Any]:
    """fastavro's writer -> reader resolution of one record (not eventray's), times as epoch ms."""
    record = fastavro.schemaless_reader(
        io.BytesIO(payload[5:]), fastavro.parse_schema(WRITERS[version - 1]), fastavro.parse_schema(READER)
    )
    assert isinstance(record, dict)
    if isinstance(record["placed_ms"], datetime.datetime):
        record["placed_ms"] = int(record["placed_ms"].timestamp() * 1000)
    return record


def test_three_writer_versions_on_one_topic_read_as_the_reader_schema(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, schema_registry_url: str, tmp_path: Path
) -> None:
    topic = unique("orders-avro")
    ids = asyncio.run(register_versions(RegistryConfig(url=schema_registry_url), f"{topic}-value"))
    assert len(set(ids)) == 3
    create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    written = order_versions.records(ORDERS, ids)
    unknown_id = max(ids) + 10_000
    dirty = [
        order_versions.encoded(order_versions.order(ORDERS, 2), 2, unknown_id),  # an id nobody registered
        b'{"order_id": "a JSON producer on the same topic"}',
        written[0][1][:8],  # a body cut short
    ]
    for partition in range(PARTITIONS):
        part = [payload for index, (_, payload) in enumerate(written) if index % PARTITIONS == partition]
        asyncio.run(produce_payloads(kafka_bootstrap, topic, [*part, dirty[partition % 3]], partition))
    total = ORDERS + PARTITIONS
    config = parse_config(
        {
            "name": unique("registry"),
            "source": {"type": "kafka", "topic": topic, "group_id": unique("registry"), "start": "earliest"},
            "schema": {
                "format": "avro",
                "registry": {"url": schema_registry_url, "reader_schema_file": str(READER_FILE)},
                "fields": FIELDS,
                "event_time_field": "placed_ms",
                "event_id_field": "order_id",
                "max_future_ms": None,
            },
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
            "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead_letter")},
            "runtime": {"duration_s": None, "source_actors": 2},
            "kafka": {"bootstrap_servers": kafka_bootstrap},
        }
    )

    def everything_read(progress: RunProgress) -> bool:
        return progress.events_in >= total

    summary = run_pipeline(config, address=ray_driver.address, stop_when=everything_read)

    assert summary.progress.events_in == total
    rows = {row["order_id"]: row for row in read_jsonl_dir(tmp_path / "out")}
    expected = {order["order_id"]: order for order in (reference(p, version) for version, p in written)}
    assert len(rows) == ORDERS
    assert {key: {name: row[name] for name in FIELDS} for key, row in rows.items()} == expected
    letters = read_jsonl_dir(tmp_path / "dead_letter")
    kinds = sorted(letter["error_type"] for letter in letters)
    assert kinds == sorted(["unknown_schema", "undecodable", "undecodable", "unknown_schema"])
    unknown = [letter for letter in letters if letter["error_type"] == "unknown_schema"]
    assert all(f"schema id {unknown_id} is not in the schema registry" in letter["reason"] for letter in unknown)
