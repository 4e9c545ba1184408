"""Admin-side Kafka calls: topics, partition counts, end and committed offsets, reading a topic to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from types import MappingProxyType
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.protocol.admin import CreateAclsRequest

from actors.kafka.clients import started_admin, started_consumer
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.errors import ConfigError
from pipelines.io.kafka_acls import AclBinding

__all__ = [
    "committed_offsets",
    "create_acls",
    "end_offsets",
    "ensure_topic",
    "partition_count",
    "read_topic",
    "topic_partitions",
]

_ANY_HOST = "*"
# Compacted topics (the commit markers) roll a segment at 1 MiB or after 10 minutes, so the log cleaner, which
# never touches the active segment, keeps them to about one record per key plus a segment's worth: the
# brokers' default segment (1 GiB) would keep every marker of a long run.
_COMPACTED = MappingProxyType(
    {"cleanup.policy": "compact", "segment.bytes": str(1 << 20), "segment.ms": str(10 * 60 * 1000)}
)
_ALLOW = 3  # AclPermissionType.ALLOW in the Kafka protocol


async def ensure_topic(
    connection: KafkaConnectionConfig, topic: str, partitions: int, compacted: bool = False, retained: bool = False
) -> None:
    """Create ``topic`` with ``partitions`` partitions if it does not exist, replicated ``connection.
    replication_factor`` times (default: the brokers' ``default.replication.factor``, at most the number of
    brokers alive now: a topic created while a broker is down stays under-replicated until reassigned). A
    broker's refusal (invalid replication factor, a policy, no authorization) raises :class:`ConfigError`
    naming the topic and the broker's reason; a refusal that may pass (the controller moving) raises its Kafka
    error, which the Supervisor recovers from. ``compacted``: the newest record per key is kept; ``retained``:
    records are kept forever (an event store). An existing topic is left as it is."""
    configs = dict(_COMPACTED) if compacted else {}
    if retained:  # an event store: its records are never deleted by age or size
        configs.update({"retention.ms": "-1", "retention.bytes": "-1"})
    async with started_admin(connection) as admin:
        replication = connection.replication_factor or await _default_replication_factor(admin)
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication, topic_configs=configs)]
        )
    for refused in response.topic_errors:
        name, code, message = refused[0], refused[1], refused[2] if len(refused) > 2 else None
        if code in (0, TopicAlreadyExistsError.errno, RequestTimedOutError.errno):
            continue  # there, or on its way: the metadata wait below tells
        error = for_code(code)
        if error is TopicAuthorizationFailedError:
            raise error(name)  # explain_denied names the topic and the ACLs this pipeline needs on it
        if error.retriable:  # e.g. the controller moved: a broker restarting, worth another try later
            raise error(f"creating topic {name!r}: {message or error.__name__}")
        reason = message or error.__name__
        raise ConfigError(
            f"topic {name!r} cannot be created ({partitions} partitions, replication factor {replication}): "
            f"{reason}. Operator action: create it beforehand, or set kafka.replication_factor"
        )
    await _wait_for_metadata(connection, topic)


async def create_acls(connection: KafkaConnectionConfig, principal: str, bindings: list[AclBinding]) -> None:
    """Allow ``bindings`` to ``principal`` (``User:<name>``) from any host; creating an ACL that exists is a no-op.
    A refusal (the connection's principal may not alter ACLs, no authorizer configured) raises ConfigError
    naming the binding and the broker's reason."""
    async with started_admin(connection) as admin:
        for binding in bindings:
            request = CreateAclsRequest(binding.resource_type, binding.resource_name, binding.pattern_type,
                                        principal, _ANY_HOST, binding.operation, _ALLOW)  # fmt: skip
            # aiokafka 0.14 has the CreateAcls protocol but no admin method for it
            response = await admin._send_request(request)  # noqa: SLF001
            for code, message in response.creation_responses:
                if code != 0:
                    reason = message or for_code(code).__name__
                    raise ConfigError(
                        f"ACL not created ({binding.describe(principal)}): {reason}. Operator action: connect as "
                        "a principal allowed to alter ACLs (a super user), on a cluster with an authorizer"
                    )


async def topic_configs(connection: KafkaConnectionConfig, topic: str) -> dict[str, str]:
    """The configuration of ``topic`` as the brokers report it (``cleanup.policy``, ``retention.ms`` ...)."""
    async with started_admin(connection) as admin:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return {
        str(entry[0]): str(entry[1])
        for response in responses
        for resource in response.resources
        for entry in resource[4]
    }


async def _default_replication_factor(admin: AIOKafkaAdminClient) -> int:
    """The brokers' ``default.replication.factor`` (at most the brokers there are); where it cannot be read (a
    principal without DescribeConfigs), the smaller of 3 and the number of brokers."""
    brokers = [int(broker["node_id"]) for broker in (await admin.describe_cluster())["brokers"]]
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(brokers[0]), {"default.replication.factor": None})]
        )
        entries = {
            entry[0]: entry[1]
            for response in responses
            for resource in response.resources
            if resource[0] == 0
            for entry in resource[4]
        }
        configured = int(entries["default.replication.factor"])
    except (KafkaError, KeyError, ValueError):
        return min(3, len(brokers))
    return max(1, min(configured, len(brokers)))


