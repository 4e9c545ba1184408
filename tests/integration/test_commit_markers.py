"""Commit markers on a real broker: the Supervisor's reader takes only committed markers of its lineage, each read
starts where the last ended, and the verdict equals a read of the whole topic; the marker topic is created so the
log cleaner can compact it."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from actors.kafka.admin import ensure_topic, topic_configs
from actors.kafka.commit_markers import CommitMarker, CommitMarkerLog, commit_marker_topic
from tests.integration.pipelines_under_test import connection, unique

pytestmark = [pytest.mark.kafka]

LINEAGE = "this-location"


async def _write(bootstrap: str, pipeline: str, markers: list[CommitMarker], *, commit: bool) -> None:
    """``markers`` in one transaction, committed or aborted."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("markers"), acks="all")
    await producer.start()
    try:
        await producer.begin_transaction()
        for marker in markers:
            await producer.send(commit_marker_topic(pipeline), marker.value(), key=marker.key(), partition=0)
        await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()


async def _settled_end(bootstrap: str, topic: str) -> int:
    """The end offset once every transaction's markers are in the log: the broker answers an abort before its
    markers reach the partition, and until then a read_committed end offset stops short of the aborted records."""
    committed = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    uncommitted = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted")
    await committed.start()
    await uncommitted.start()
    try:
        tp = TopicPartition(topic, 0)
        stable = high = 0
        for _ in range(600):
            stable = int((await committed.end_offsets([tp]))[tp])
            high = int((await uncommitted.end_offsets([tp]))[tp])
            if stable == high:
                return stable
            await asyncio.sleep(0.05)
        raise AssertionError(f"{topic}: the last stable offset stayed at {stable}, below {high}")
    finally:
        await committed.stop()
        await uncommitted.stop()


async def test_each_read_takes_what_was_committed_since_the_last_and_agrees_with_a_whole_read(
    kafka_bootstrap: str,
) -> None:
    pipeline = unique("markers")
    await ensure_topic(connection(kafka_bootstrap), commit_marker_topic(pipeline), 1, compacted=True)
    await _write(kafka_bootstrap, pipeline, [CommitMarker("a", 1, LINEAGE), CommitMarker("b", 1, LINEAGE)], commit=True)
    await _write(kafka_bootstrap, pipeline, [CommitMarker("a", 2, LINEAGE)], commit=False)
    await _write(kafka_bootstrap, pipeline, [CommitMarker("a", 99, "another-location"), CommitMarker("b", 99)],
                 commit=True)  # fmt: skip
    log = CommitMarkerLog(pipeline, LINEAGE)

    first = await log.committed(connection(kafka_bootstrap))
    read_first = log.records_read

    assert first == {"a": 1, "b": 1}, "the aborted epoch 2 and the other lineages' markers do not count"
    assert read_first == 4, "the committed markers of every lineage (the aborted one is not returned)"

    await _write(kafka_bootstrap, pipeline, [CommitMarker("a", 3, LINEAGE)], commit=True)
    second = await log.committed(connection(kafka_bootstrap))

    assert second == {"a": 3, "b": 1}
    assert log.records_read - read_first == 1, "the second read starts where the first ended"
    assert await CommitMarkerLog(pipeline, LINEAGE).committed(connection(kafka_bootstrap)) == second, (
        "a read of the whole topic gives the same verdict"
    )
    assert await log.committed(connection(kafka_bootstrap)) == second, "nothing new: the same verdict"

    await _write(kafka_bootstrap, pipeline, [CommitMarker("b", 4, LINEAGE)], commit=False)
    end = await _settled_end(kafka_bootstrap, commit_marker_topic(pipeline))
    assert await log.committed(connection(kafka_bootstrap)) == second, "a log ending in an aborted transaction"
    assert log.position == end, "read to its end, past the aborted record and its abort marker"


async def test_the_marker_topic_rolls_small_segments_so_the_cleaner_can_compact_it(kafka_bootstrap: str) -> None:
    topic = commit_marker_topic(unique("markers"))
    await ensure_topic(connection(kafka_bootstrap), topic, 1, compacted=True)
    configs = await topic_configs(connection(kafka_bootstrap), topic)

    assert configs["cleanup.policy"] == "compact"
    assert int(configs["segment.bytes"]) == 1 << 20
    assert int(configs["segment.ms"]) == 600_000
