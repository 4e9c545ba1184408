"""The order views on a real broker and a real Ray cluster: ``configs/order-views.yaml`` reads an orders events
topic of 4 partitions (events as the orders pipeline stores them, some written twice) through three chained
process stages, each serving its view from the actors that own its keys: ``orders`` by order, ``order_history``
by customer, ``dashboard`` by status.

Once the dashboard counts every order placed, every view equals the reference recomputed here from the events,
read over HTTP (CqrsClient) key by key and in batches. Events written while it runs are read with
``min_position`` (read-your-writes on ``orders``); the dashboard at ``committed`` catches up with them; and
``eventray cqrs query ... dashboard placed paid shipped cancelled --json``, run as users run it, prints it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actors.kafka.admin import ensure_topic
from cluster.cqrs.client import CqrsClient
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.order_views import STATUSES, order_events, order_views_on_kafka, order_views_reference
from tests.integration.pipelines_under_test import connection, produce_events, unique
from tests.integration.ray_cluster import LocalRayCluster, free_port
from tests.integration.running import Running

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

ORDERS = 1_000
CUSTOMERS = 120
EVENTS = 2_400  # some orders are left placed or paid
LATER = 300  # of them written while the views run, then read with min_position
START_MS = 1_767_225_600_000
PATIENT_S = 180.0
REPO = Path(__file__).resolve().parents[2]

Views = tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, int]]


def views(name: str, bootstrap: str, topic: str, tmp_path: Path, port: int) -> PipelineConfig:
    data = order_views_on_kafka(name, bootstrap, topic, tmp_path / "views")
    data.update(serve={"port": port, "retry_bound_s": 30, "position_wait_s": 30},
                checkpoint={"interval_ms": 300, "uri": str(tmp_path / "views-ckpt")})  # fmt: skip
    data["sinks"] = [{"type": "jsonl", "path": str(tmp_path / "views-out")}]
    return parse_config(data)


def test_the_order_views_equal_the_events_folded_over_http_and_the_cli(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique("order-views")
    topic = f"{name}.events"
    asyncio.run(ensure_topic(connection(kafka_bootstrap), topic, 4))
    events = order_events(EVENTS, ORDERS, CUSTOMERS, seed=21, start_time_ms=START_MS, redelivered_fraction=0.05)
    before, later = events[:-LATER], events[-LATER:]
    asyncio.run(produce_events(kafka_bootstrap, topic, before))
    port = free_port()
    config = views(name, kafka_bootstrap, topic, tmp_path, port)
    config_file = tmp_path / "order-views.yaml"
    config_file.write_text(config.to_yaml())
    url = f"http://127.0.0.1:{port}"
    running = Running(config, ray_driver.address)
    try:
        asyncio.run(_until_the_views_equal(url, order_views_reference(before)))
        asyncio.run(produce_events(kafka_bootstrap, topic, later))
        own_writes = asyncio.run(_reads_its_writes(url, later))
        expected = order_views_reference(events)
        asyncio.run(_until_the_views_equal(url, expected))
        asyncio.run(_the_committed_dashboard_catches_up(url, expected[2]))
        command = [sys.executable, "-m", "cluster.cli", "cqrs", "query", str(config_file), "dashboard", *STATUSES,
                   "--json", "--url", url]  # fmt: skip
        queried = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    finally:
        running.stop()

    assert own_writes > 0
    assert queried.returncode == 0, queried.stderr[-3000:]
    answers = json.loads(queried.stdout)
    assert [(a["view"], a["key"], a["found"]) for a in answers] == [("dashboard", s, True) for s in STATUSES]
    assert {a["key"]: a["value"] for a in answers} == expected[2]
    assert sum(expected[2].values()) == len(expected[0]) and min(expected[2].values()) > 0


async def _until_the_views_equal(url: str, expected: Views) -> None:
    """Wait until the dashboard counts every order placed and equals ``expected``'s; then every view equals
    ``expected``, read key by key (a sample) and in batches (every key)."""
    orders, histories, dashboard = expected
    async with CqrsClient(None, url) as client:
        await client.wait_ready(PATIENT_S)
        deadline = time.monotonic() + PATIENT_S
        while True:
            counts = await client.views("dashboard", list(STATUSES))
            if sum(count or 0 for count in counts) == len(orders) and counts == [dashboard.get(s) for s in STATUSES]:
                break
            assert time.monotonic() < deadline, f"the dashboard stayed at {counts}, not {dashboard}"
            await asyncio.sleep(0.5)
        keys = sorted(orders)
        while await client.views("orders", keys) != [orders[key] for key in keys]:  # the stages before the last
            assert time.monotonic() < deadline, "the orders view did not apply every event"
            await asyncio.sleep(0.5)
        customers = sorted(histories)
        assert await client.views("order_history", customers) == [histories[key] for key in customers]
        for key in keys[:: max(1, len(keys) // 25)]:
            answer = await client.view("orders", key)
            assert answer["found"] and answer["value"] == orders[key], key
        for key in customers[:: max(1, len(customers) // 10)]:
            answer = await client.view("order_history", key)
            assert answer["found"] and answer["value"] == histories[key], key
        for status in STATUSES:
            answer = await client.view("dashboard", status)
            assert answer["found"] and answer["value"] == dashboard[status], status


async def _reads_its_writes(url: str, written: list[dict[str, Any]]) -> int:
    """Ask for each of a few orders written last, at the version written (``min_position``): the answer has it.
    Return how many were asked."""
    newest: dict[str, int] = {}
    for event in written:
        newest[event["aggregate_id"]] = max(newest.get(event["aggregate_id"], 0), event["version"])
    asked = sorted(newest)[:20]
    async with CqrsClient(None, url) as client:
        for key in asked:
            answer = await client.view("orders", key, min_position=f"{key}@{newest[key]}")
            assert answer["found"] and answer["value"]["version"] >= newest[key], (key, answer)
    return len(asked)


async def _the_committed_dashboard_catches_up(url: str, dashboard: dict[str, int]) -> None:
    async with CqrsClient(None, url) as client:
        deadline = time.monotonic() + PATIENT_S
        expected = [dashboard[status] for status in STATUSES]
        while (counts := await client.views("dashboard", list(STATUSES), consistency="committed")) != expected:
            assert time.monotonic() < deadline, f"the committed dashboard stayed at {counts}, not {expected}"
            await asyncio.sleep(0.5)