async def _wait_for_metadata(connection: KafkaConnectionConfig, topic: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await partition_count(connection, topic, required=False) == 0:
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(f"topic {topic!r} was created but has no partitions after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def topic_partitions(connection: KafkaConnectionConfig, topic: str) -> list[dict[str, Any]]:
    """The metadata of ``topic``'s partitions (``partition``, ``leader``, ``replicas``, ``isr``); empty when the
    topic does not exist. Raises ``TopicAuthorizationFailedError`` when the principal may not describe it (Kafka
    then does not say whether it exists)."""
    async with started_admin(connection) as admin:
        described = await admin.describe_topics([topic])
    for entry in described:
        if entry["error_code"] == TopicAuthorizationFailedError.errno:
            raise TopicAuthorizationFailedError(topic)  # explain_denied names it and the ACLs this pipeline needs
    return [p for entry in described if entry["error_code"] == 0 for p in entry["partitions"]]


async def partition_count(connection: KafkaConnectionConfig, topic: str, required: bool = True) -> int:
    """How many partitions ``topic`` has; raise ConfigError naming the topic when it does not exist."""
    partitions = await topic_partitions(connection, topic)
    if not partitions and required:
        raise ConfigError(
            f"source.topic: topic {topic!r} does not exist on the brokers. Operator action: create it, "
            "or produce to it first (eventray produce creates it)"
        )
    return len(partitions)


async def end_offsets(connection: KafkaConnectionConfig, topic: str) -> dict[int, int]:
    tps = [TopicPartition(topic, partition) for partition in range(await partition_count(connection, topic))]
    async with started_consumer(connection) as consumer:
        ends = await consumer.end_offsets(tps) if tps else {}
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def committed_offsets(connection: KafkaConnectionConfig, topic: str, group_id: str) -> dict[int, int | None]:
    partitions = range(await partition_count(connection, topic))
    async with started_consumer(connection, group_id=group_id, enable_auto_commit=False) as consumer:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}


async def read_topic(
    connection: KafkaConnectionConfig,
    topic: str,
    idle_s: float = 2.0,
    partitions: Collection[int] | None = None,
    deadline_s: float = 120,
) -> list[Any]:
    """Every committed record of ``topic`` (of ``partitions`` only, when given) from the beginning
    (read_committed), once the end is reached or ``deadline_s`` passed (a transaction still open holds a
    read_committed consumer before the end)."""
    ends = await end_offsets(connection, topic)
    records: list[Any] = []
    options = {"enable_auto_commit": False, "isolation_level": "read_committed", "auto_offset_reset": "earliest"}
    async with started_consumer(connection, **options) as consumer:
        tps = [TopicPartition(topic, p) for p in ends if (partitions is None or p in partitions) and ends[p] > 0]
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + deadline_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp.partition]]:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000)
            for partition_records in batch.values():
                records.extend(partition_records)
            if asyncio.get_running_loop().time() > deadline:
                break
    return records
