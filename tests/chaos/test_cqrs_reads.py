"""The read side under faults: the account-views pipeline projects an events topic while queries run, two of its
owner actors are SIGKILLed and the autoscaler moves its key groups from 2 actors to 3.

- Read-your-writes: every query with a min_position (an event the test produced) answers a view at that
  version or later, and the view equals the fold of the events up to the version it shows: 0 wrong answers;
  the only errors allowed are 503s with Retry-After (counted; the client retries them).
- ``committed``: every answer equals the fold of the events below the source offsets of the checkpoint it names
  (read back from that checkpoint's metadata), for answers sampled all through the run.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic, read_topic
from cluster.cqrs.client import CqrsClient, CqrsError
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.account_views import account_events, account_views_on_kafka, balance_after
from tests.chaos.chaos_tools import ScheduledKiller, planned_kills
from tests.integration.pipelines_under_test import START_TIME_MS, connection, unique
from tests.integration.ray_cluster import LocalRayCluster, free_port
from tests.integration.running import Running

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

ACCOUNTS = 60
EVENTS = 7_200
RATE_PER_S = 400.0
PARTITIONS = 4
READERS = 16
KILLS = 2
PATIENT_S = 300.0  # a bound on reading, not a speed: reads end once every kill is recovered
RESCALE_TO_THREE = {"min_source_actors": 1, "max_source_actors": 1, "min_aggregate_actors": 3,
                    "max_aggregate_actors": 3, "interval_s": 1.0, "cooldown_s": 600}  # fmt: skip


def views_under_faults(name: str, bootstrap: str, tmp_path: Path, port: int) -> PipelineConfig:
    data = account_views_on_kafka(name, bootstrap, f"{name}.events", tmp_path)
    data.update(
        serve={"port": port, "retry_bound_s": 20, "position_wait_s": 30},
        checkpoint={"interval_ms": 300, "uri": str(tmp_path / "checkpoints"), "keep": 1_000},
    )  # fmt: skip
    data["runtime"].update(aggregate_actors=2, autoscale=RESCALE_TO_THREE)
    return parse_config(data)


class Produced:
    """The events sent so far (acknowledged by the broker), shared with the readers."""

    def __init__(self) -> None:
        self.acked: list[dict[str, Any]] = []
        self.done = threading.Event()


async def produce(bootstrap: str, topic: str, events: list[dict[str, Any]], produced: Produced) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2)
    await producer.start()
    started = time.monotonic()
    try:
        for sent, event in enumerate(events):
            await producer.send_and_wait(topic, msgspec.json.encode(event), key=event["aggregate_id"].encode())
            produced.acked.append(event)
            ahead_s = sent / RATE_PER_S - (time.monotonic() - started)
            if ahead_s > 0:
                await asyncio.sleep(ahead_s)
    finally:
        await producer.stop()
        produced.done.set()


def views_by_version(events: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The reference: each account's view after each of its versions."""
    views: dict[tuple[str, int], dict[str, Any]] = {}
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        latest[event["aggregate_id"]] = balance_after(latest.get(event["aggregate_id"]), event)
        views[(event["aggregate_id"], event["version"])] = latest[event["aggregate_id"]]
    return views


def test_reads_are_right_through_owner_kills_and_a_rescale(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique("views")
    topic = f"{name}.events"
    asyncio.run(ensure_topic(connection(kafka_bootstrap), topic, PARTITIONS))
    events = account_events(EVENTS, ACCOUNTS, seed=3, start_time_ms=START_TIME_MS)
    reference = views_by_version(events)
    produced = Produced()
    port = free_port()
    running = Running(views_under_faults(name, kafka_bootstrap, tmp_path, port), ray_driver.address)
    try:
        asyncio.run(_until_ready(port))
        producing = threading.Thread(target=lambda: asyncio.run(produce(kafka_bootstrap, topic, events, produced)),
                                     daemon=True)  # fmt: skip
        producing.start()
        plan = planned_kills(EVENTS, kills=KILLS, first=0.3, last=0.6)
        recovered = [0]  # kills recovered so far: the phase a read is in

        def count_recovery(index: int) -> None:
            recovered[0] = index + 1

        with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, kinds=("AggregateActor",), seed=4,
                             after_each_kill=count_recovery) as killer:  # fmt: skip
            outcome = asyncio.run(_read_while_producing(port, produced, reference, recovered))
        producing.join(timeout=60)
    finally:
        summary = running.stop()
    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) >= 2, f"both kills were recovered: {summary.recoveries_s}"
    assert [rescale.aggregates for rescale in summary.rescales] == [(2, 3)], "the key groups moved to 3 owners"
    assert outcome["wrong"] == [], "no read-your-writes answer older than its write or unlike the reference"
    assert outcome["errors"] == [], "no error but 503s, which the client retried"
    assert all(outcome["by_phase"]), f"pairs read before, between and after the kills: {outcome['by_phase']}"
    checked = _committed_answers_equal_the_checkpoints(outcome["committed"], kafka_bootstrap, topic, tmp_path)
    assert checked > 1_000, f"committed answers compared with their checkpoint: {checked}"
    print(f"read-your-writes pairs {outcome['pairs']} (by phase {outcome['by_phase']}), 503s retried "
          f"{outcome['retried_503']}, committed answers checked {checked}")  # fmt: skip


