"""The event contracts of a set of pipeline configs: who reads which topic with which reader schema, who writes
which topic with which writer schema (the topic graph the deploy-time gate and ``eventray schema docs`` use).

A reader is an input whose records are Avro in the Confluent wire format (``schema.registry``); a writer is a
Kafka sink with ``format: avro``. JSON inputs and sinks are contracts too (their ``fields``), shown by the docs
but not checked against a registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config.kafka import KafkaSinkConfig, KafkaSourceConfig
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.registry import RegistryConfig
from pipelines.schemas.reader import reader_schema
from pipelines.schemas.resolution import AvroSchema, full_name, reader_records
from pipelines.schemas.subjects import subject_name

__all__ = ["Contracts", "Reader", "Writer", "contracts_of"]


@dataclass(frozen=True)
class Reader:
    """Input ``where`` of pipeline ``pipeline`` (from ``config_path``) reads ``topics``."""

    pipeline: str
    config_path: str
    where: str
    topics: tuple[str, ...]
    fields: dict[str, str]
    registry: RegistryConfig | None
    schema: AvroSchema | None
    format: str = "json"

    def subjects(self, topic: str) -> list[str]:
        """The subjects the records of ``topic`` are registered under, by the input's strategy (for ``record``
        and ``topic_record``, one per record of the reader schema; none known without a reader schema)."""
        if self.registry is None:
            return []
        strategy = self.registry.subject_strategy
        if strategy == "topic":
            return [subject_name(strategy, topic, "")]
        if self.schema is None:
            return []
        return [subject_name(strategy, topic, full_name(record)) for record in reader_records(self.schema)]


@dataclass(frozen=True)
class Writer:
    """Sink ``where`` of pipeline ``pipeline`` writes ``topics`` (Avro with ``schema``, or JSON rows)."""

    pipeline: str
    config_path: str
    where: str
    topics: tuple[str, ...]
    registry: RegistryConfig | None
    schema: dict[str, Any] | None
    auto_register: bool = False

    def subject(self, topic: str) -> str | None:
        if self.registry is None or self.schema is None:
            return None
        return subject_name(self.registry.subject_strategy, topic, full_name(self.schema))


@dataclass(frozen=True)
class Contracts:
    readers: tuple[Reader, ...]
    writers: tuple[Writer, ...]

    @property
    def topics(self) -> list[str]:
        named = [t for reader in self.readers for t in reader.topics] + [t for w in self.writers for t in w.topics]
        return sorted(set(named))

    def readers_of(self, topic: str) -> list[Reader]:
        return [reader for reader in self.readers if topic in reader.topics]

    def writers_of(self, topic: str) -> list[Writer]:
        return [writer for writer in self.writers if topic in writer.topics]


def contracts_of(configs: list[tuple[Path, PipelineConfig]]) -> Contracts:
    """Every Kafka input and sink of ``configs``. Raises ConfigError for a reader schema that does not load."""
    readers: list[Reader] = []
    writers: list[Writer] = []
    for path, config in configs:
        for spec in config.all_inputs:
            source = spec.source
            if not isinstance(source, KafkaSourceConfig):
                continue
            topics = tuple(source.topics) if source.topics else (source.topic,)
            where = f"inputs.{spec.name}" if config.inputs is not None else "source"
            schema = spec.schema
            reader = reader_schema(schema) if schema.registry is not None else None
            fields = dict(schema.fields)
            readers.append(
                Reader(config.name, str(path), where, topics, fields, schema.registry, reader, schema.format)
            )
        for position, sink in enumerate(config.sinks):
            if isinstance(sink, KafkaSinkConfig):
                writers.append(
                    Writer(
                        config.name,
                        str(path),
                        f"sinks.{position}",
                        tuple(sink.all_topics),
                        sink.registry,
                        sink.avro_schema,
                        sink.auto_register,
                    )
                )
    return Contracts(tuple(readers), tuple(writers))
