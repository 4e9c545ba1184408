"""A view rebuilt while it is queried, on a real broker and a real Ray cluster, by ``eventray cqrs rebuild`` run
as users run it (a process of its own, stopped with Ctrl-C).

The account-views pipeline serves ``balances`` from an events topic written before it starts. A rebuild reads the
topic again in its own group and checkpoints, and one of its actors is killed as soon as it exists (the rebuild
recovers); the router switches the view to it once its checkpoint has every event, and the pipeline that served
the view drains and ends. Queries run the whole time: every answer equals
the fold of the events recomputed here (both pipelines have applied them all), and none fails. Events written
after the switch are read by the rebuild: read-your-writes holds, and the view equals the fold of every event.
When the rebuild stops, the router goes with it (it is the last pipeline on it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import ray

from actors.kafka.admin import ensure_topic
from cluster.cqrs.client import CqrsClient, CqrsError
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.account_views import account_events, account_views_on_kafka, balances_after
from tests.integration.pipelines_under_test import connection, produce_events, unique
from tests.integration.ray_cluster import LocalRayCluster, free_port
from tests.integration.running import Running

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

ACCOUNTS = 120
EVENTS = 3_000
LATER = 300  # written after the switch
START_MS = 1_767_225_600_000
PATIENT_S = 180.0
REPO = Path(__file__).resolve().parents[2]


def views(name: str, bootstrap: str, topic: str, tmp_path: Path, port: int) -> PipelineConfig:
    data = account_views_on_kafka(name, bootstrap, topic, tmp_path / "views")
    data.update(serve={"port": port, "retry_bound_s": 30}, checkpoint={"interval_ms": 300,
                "uri": str(tmp_path / "views-ckpt")})  # fmt: skip
    data["sinks"] = [{"type": "jsonl", "path": str(tmp_path / "views-out")}]
    return parse_config(data)


def test_a_rebuilt_view_takes_over_without_a_wrong_answer_and_the_pipeline_it_replaces_ends(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = unique("rebuild")
    topic = f"{name}.events"
    asyncio.run(ensure_topic(connection(kafka_bootstrap), topic, 4))
    events = account_events(EVENTS + LATER, ACCOUNTS, seed=11, start_time_ms=START_MS)
    asyncio.run(produce_events(kafka_bootstrap, topic, events[:EVENTS]))
    port = free_port()
    config = views(name, kafka_bootstrap, topic, tmp_path, port)
    config_file = tmp_path / "views.yaml"
    config_file.write_text(config.to_yaml())
    serving = Running(config, ray_driver.address)
    rebuild: subprocess.Popen[str] | None = None
    killed: list[str] = []
    out, err = "", ""
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_until_equal(url, balances_after(events[:EVENTS])))
        command = [sys.executable, "-m", "cluster.cli", "cqrs", "rebuild", str(config_file), "balances",
                   "--address", ray_driver.address, "--max-lag", "0", "--json"]  # fmt: skip
        rebuild = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killer = threading.Thread(target=lambda: killed.append(_kill_an_actor_of(f"{name}-rebuild-")), daemon=True)
        killer.start()
        outcome = asyncio.run(_query_through_the_switch(url, balances_after(events[:EVENTS]), serving))
        killer.join(timeout=PATIENT_S)
        assert serving.summary is not None and serving.summary.stopped_early, "the replaced pipeline drained"

        asyncio.run(produce_events(kafka_bootstrap, topic, events[EVENTS:]))
        asyncio.run(_reads_its_writes_then_equals(url, events))
    finally:
        if rebuild is not None:
            rebuild.send_signal(signal.SIGINT)  # Ctrl-C: the rebuild drains and prints its result
            out, err = rebuild.communicate(timeout=PATIENT_S)
        if serving.error is None and not serving.ended(0):
            serving.stop()

    print(f"queries: {outcome['before']} before the switch, {outcome['after']} after, {outcome['failed']} failed")
    print(err)
    assert outcome["wrong"] == [], "every answer equals the fold of the events"
    assert outcome["failed"] == 0 and outcome["before"] > 0 and outcome["after"] > 0
    assert rebuild is not None and rebuild.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["previous"] == name and result["pipeline"].startswith(f"{name}-rebuild-"), result
    assert result["summary"]["stopped_early"] and result["summary"]["progress"]["events_in"] == EVENTS + LATER, result
    assert f"pipeline {name} stops" in err, err[-3000:]
    assert killed and "-rebuild-" in killed[0] and "restoring epoch" in err, (killed, err[-3000:])
    assert asyncio.run(_router_gone(url)), "the router stopped with the last pipeline on it"


def _kill_an_actor_of(prefix: str) -> str:
    """Kill an aggregate actor of the pipeline whose name starts with ``prefix`` once it has taken events."""
    deadline = time.monotonic() + PATIENT_S
    while time.monotonic() < deadline:
        for name in ray.util.list_named_actors():
            if name.startswith(prefix) and "aggregate" in name:
                actor = ray.get_actor(name)
                with contextlib.suppress(ray.exceptions.RayActorError):
                    if ray.get(actor.progress.remote()).events_in > 0:
                        ray.kill(actor, no_restart=True)
                        return str(name)
        time.sleep(0.05)
    return ""


async def _serving(session: aiohttp.ClientSession, url: str) -> str | None:
    async with session.get(f"{url}/views") as response:
        answer = await response.json()
    return next(view["pipeline"] for view in answer["views"] if view["view"] == "balances")  # type: ignore[no-any-return]


async def _until_equal(url: str, expected: dict[str, dict[str, Any]]) -> None:
    async with CqrsClient(None, url) as client:
        await client.wait_ready(PATIENT_S)
        deadline = time.monotonic() + PATIENT_S
        keys = sorted(expected)
        while await client.views("balances", keys) != [expected[key] for key in keys]:
            assert time.monotonic() < deadline, "the view did not apply every event"
            await asyncio.sleep(0.5)


async def _query_through_the_switch(url: str, expected: dict[str, dict[str, Any]], serving: Running) -> dict[str, Any]:
    """Point and batch queries until the switch and the replaced pipeline's end, and 2 s more."""
    rng = random.Random(3)
    keys = sorted(expected)
    outcome: dict[str, Any] = {"wrong": [], "failed": 0, "before": 0, "after": 0}
    deadline = time.monotonic() + PATIENT_S
    ended_s: float | None = None
    async with CqrsClient(None, url, retries=0) as client, aiohttp.ClientSession() as session:
        while ended_s is None or time.monotonic() < ended_s + 2:
            assert time.monotonic() < deadline, "the rebuild did not take over, or the replaced run did not end"
            switched = "-rebuild-" in (await _serving(session, url) or "")
            asked = rng.sample(keys, 5)
            try:
                if rng.random() < 0.5:
                    found = [(await client.view("balances", key))["value"] for key in asked]
                else:
                    found = await client.views("balances", asked)
            except CqrsError:
                outcome["failed"] += 1
                continue
            outcome["after" if switched else "before"] += 1
            outcome["wrong"] += [(k, v) for k, v in zip(asked, found, strict=True) if v != expected[k]]
            if switched and ended_s is None and serving.ended(0):
                ended_s = time.monotonic()
    return outcome


async def _reads_its_writes_then_equals(url: str, events: list[dict[str, Any]]) -> None:
    last: dict[str, int] = {}
    for event in events[EVENTS:]:
        last[event["aggregate_id"]] = event["version"]
    expected = balances_after(events)
    async with CqrsClient(None, url) as client:
        for key, version in sorted(last.items()):
            answer = await client.view("balances", key, min_position=f"{key}@{version}")
            assert answer["value"] == expected[key], key
        keys = sorted(expected)
        assert await client.views("balances", keys) == [expected[key] for key in keys]


async def _router_gone(url: str) -> bool:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/health"):
                    pass
            except aiohttp.ClientConnectionError:
                return True
            await asyncio.sleep(0.5)
    return False