async def _read_while_producing(
    port: int, produced: Produced, reference: dict[tuple[str, int], Any], recovered: list[int]
) -> dict[str, Any]:
    """Read-your-writes pairs until every event is produced, every kill recovered and a pair read after the
    last recovery (bounded by PATIENT_S): the pairs read in each phase (before, between, after the kills)."""
    client = CqrsClient(None, f"http://127.0.0.1:{port}", retries=20)
    outcome: dict[str, Any] = {"pairs": 0, "by_phase": [0] * (KILLS + 1), "wrong": [], "errors": [],
                               "committed": [], "retried_503": 0}  # fmt: skip
    rng = random.Random(9)
    keys = [f"acc-{index:03d}" for index in range(ACCOUNTS)]
    deadline = time.monotonic() + PATIENT_S

    def reading() -> bool:
        done = produced.done.is_set() and recovered[0] >= KILLS and outcome["by_phase"][KILLS] > 0
        return not done and time.monotonic() < deadline

    async def reader() -> None:
        while reading():
            if not produced.acked:
                await asyncio.sleep(0.05)
                continue
            event = produced.acked[-1 - rng.randrange(min(50, len(produced.acked)))]
            key, version = event["aggregate_id"], event["version"]
            try:
                answer = await client.view("balances", key, min_position=f"{key}@{version}")
            except CqrsError as error:
                outcome["errors"].append((key, version, error.status, error.body))
                continue
            outcome["pairs"] += 1
            outcome["by_phase"][min(recovered[0], KILLS)] += 1
            shown = answer["value"]
            if shown is None or shown["version"] < version or shown != reference[(key, shown["version"])]:
                outcome["wrong"].append((key, version, shown))

    async def committed_sampler() -> None:
        while reading():
            answer = await client._call("POST", f"{client.query_url}/views/balances/lookup",
                                        {"keys": keys, "consistency": "committed"})  # fmt: skip
            outcome["committed"].append(answer)
            await asyncio.sleep(0.2)

    try:
        await asyncio.gather(*(reader() for _ in range(READERS)), committed_sampler())
    finally:
        await client.close()
    outcome["retried_503"] = client.retried_503
    return outcome


async def _until_ready(port: int) -> None:
    client = CqrsClient(None, f"http://127.0.0.1:{port}")
    try:
        await client.wait_ready(timeout_s=120)
    finally:
        await client.close()


def _committed_answers_equal_the_checkpoints(
    answers: list[dict[str, Any]], bootstrap: str, topic: str, tmp_path: Path
) -> int:
    offsets = _checkpoint_offsets(tmp_path / "checkpoints")
    records = sorted(asyncio.run(read_topic(connection(bootstrap), topic)), key=lambda r: (r.partition, r.offset))
    stored = [(record.partition, record.offset, msgspec.json.decode(record.value)) for record in records]
    at_epoch: dict[int, dict[str, Any]] = {}
    checked = 0
    for answer in answers:
        for key, value, epoch in zip(answer["keys"], answer["values"], answer["epochs"], strict=True):
            if epoch is None or epoch == 0:
                continue
            if epoch not in at_epoch:
                below = offsets[epoch]
                views: dict[str, Any] = {}
                for partition, offset, event in stored:
                    if offset < below.get(partition, 0):
                        views[event["aggregate_id"]] = balance_after(views.get(event["aggregate_id"]), event)
                at_epoch[epoch] = views
            expected = at_epoch[epoch].get(key)
            assert value == expected, f"committed {key} at epoch {epoch}: {value} != {expected}"
            checked += 1
    return checked


def _checkpoint_offsets(checkpoints: Path) -> dict[int, dict[int, int]]:
    """Each complete checkpoint's next offsets to read, per partition."""
    offsets: dict[int, dict[int, int]] = {}
    for metadata in checkpoints.rglob("_checkpoint.json"):
        data = json.loads(metadata.read_bytes())
        offsets[data["epoch"]] = {int(p): o for source in data["sources"] for p, o in source["positions"].items()}
    return offsets
