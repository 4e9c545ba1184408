"""The dev broker against a real JVM: records round-trip through it, and start/status/stop keep their word."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cluster.kafka_dev import DevBrokerConfig, bootstrap_from_env, broker_status, start_broker, stop_broker

pytestmark = pytest.mark.kafka

RECORD_COUNT = 5


async def test_records_round_trip_through_the_session_broker(kafka_bootstrap: str) -> None:
    topic = f"dev-broker-{uuid.uuid4().hex[:12]}"
    sent = [f"value-{i}".encode() for i in range(RECORD_COUNT)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in sent:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()

    received = await asyncio.wait_for(_consume(kafka_bootstrap, topic, RECORD_COUNT), timeout=60)

    assert received == sent


async def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """Read ``count`` values from the start of ``topic`` in a consumer group, committing them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=1000)
            values.extend(record.value for records in batches.values() for record in records)
        await consumer.commit()
        return values
    finally:
        await consumer.stop()


def test_second_broker_starts_reports_and_stops(tmp_path: Path) -> None:
    if bootstrap_from_env() is not None and shutil.which("java") is None:
        pytest.skip("KAFKA_BOOTSTRAP points at an external broker and java is absent: no dev broker here")
    broker = start_broker(DevBrokerConfig(state_dir=tmp_path / "kafka", port=0))
    try:
        status = broker_status(broker.state_dir)
        assert status.running
        assert status.reachable
        assert status.pid == broker.pid
        assert status.bootstrap == broker.bootstrap
    finally:
        stopped = stop_broker(broker.state_dir)

    assert stopped
    assert not _pid_exists(broker.pid)
    after = broker_status(broker.state_dir)
    assert not after.running
    assert not after.reachable
    assert not (broker.state_dir / "broker.pid").exists()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
