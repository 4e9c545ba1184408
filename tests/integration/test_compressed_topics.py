"""Topics written by real producers are compressed: one partition each with gzip, snappy, lz4 and zstd (and one
without), read by one run against a real broker. Every event arrives, decoded the same as uncompressed; the
run's Kafka sinks write with each codec eventray offers (``compression`` of a Kafka sink)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.run_report import RunProgress
from cluster.runner import run_pipeline
from pipelines.config import GeneratorSourceConfig
from pipelines.generator import generate_events
from tests.integration.pipelines_under_test import (
    START_TIME_MS,
    create_topic,
    passthrough,
    produce_payloads,
    topic_records,
    unique,
)
from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
SINK_CODECS = ["gzip", "lz4", "zstd"]
EVENTS_PER_PARTITION = 2_000


async def produce_compressed(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    """Partition i gets its events from a producer that compresses with ``CODECS[i]``."""
    generator = GeneratorSourceConfig(partitions=len(CODECS), seed=3, rate_per_s=None, invalid_fraction=0.0)
    sent: dict[int, list[bytes]] = {}
    for partition, codec in enumerate(CODECS):
        payloads = generate_events(generator, partition, 0, EVENTS_PER_PARTITION, START_TIME_MS).payloads.to_pylist()
        await produce_payloads(bootstrap, topic, payloads, partition, compression=codec)
        sent[partition] = payloads
    return sent


def test_gzip_snappy_lz4_and_zstd_topics_are_read_in_full(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = unique("compressed-in")
    create_topic(kafka_bootstrap, topic, partitions=len(CODECS))
    sent = asyncio.run(produce_compressed(kafka_bootstrap, topic))
    total = sum(len(payloads) for payloads in sent.values())
    outputs = {codec: unique(f"compressed-out-{codec}") for codec in SINK_CODECS}
    for out in outputs.values():
        create_topic(kafka_bootstrap, out, partitions=1)
    kafka_sinks = [{"type": "kafka", "topic": out, "compression": codec} for codec, out in outputs.items()]
    config = passthrough(
        source={"type": "kafka", "topic": topic, "group_id": unique("compressed"), "start": "earliest"},
        sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}, *kafka_sinks],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        runtime={"source_actors": 1},
        kafka={"bootstrap_servers": kafka_bootstrap},
    )

    def everything_read(progress: RunProgress) -> bool:
        return progress.events_in >= total

    summary = run_pipeline(config, address=ray_driver.address, stop_when=everything_read)

    assert summary.progress.events_in == total
    rows = read_jsonl_dir(tmp_path / "out")
    by_partition: dict[int, int] = {}
    for row in rows:
        by_partition[row["_partition"]] = by_partition.get(row["_partition"], 0) + 1
    assert by_partition == {partition: EVENTS_PER_PARTITION for partition in range(len(CODECS))}, "every codec"
    assert read_jsonl_dir(tmp_path / "dead_letter") == []
    for codec, out in outputs.items():
        assert len(topic_records(kafka_bootstrap, out)) == total, f"the {codec} sink wrote every event"
