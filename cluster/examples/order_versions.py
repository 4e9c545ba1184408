"""``python -m cluster.examples.order_versions``: a topic as a rolling upgrade leaves it, for
``configs/orders-registry.yaml``.

Registers ``OrderPlaced`` v1, v2 and v3 (:mod:`pipelines.examples.order_versions`) in turn under the topic's
value subject, with BACKWARD compatibility (the registry checks each step), then produces ``--orders`` orders
interleaved across the three versions, each framed with its version's schema id. Kafka at ``$KAFKA_BOOTSTRAP``
(else ``127.0.0.1:9092``), the registry at ``$SCHEMA_REGISTRY_URL`` (``eventray registry up`` starts one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic
from pipelines.config.kafka import KafkaConnectionConfig, client_options, resolve_kafka_secrets
from pipelines.config.registry import RegistryConfig
from pipelines.errors import ConfigError
from pipelines.examples.order_versions import WRITERS, records
from pipelines.schemas.registry_client import RegistryClient, RegistryError, RegistryUnavailable

__all__ = ["main", "register_versions"]


async def register_versions(registry: RegistryConfig, subject: str) -> tuple[int, int, int]:
    """v1, v2 and v3 registered in turn under ``subject`` with BACKWARD compatibility; their ids."""
    async with RegistryClient(registry) as client:
        await client.set_compatibility(subject, "BACKWARD")
        ids = [await client.register(subject, json.dumps(writer)) for writer in WRITERS]
    return ids[0], ids[1], ids[2]


async def produce(args: argparse.Namespace) -> tuple[int, int, int]:
    connection = resolve_kafka_secrets(KafkaConnectionConfig(), os.environ)
    await ensure_topic(connection, args.topic, args.partitions)
    ids = await register_versions(RegistryConfig(), f"{args.topic}-value")
    producer = AIOKafkaProducer(**client_options(connection), acks="all", linger_ms=20)
    await producer.start()
    try:
        for index, (_, payload) in enumerate(records(args.orders, ids)):
            await producer.send(args.topic, payload, partition=index % args.partitions)
        await producer.flush()
    finally:
        await producer.stop()
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.examples.order_versions", description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000, help="orders to produce (default 100,000)")
    parser.add_argument("--topic", default="orders-avro", help="the topic (default orders-avro)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions if the topic is created (default 4)")
    args = parser.parse_args(argv)
    try:
        ids = asyncio.run(produce(args))
    except (ConfigError, RegistryError, RegistryUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.orders:,} orders on {args.topic}: v1, v2, v3 interleaved as schema ids {ids} ({args.topic}-value)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
