"""The Kafka ACLs a pipeline needs, and nothing more: what to grant its principal on a secured cluster.

Derived from the config alone (no broker), so an operator can review and apply them before the first run:

- the source topic: ``Read`` and ``Describe``; its consumer group: ``Read`` (positions are committed there);
- every Kafka output (sinks, the dead-letter topic, and under exactly-once the commit-marker topic):
  ``Write`` and ``Describe``, plus ``Create`` while ``kafka.create_topics`` is on; the commit-marker topic also
  ``Read`` (the Supervisor reads it at recovery);
- under exactly-once, the transactional ids ``eventray-<name>-*`` (prefixed): ``Write`` and ``Describe``.

Nothing on the cluster resource: the brokers' ``default.replication.factor`` needs ``DescribeConfigs`` there,
and without it topics are created with ``kafka.replication_factor`` or else the smaller of 3 and the brokers.
Resource and operation codes are those of the Kafka protocol (``CreateAcls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pipelines.config.kafka import KafkaDeadLetterConfig, KafkaSinkConfig, KafkaSourceConfig
from pipelines.config.pipeline import PipelineConfig

__all__ = [
    "AclBinding",
    "Operation",
    "PatternType",
    "ResourceType",
    "commit_marker_topic",
    "required_acls",
    "transactional_id_prefix",
]


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


@dataclass(frozen=True, order=True)
class AclBinding:
    """Allow ``operation`` on a resource to one principal from any host."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation

    def describe(self, principal: str) -> str:
        """The binding as a line of ``kafka-acls.sh --add`` arguments."""
        pattern = "prefixed" if self.pattern_type is PatternType.PREFIXED else "literal"
        resource = {
            ResourceType.TOPIC: f"--topic {self.resource_name}",
            ResourceType.GROUP: f"--group {self.resource_name}",
            ResourceType.CLUSTER: "--cluster",
            ResourceType.TRANSACTIONAL_ID: f"--transactional-id {self.resource_name}",
        }[self.resource_type]
        operation = self.operation.name.title()
        return f"--allow-principal {principal} --operation {operation} {resource} --resource-pattern-type {pattern}"

    def as_dict(self) -> dict[str, str]:
        return {
            "resource_type": self.resource_type.name.lower(),
            "resource_name": self.resource_name,
            "pattern_type": self.pattern_type.name.lower(),
            "operation": self.operation.name.lower(),
        }


def commit_marker_topic(pipeline: str) -> str:
    """The topic in which exactly-once outputs record each committed epoch (one partition, compacted)."""
    return f"{pipeline}.eventray-commits"


def transactional_id_prefix(pipeline: str) -> str:
    """What every transactional id of ``pipeline`` starts with (``<prefix><slot>``)."""
    return f"eventray-{pipeline}-"


def required_acls(config: PipelineConfig) -> list[AclBinding]:
    """The least-privilege ACLs of a pipeline principal, sorted; empty for a pipeline that uses no Kafka."""
    bindings: set[AclBinding] = set()
    for spec in config.all_inputs:
        if isinstance(spec.source, KafkaSourceConfig):
            bindings |= _literal(ResourceType.TOPIC, spec.source.topic, Operation.READ, Operation.DESCRIBE)
            bindings |= _literal(ResourceType.GROUP, config.group_id, Operation.READ)
    creating = config.kafka is not None and config.kafka.create_topics
    writes = [Operation.WRITE, Operation.DESCRIBE, *([Operation.CREATE] if creating else [])]
    outputs = [topic for sink in config.sinks if isinstance(sink, KafkaSinkConfig) for topic in sink.all_topics]
    if isinstance(config.dead_letter, KafkaDeadLetterConfig):
        outputs.append(config.dead_letter.topic)
    for topic in outputs:
        bindings |= _literal(ResourceType.TOPIC, topic, *writes)
    if outputs and config.delivery == "exactly_once":
        bindings |= _literal(ResourceType.TOPIC, commit_marker_topic(config.name), Operation.READ, *writes)
        prefix = transactional_id_prefix(config.name)
        bindings |= {
            AclBinding(ResourceType.TRANSACTIONAL_ID, prefix, PatternType.PREFIXED, operation)
            for operation in (Operation.WRITE, Operation.DESCRIBE)
        }
    return sorted(bindings)


def _literal(kind: ResourceType, name: str, *operations: Operation) -> set[AclBinding]:
    return {AclBinding(kind, name, PatternType.LITERAL, operation) for operation in operations}
