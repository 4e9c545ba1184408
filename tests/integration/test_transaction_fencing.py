"""Zombie fencing on a real broker, with eventray's own transactional producer: an actor that a recovery replaced
but that still runs (a paused process, a partitioned host) shares its slot's transactional id with its
replacement. Starting the replacement fences it: its open transaction is aborted, its later commit fails with
``ProducerFenced``, and a ``read_committed`` reader sees only the replacement's records."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError, ProducerFenced

from actors.epoch_outputs import TransactionalKafkaOutput
from actors.kafka.producer_sink import KafkaTopicProducer
from actors.outputs import ActorOutputs, open_actor_outputs
from actors.recovery import fence_kafka_outputs
from actors.telemetry import Telemetry
from pipelines.config.pipeline import parse_config
from pipelines.io.kafka_records import OutgoingRecord
from tests.integration.pipelines_under_test import (
    connection,
    create_topic,
    generator_source,
    orders_with,
    topic_records,
    unique,
)

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


@pytest.mark.parametrize(
    ("slot", "results", "suffix", "slots"),
    [
        ("aggregate-0", True, "-late", ["aggregate-0/sink-0", "aggregate-0-late/dead-letter"]),
        ("source-0", False, "", ["source-0/dead-letter"]),  # a source feeding a keyed stage: dead letters only
    ],
)
def test_an_actors_outputs_opened_side_by_side_keep_their_slots_and_fence_the_actor_they_replace(
    kafka_bootstrap: str, tmp_path: Path, slot: str, results: bool, suffix: str, slots: list[str]
) -> None:
    """An actor's outputs (an aggregate's result sink and late-event dead letters) start at once: a recovery
    waits for the slowest, not for each in turn. Each keeps its slot, the transactional id that fences the dead
    actor's producer."""
    results_topic, late = unique("fencing-results"), unique("fencing-late")
    for topic in (results_topic, late):
        create_topic(kafka_bootstrap, topic, partitions=1)
    config = orders_with(generator_source(), tmp_path, {}, kafka={"bootstrap_servers": kafka_bootstrap})
    config = parse_config({
        **config.model_dump(mode="json", by_alias=True, exclude_none=True),
        "sinks": [{"type": "kafka", "topic": results_topic}], "dead_letter": {"type": "kafka", "topic": late},
        "delivery": "exactly_once", "checkpoint": {"uri": str(tmp_path / "checkpoints")},
    })  # fmt: skip

    def opened(actor_id: str) -> ActorOutputs:
        return open_actor_outputs(config, actor_id, slot, Telemetry(config, actor_id), "lineage",
                                  results=results, dead_letter_suffix=suffix)  # fmt: skip

    zombie = opened(f"{slot}-run-1")
    replacement = opened(f"{slot}-run-2")
    try:
        opened_slots = [output.slot for output in [*replacement.results, replacement.dead_letter]
                        if isinstance(output, TransactionalKafkaOutput)]  # fmt: skip
        assert opened_slots == slots
        fence_kafka_outputs([*replacement.results, replacement.dead_letter])
        for output in [*zombie.results, zombie.dead_letter]:
            assert isinstance(output, TransactionalKafkaOutput)
            with pytest.raises(KafkaError) as raised:
                output.sink.producer.send(records("zombie"))  # an empty transaction would never reach the broker
                output.sink.producer.commit_transaction()
            assert isinstance(raised.value, ProducerFenced), f"{output.slot}: fenced, not {type(raised.value)}"
    finally:
        for output in [*zombie.results, zombie.dead_letter, *replacement.results, replacement.dead_letter]:
            with contextlib.suppress(KafkaError):
                output.close()
