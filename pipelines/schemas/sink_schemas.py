"""The schema ids a Kafka sink with ``format: avro`` writes under: its writer schema looked up (or, with
``auto_register``, registered) under each topic's subject, once, when the sink starts."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from pipelines.config.kafka import KafkaSinkConfig
from pipelines.errors import ConfigError
from pipelines.schemas.registry_client import RegistryClient, SchemaNotFound, SchemaRejected, with_retries
from pipelines.schemas.resolution import full_name
from pipelines.schemas.subjects import subject_name

__all__ = ["register_sink_schema", "run_apart", "sink_subjects", "writer_schema_ids"]

T = TypeVar("T")


def sink_subjects(config: KafkaSinkConfig) -> dict[str, str]:
    """Topic -> the subject its records' schema is registered under."""
    assert config.registry is not None and config.avro_schema is not None  # format: avro
    record = full_name(config.avro_schema)
    return {topic: subject_name(config.registry.subject_strategy, topic, record) for topic in config.all_topics}


async def writer_schema_ids(config: KafkaSinkConfig, schema_text: str) -> dict[str, int]:
    """Topic -> the id of the sink's writer schema under the topic's subject. Not registered: registered if the
    sink says ``auto_register``, else a ConfigError naming the subject and the command that registers it."""
    assert config.registry is not None
    async with RegistryClient(config.registry) as registry:
        return {
            topic: await _looked_up(registry, subject, schema_text, config)
            for topic, subject in sink_subjects(config).items()
        }


async def _looked_up(registry: RegistryClient, subject: str, schema_text: str, config: KafkaSinkConfig) -> int:
    unavailable_s = config.registry.unavailable_s if config.registry is not None else 0.0
    try:
        return (await with_retries(lambda: registry.lookup(subject, schema_text), unavailable_s)).id
    except SchemaNotFound:
        if not config.auto_register:
            raise ConfigError(
                f"kafka sink {config.topic}: its avro_schema is not registered under subject {subject!r} of "
                f"{registry.url}: run `eventray schema register CONFIG` (checked against the subject's "
                "compatibility), or set auto_register: true on the sink"
            ) from None
    return await _registered(registry, subject, schema_text)


async def register_sink_schema(config: KafkaSinkConfig, schema_text: str) -> dict[str, int]:
    """Subject -> id, the sink's writer schema registered under each of its subjects (an existing identical
    version keeps its id); a ConfigError naming the subject if the registry refuses it."""
    assert config.registry is not None
    async with RegistryClient(config.registry) as registry:
        return {
            subject: await _registered(registry, subject, schema_text)
            for subject in dict.fromkeys(sink_subjects(config).values())
        }


async def _registered(registry: RegistryClient, subject: str, schema_text: str) -> int:
    try:
        return await registry.register(subject, schema_text)
    except SchemaRejected as error:
        raise ConfigError(f"{error} (`eventray schema check` names the fields and the rule)") from None


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end in a thread of its own (its own event loop), from synchronous code that
    may itself be inside a running loop (an async actor's)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
