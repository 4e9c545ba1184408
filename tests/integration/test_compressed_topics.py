"""Topics written by real producers are compressed: one partition each with gzip, snappy, lz4 and zstd (and one
without), read by one run against a real broker. Every event arrives, decoded the same as uncompressed; the
run's Kafka sinks write with each codec eventray offers (``compression`` of a Kafka sink). A batch that
decompresses past ``schema.max_decompressed_batch_bytes`` (a decompression bomb) is dead letters, in each codec,
and its partition reads on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.commands.verify import verify_run
from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.io.generator import generate_events
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


BOMB_CAP = 1_000_000
# Each record is within schema.max_record_bytes (1 MiB) and compresses to a few KB; three of them in one batch
# decompress past the cap. (Read without the cap, they would be dead letters of another kind: invalid events.)
BOMB = [b'{"event_type": "OrderCreated", "padding": "' + b" " * 900_000 + b'"}'] * 3
GOOD_BEFORE, GOOD_AFTER = 300, 200


async def produce_bombs(bootstrap: str, topic: str, codecs: list[str]) -> range:
    """Partition i, compressed with ``codecs[i]``: events, one batch of records that decompresses to 2.7 MB,
    events (three producers, so three batches at least); returns the bomb's offsets (the same everywhere)."""
    generator = GeneratorSourceConfig(partitions=len(codecs), seed=5, rate_per_s=None, invalid_fraction=0.0)
    for partition, codec in enumerate(codecs):
        payloads = generate_events(generator, partition, 0, GOOD_BEFORE + GOOD_AFTER, START_TIME_MS).payloads
        events = payloads.to_pylist()
        await produce_payloads(bootstrap, topic, events[:GOOD_BEFORE], partition, compression=codec)
        await produce_payloads(
            bootstrap, topic, BOMB, partition, compression=codec, max_request_size=8 << 20, max_batch_size=8 << 20
        )
        await produce_payloads(bootstrap, topic, events[GOOD_BEFORE:], partition, compression=codec)
    return range(GOOD_BEFORE, GOOD_BEFORE + len(BOMB))


def test_a_decompression_bomb_in_each_codec_is_dead_letters_and_its_partition_reads_on(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    codecs = ["gzip", "snappy", "lz4", "zstd"]
    topic = unique("bombs")
    create_topic(kafka_bootstrap, topic, partitions=len(codecs))
    bombs = asyncio.run(produce_bombs(kafka_bootstrap, topic, codecs))
    written = GOOD_BEFORE + len(bombs) + GOOD_AFTER
    config = passthrough(
        source={"type": "kafka", "topic": topic, "group_id": unique("bombs"), "start": "earliest"},
        sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
        dead_letter={"type": "jsonl", "path": str(tmp_path / "dead_letter")},
        runtime={"source_actors": 1},
        kafka={"bootstrap_servers": kafka_bootstrap},
        schema={"max_decompressed_batch_bytes": BOMB_CAP},
    )

    def everything_read(progress: RunProgress) -> bool:
        return progress.events_in >= len(codecs) * (written - len(bombs) + 1)

    summary = run_pipeline(config, address=ray_driver.address, stop_when=everything_read)

    # each bomb counts as one record read (its batch is one dead letter): none halted a partition
    assert summary.progress.events_in == len(codecs) * (written - len(bombs) + 1)
    rows = read_jsonl_dir(tmp_path / "out")
    assert sorted({(row["_partition"], row["_offset"]) for row in rows}) == sorted(
        (partition, offset) for partition in range(len(codecs)) for offset in range(written) if offset not in bombs
    ), "every event before and after each bomb"
    dead = read_jsonl_dir(tmp_path / "dead_letter")
    assert sorted((row["partition"], row["offset"], row["error_type"]) for row in dead) == [
        (partition, bombs[0], "limit") for partition in range(len(codecs))
    ], "one dead letter per bomb batch, at its first offset"
    for row in dead:
        codec = codecs[row["partition"]]
        assert row["reason"].startswith(f"record batch at offsets {bombs[0]}-{bombs[-1]} ({codec}) ")
        assert f"schema.max_decompressed_batch_bytes ({BOMB_CAP:,})" in row["reason"]
        assert row["payload_base64"] is None, "never decompressed"
    report = asyncio.run(verify_run(config))
    assert report.failures("at_least_once") == [], "the checker reads the topic by the same rule"
