"""Topics eventray creates, against the real broker: replicated as the brokers' default says, and a broker's
refusal named instead of waited out."""

from __future__ import annotations

import uuid

import pytest

from actors.kafka.admin import ensure_topic, partition_count, topic_partitions
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.errors import ConfigError

pytestmark = pytest.mark.kafka


async def test_a_created_topic_takes_the_brokers_default_replication_and_creating_it_again_is_fine(
    kafka_bootstrap: str,
) -> None:
    connection = KafkaConnectionConfig(bootstrap_servers=kafka_bootstrap)
    topic = f"topics-{uuid.uuid4().hex[:12]}"

    await ensure_topic(connection, topic, 3, compacted=True)
    await ensure_topic(connection, topic, 3, compacted=True)  # already there: nothing to do

    assert await partition_count(connection, topic) == 3
    replicas = [len(partition["replicas"]) for partition in await topic_partitions(connection, topic)]
    assert replicas == [1, 1, 1], "the single dev broker's default, 1"


async def test_a_replication_factor_the_brokers_cannot_meet_is_refused_naming_topic_and_reason(
    kafka_bootstrap: str,
) -> None:
    connection = KafkaConnectionConfig(bootstrap_servers=kafka_bootstrap, replication_factor=3)
    topic = f"topics-{uuid.uuid4().hex[:12]}"

    with pytest.raises(ConfigError) as refused:
        await ensure_topic(connection, topic, 2)

    message = str(refused.value)
    assert f"topic {topic!r} cannot be created (2 partitions, replication factor 3)" in message
    assert "Operator action" in message
    assert await partition_count(connection, topic, required=False) == 0
