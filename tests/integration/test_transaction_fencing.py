"""Zombie fencing on a real broker, with eventray's own transactional producer: an actor that a recovery replaced
but that still runs (a paused process, a partitioned host) shares its slot's transactional id with its
replacement. Starting the replacement fences it: its open transaction is aborted, its later commit fails with
``ProducerFenced``, and a ``read_committed`` reader sees only the replacement's records."""

from __future__ import annotations

import contextlib

import pytest
from aiokafka.errors import KafkaError, ProducerFenced

from actors.kafka.producer_sink import KafkaTopicProducer
from pipelines.io.kafka_records import OutgoingRecord
from tests.integration.pipelines_under_test import connection, create_topic, topic_records, unique

pytestmark = [pytest.mark.kafka]


def records(*values: str) -> list[OutgoingRecord]:
    return [OutgoingRecord(value.encode(), b"k", 0, []) for value in values]


def test_a_replacement_fences_the_zombie_of_its_slot_and_readers_see_only_the_replacements_records(
    kafka_bootstrap: str,
) -> None:
    topic = unique("fencing")
    create_topic(kafka_bootstrap, topic, partitions=1)
    slot_id = unique("eventray-fencing-aggregate-0")
    zombie = KafkaTopicProducer(connection(kafka_bootstrap), topic, "zombie", transactional_id=slot_id)
    replacement: KafkaTopicProducer | None = None
    try:
        zombie.send(records("zombie-before"))
        zombie.flush()  # written to the log, inside a transaction still open

        replacement = KafkaTopicProducer(connection(kafka_bootstrap), topic, "replacement", transactional_id=slot_id)
        replacement.send(records("replacement-1", "replacement-2"))
        replacement.commit_transaction()

        with pytest.raises(KafkaError) as raised:
            zombie.send(records("zombie-after"))
            zombie.commit_transaction()
        assert isinstance(raised.value, ProducerFenced), f"fenced, not {type(raised.value).__name__}"
    finally:
        for producer in (zombie, replacement):
            if producer is not None:
                with contextlib.suppress(KafkaError):  # a fenced producer cannot end its transaction
                    producer.close()

    seen = [record.value.decode() for record in topic_records(kafka_bootstrap, topic)]
    assert seen == ["replacement-1", "replacement-2"], "the zombie's records were aborted, before and after"
