"""A topic mixing three writer versions of one event, registered in a real schema registry (Apicurio's
Confluent-compatible API), read by a run against a real broker into one reader schema: every event equal to
fastavro's own resolution of it (and v1 upcast: its orders came from the tills), in every partition; unknown
schema ids, records not in the wire format and truncated bodies dead-lettered with their own error types, and
nothing lost. The same run writes its events
as Avro under the schema registered for its output topic, read back byte for byte; a sink whose schema is not
registered refuses to start, naming the subject and the command that registers it."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from cluster.examples.order_versions import register_versions
from pipelines.config.kafka import KafkaSinkConfig
from pipelines.config.pipeline import parse_config
from pipelines.config.registry import RegistryConfig
from pipelines.errors import ConfigError
from pipelines.examples import order_versions
from pipelines.examples.order_versions import READER, READER_FILE, V3, WRITERS
from pipelines.schemas.sink_schemas import register_sink_schema, writer_schema_ids
from pipelines.schemas.wire_format import framed
from tests.integration.pipelines_under_test import create_topic, produce_payloads, topic_records, unique
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
    """fastavro's writer -> reader resolution of one record (not eventray's), times as epoch ms; v1 orders from
    the tills (the example's upcaster, written again here)."""
    record = fastavro.schemaless_reader(
        io.BytesIO(payload[5:]), fastavro.parse_schema(WRITERS[version - 1]), fastavro.parse_schema(READER)
    )
    assert isinstance(record, dict)
    if isinstance(record["placed_ms"], datetime.datetime):
        record["placed_ms"] = int(record["placed_ms"].timestamp() * 1000)
    if version == 1:
        record["channel"] = "pos"
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
    out_topic = unique("orders-avro-out")
    create_topic(kafka_bootstrap, out_topic, partitions=2)
    avro_sink = {"type": "kafka", "topic": out_topic, "key_column": "order_id", "format": "avro", "avro_schema": V3,
                 "registry": {"url": schema_registry_url}}  # fmt: skip
    registered = asyncio.run(register_sink_schema(KafkaSinkConfig.model_validate(avro_sink), json.dumps(V3)))
    config = parse_config(
        {
            "name": unique("registry"),
            "source": {"type": "kafka", "topic": topic, "group_id": unique("registry"), "start": "earliest"},
            "schema": {
                "format": "avro",
                "registry": {
                    "url": schema_registry_url,
                    "reader_schema_file": str(READER_FILE),
                    "upcasters": "pipelines.examples.order_versions:UPCASTERS",
                },
                "fields": FIELDS,
                "event_time_field": "placed_ms",
                "event_id_field": "order_id",
                "max_future_ms": None,
            },
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}, avro_sink],
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
    written_out = topic_records(kafka_bootstrap, out_topic)
    out_id = registered[f"{out_topic}-value"]
    assert {record.value[:5] for record in written_out} == {framed(out_id, b"")}
    read_back = {}
    for record in written_out:
        value = fastavro.schemaless_reader(io.BytesIO(record.value[5:]), fastavro.parse_schema(V3), None)
        assert isinstance(value, dict)
        read_back[value["order_id"]] = {**value, "placed_ms": int(value["placed_ms"].timestamp() * 1000)}
    assert read_back == expected, "the Avro sink wrote every event, as read"


def test_a_sink_whose_schema_is_not_registered_refuses_to_start(schema_registry_url: str) -> None:
    sink = KafkaSinkConfig(
        topic=unique("unregistered"), format="avro", avro_schema=V3, registry=RegistryConfig(url=schema_registry_url)
    )

    with pytest.raises(ConfigError, match=r"not registered under subject 'unregistered-[^']*-value'.*schema register"):
        asyncio.run(writer_schema_ids(sink, json.dumps(V3)))

    auto = sink.model_copy(update={"auto_register": True})
    ids = asyncio.run(writer_schema_ids(auto, json.dumps(V3)))
    assert asyncio.run(writer_schema_ids(sink, json.dumps(V3))) == ids, "registered once, found after"
