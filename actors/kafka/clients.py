"""Kafka clients that never outlive a failed start.

A client whose ``start()`` fails is not closed by aiokafka: its ``__del__`` then warns of an unclosed client,
and a producer's start, which asks for its producer id after the bootstrap, leaves a metadata task and its
connections open when that step fails (a broker restarting, a fenced or refused transactional id). Every
client of a pipeline's actors and of the ``eventray`` commands is started through one of these, so that it is
stopped or closed however its start, or its use, ends (the benchmarks' and tests' own clients are not).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from pipelines.config.kafka import KafkaConnectionConfig, client_options

__all__ = ["start_or_stop", "started_admin", "started_consumer"]


class _Stoppable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_or_stop(client: _Stoppable) -> None:
    """Start a long-lived producer or consumer; stop it before raising when its start fails."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


@contextlib.asynccontextmanager
async def started_admin(connection: KafkaConnectionConfig) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of ``connection``, started, and closed however its start or its use ends."""
    admin = AIOKafkaAdminClient(**client_options(connection))
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def started_consumer(connection: KafkaConnectionConfig, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of ``connection`` with ``options`` (no group unless given), started, and stopped however its
    start or its use ends."""
    consumer = AIOKafkaConsumer(**options, **client_options(connection))
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()
