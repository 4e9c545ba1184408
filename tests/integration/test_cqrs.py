"""CQRS on a real broker and a real Ray cluster: the accounts pipeline (event-sourced, exactly once) takes
commands from the gateway; the account-views pipeline projects its events topic into the ``balances`` view,
served by the query router from the actors that own the accounts.

Every command -> query pair reads its own write (the gateway's read_token as min_position), at ``latest`` and at
``committed``; the view, once it has applied every account's last version, equals the fold of the events topic
recomputed here; a batch lookup in Arrow IPC equals the JSON one; bad queries get their status and reason."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from actors.kafka.admin import ensure_topic, partition_count, read_topic
from cluster.cqrs.client import CqrsClient
from cluster.cqrs.gateway import CommandGateway
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.account_views import account_views_on_kafka, balance_after
from pipelines.examples.accounts import accounts_on_kafka
from tests.integration.pipelines_under_test import connection, unique
from tests.integration.ray_cluster import LocalRayCluster, free_port
from tests.integration.running import Running

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

ACCOUNTS = 40
PAIRS = 800
WRITERS = 24


def accounts(name: str, bootstrap: str, tmp_path: Path) -> PipelineConfig:
    data = accounts_on_kafka(name, bootstrap, f"{name}.commands", tmp_path / "accounts")
    data.update(delivery="exactly_once", checkpoint={"interval_ms": 200, "uri": str(tmp_path / "accounts-ckpt")})
    data["keyed"].pop("snapshots_topic")
    data["keyed"]["snapshot_every"] = None
    return parse_config(data)


def views(name: str, bootstrap: str, tmp_path: Path, port: int) -> PipelineConfig:
    data = account_views_on_kafka(f"{name}-views", bootstrap, f"{name}.events", tmp_path / "views")
    data.update(serve={"port": port, "retry_bound_s": 30}, checkpoint={"interval_ms": 300,
                "uri": str(tmp_path / "views-ckpt")})  # fmt: skip
    data["runtime"]["aggregate_actors"] = 2
    return parse_config(data)


def test_every_command_reads_its_own_write_and_the_view_equals_the_events_folded(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique("cqrs")
    asyncio.run(ensure_topic(connection(kafka_bootstrap), f"{name}.commands", 4))
    port = free_port()
    writing = Running(accounts(name, kafka_bootstrap, tmp_path), ray_driver.address)
    try:
        asyncio.run(_until_topic(kafka_bootstrap, f"{name}.replies"))
        reading = Running(views(name, kafka_bootstrap, tmp_path, port), ray_driver.address)
        try:
            outcome = asyncio.run(_workload(name, kafka_bootstrap, tmp_path, port))
        finally:
            reading.stop()
    finally:
        writing.stop()
    assert outcome["pairs"] == PAIRS
    assert outcome["own_write_seen"] == PAIRS, "100 % read-your-writes at latest"
    assert outcome["committed_own_write_seen"] == outcome["committed_pairs"] > 0, "and at committed"
    assert outcome["accepted"] > PAIRS // 2 and outcome["rejected"] > 0, "the workload has both outcomes"


async def _until_topic(bootstrap: str, topic: str) -> None:
    for _ in range(600):
        if await partition_count(connection(bootstrap), topic, required=False):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} was never created")


async def _workload(name: str, bootstrap: str, tmp_path: Path, port: int) -> dict[str, Any]:
    gateway = CommandGateway({"accounts": accounts(name, bootstrap, tmp_path)})
    gateway_port = await gateway.start(port=0)
    client = CqrsClient(f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{port}")
    counts = {"pairs": 0, "own_write_seen": 0, "committed_pairs": 0, "committed_own_write_seen": 0,
              "accepted": 0, "rejected": 0}  # fmt: skip
    last_version: dict[str, int] = {}
    try:
        await client.wait_ready(timeout_s=120)
        ids = [f"acc-{index:03d}" for index in range(ACCOUNTS)]
        await asyncio.gather(*(client.command("accounts", key, {"command_type": "Open"}) for key in ids))
        rng = random.Random(5)
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        for index in range(PAIRS):
            kind = rng.choice(["Deposit", "Deposit", "Withdraw"])
            queue.put_nowait((rng.choice(ids), {"command_type": kind, "amount_cents": rng.randint(1, 900),
                                                "committed": index % 10 == 0}))  # fmt: skip

        async def writer() -> None:
            while not queue.empty():
                key, command = queue.get_nowait()
                committed = command.pop("committed")
                reply = await client.command("accounts", key, command)
                counts["pairs"] += 1
                counts[reply["status"]] += 1
                consistency = "committed" if committed else "latest"
                seen = await client.view("balances", key, consistency=consistency, min_position=reply["read_token"])
                if seen["found"] and seen["value"]["version"] >= reply["version"]:
                    counts["committed_own_write_seen" if committed else "own_write_seen"] += 1
                counts["committed_pairs"] += committed
                last_version[key] = max(last_version.get(key, 0), reply["version"])

        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        counts["own_write_seen"] += counts["committed_own_write_seen"]  # every pair read its write at some mode
        await _the_view_equals_the_events_folded(client, bootstrap, f"{name}.events", last_version)
        await _bad_queries_get_their_status(client)
    finally:
        await client.close()
        await gateway.close()
    return counts


async def _the_view_equals_the_events_folded(
    client: CqrsClient, bootstrap: str, topic: str, last_version: dict[str, int]
) -> None:
    for key, version in last_version.items():  # every account's last write applied
        await client.view("balances", key, min_position=f"{key}@{version}")
    expected: dict[str, dict[str, Any]] = {}
    records = sorted(await read_topic(connection(bootstrap), topic), key=lambda r: (r.partition, r.offset))
    for record in records:
        event = msgspec.json.decode(record.value)
        expected[event["aggregate_id"]] = balance_after(expected.get(event["aggregate_id"]), event)
    keys = sorted(expected)
    found = await client.views("balances", keys)
    assert dict(zip(keys, found, strict=True)) == expected
    table = await client.views_arrow("balances", keys)
    assert table.column("key").to_pylist() == keys and all(table.column("found").to_pylist())
    assert [msgspec.json.decode(v) for v in table.column("value").to_pylist()] == found
    assert (await client.views("balances", ["no-such-account"])) == [None]


async def _bad_queries_get_their_status(client: CqrsClient) -> None:
    async with aiohttp.ClientSession(client.query_url) as session:
        async with session.get("/views/nope/acc-001") as response:
            assert response.status == 404 and "balances" in (await response.json())["error"]
        async with session.get("/views/balances/acc-001", params={"consistency": "eventual"}) as response:
            assert response.status == 400
        async with session.get("/views/balances/acc-001", params={"min_position": "acc-001"}) as response:
            assert response.status == 400 and "<aggregate>@<version>" in (await response.json())["error"]
        async with session.get("/views/balances/acc-001", params={"min_position": "acc-001@999999"}) as response:
            body = await response.json()
            assert response.status == 504 and body["wanted"] == "acc-001@999999" and body["applied"] > 0
