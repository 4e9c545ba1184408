"""Event-sourced accounts on a real broker under SIGKILLs of source and aggregate actors: a random command
workload (concurrent writers, stale expected versions, resent command ids) produced while the pipeline runs
exactly once; the events and replies topics, read committed, equal the sequential reference
(pipelines/verify/event_store_check.py): 0 events lost, 0 duplicated, versions contiguous from 1 in version
order per account, every reply once, and exactly one acceptance per race of writers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic, read_topic, topic_configs
from cluster.cli import main
from cluster.commands.event_store_io import event_sourced_stage, read_commands, read_stored
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.config.state import EventSourcedConfig
from pipelines.examples.accounts import Account, account_commands, accounts_on_kafka
from pipelines.state.event_sourced import ACCEPTED
from pipelines.state.replay import replay_history
from pipelines.verify.event_store_check import CommandReply, StoredEvent, check_event_store, recompute_event_store
from tests.chaos.chaos_tools import ScheduledKiller, planned_kills
from tests.chaos.test_recovery import PACED_RUN_S, run_until_the_kills_are_behind
from tests.integration.pipelines_under_test import START_TIME_MS, connection, unique
from tests.integration.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

COMMANDS = 24_000
ACCOUNTS = 300
PARTITIONS = 4
ACCOUNT = "pipelines.examples.accounts:Account"
SNAPSHOT_EVERY = 7


def accounts_under_kills(name: str, bootstrap: str, tmp_path: Path) -> PipelineConfig:
    """configs/accounts.yaml on Kafka, exactly once, checkpointed every 500 ms, a snapshot every 7 events."""
    data = accounts_on_kafka(name, bootstrap, f"{name}.commands", tmp_path)
    data["keyed"]["snapshot_every"] = SNAPSHOT_EVERY
    data.update(delivery="exactly_once", dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
                checkpoint={"interval_ms": 500, "uri": str(tmp_path / "checkpoints"), "keep": 3})  # fmt: skip
    return parse_config(data)


async def produce_paced(bootstrap: str, topic: str, commands: list[dict[str, Any]], rate_per_s: float) -> None:
    """Each command keyed by its account (so an account's commands keep their order in one partition), at
    ``rate_per_s``, idempotently."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    started = time.monotonic()
    try:
        for sent, command in enumerate(commands):
            await producer.send(topic, msgspec.json.encode(command), key=command["aggregate_id"].encode())
            ahead_s = sent / rate_per_s - (time.monotonic() - started)
            if sent % 200 == 0 and ahead_s > 0:
                await asyncio.sleep(ahead_s)
        await producer.flush()
    finally:
        await producer.stop()


def in_partition_order(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    records = sorted(asyncio.run(read_topic(connection(bootstrap), topic)), key=lambda r: (r.partition, r.offset))
    return [msgspec.json.decode(record.value) for record in records]


def test_random_commands_under_kills_store_exactly_the_events_of_the_sequential_reference(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique("accounts")
    commands = account_commands(ACCOUNTS, COMMANDS, seed=17, start_time_ms=START_TIME_MS)
    asyncio.run(ensure_topic(connection(kafka_bootstrap), f"{name}.commands", PARTITIONS))
    config = accounts_under_kills(name, kafka_bootstrap, tmp_path)
    producing = threading.Thread(
        target=lambda: asyncio.run(
            produce_paced(kafka_bootstrap, f"{name}.commands", commands, COMMANDS / PACED_RUN_S)
        ),
        daemon=True,
    )
    plan = planned_kills(COMMANDS, kills=2)
    producing.start()
    with ScheduledKiller(ray_driver, tmp_path / "checkpoints", plan, seed=11) as killer:
        summary = run_until_the_kills_are_behind(config, ray_driver, killer, COMMANDS)
    producing.join(timeout=60)

    killer.assert_planned_kills_happened()
    assert len(summary.recoveries_s) >= len(plan), f"each kill was recovered: {summary.recoveries_s}, {killer.killed}"
    taken = [
        {**command, "_timestamp": command["issued_ms"]}
        for command in in_partition_order(kafka_bootstrap, f"{name}.commands")
    ]
    assert len(taken) == COMMANDS
    as_es_check_reads_them = asyncio.run(read_commands(config))
    assert [(c["aggregate_id"], c["command_id"], c["_timestamp"]) for c in as_es_check_reads_them] == [
        (c["aggregate_id"], c["command_id"], c["_timestamp"]) for c in taken
    ], "eventray es check reads the commands the stage took, in its order"
    expected = recompute_event_store(Account(), taken, EventSourcedConfig(aggregate=ACCOUNT))
    events = [StoredEvent.of_row(row) for row in in_partition_order(kafka_bootstrap, f"{name}.events")]
    replies = [CommandReply.of_row(row) for row in in_partition_order(kafka_bootstrap, f"{name}.replies")]
    report = check_event_store(*expected, events, replies)
    assert report.failures() == []
    assert report.replies == COMMANDS and report.events == report.expected_events > COMMANDS // 2
    races: Counter[str] = Counter()
    for reply in replies:
        if reply.command_id is not None and reply.command_id.startswith("race-") and not reply.duplicate:
            races[reply.command_id.rsplit("-", 1)[0]] += reply.status == ACCEPTED
    assert len(races) > 100 and set(races.values()) == {1}, "each race of writers had exactly one winner"
    assert sum(reply.duplicate for reply in replies) > 100, "resent commands were answered again"
    replays_equal_the_reference_at_every_version(config, expected[0])
    config_file = tmp_path / "accounts.yaml"
    config_file.write_text(config.to_yaml(), encoding="utf-8")
    assert main(["es", "check", str(config_file), "--json"]) == 0, "eventray es check agrees, snapshots included"
    checked = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # after what the run printed
    assert checked["failures"] == [] and checked["replies"] == COMMANDS and checked["events"] == report.events
    snapshots = asyncio.run(topic_configs(connection(kafka_bootstrap), f"{name}.snapshots"))
    events_topic = asyncio.run(topic_configs(connection(kafka_bootstrap), f"{name}.events"))
    assert snapshots["cleanup.policy"] == "compact" and events_topic["retention.ms"] == "-1", "an event store"


def replays_equal_the_reference_at_every_version(config: PipelineConfig, expected: list[StoredEvent]) -> None:
    """``eventray es replay``'s reading and folding, on the busiest accounts, from the first event and from the
    nearest snapshot: at every version, the balance the reference's events add up to (a sum, not ``evolve``)."""
    busiest = [key for key, _ in Counter(event.aggregate_id for event in expected).most_common(3)]
    stage = event_sourced_stage(config)
    for key in busiest:
        history = asyncio.run(read_stored(config, stage, key))
        ours = sorted((e for e in expected if e.aggregate_id == key), key=lambda e: e.version)
        assert len(history.events) == len(ours) > 10
        # a compacted topic: the cleaner may have left only the newest snapshot of an account
        kept = sorted(snapshot["version"] for snapshot in history.snapshots)
        multiples = list(range(SNAPSHOT_EVERY, len(ours) + 1, SNAPSHOT_EVERY))
        assert kept[-1] == multiples[-1] and len(set(kept)) == len(kept) and set(kept) <= set(multiples)
        balance = 0
        for event in ours:
            sign = {"Deposited": 1, "Withdrawn": -1}.get(event.event_type, 0)
            balance += sign * event.data.get("amount_cents", 0)
            reference = (event.version, {"open": True, "balance_cents": balance}, ())
            for snapshots in ([], history.snapshots):
                replayed = replay_history(Account(), history.events, to_version=event.version, snapshots=snapshots)
                assert (replayed.version, replayed.state, replayed.problems) == reference
