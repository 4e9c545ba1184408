"""``python -m benchmarks.cqrs``: queries of a projection served by eventray's query router, side by side with
Faust's ``table_route`` web view on the same data, and the latency from a command to its effect in the view.

**Queries**: an events topic of 4 partitions pre-filled with the accounts' events
(``pipelines.examples.account_views.account_events``); eventray's account-views pipeline (``configs/
account-views.yaml``: 1 source, 2 owner actors, on an embedded Ray) and a Faust worker
(``benchmarks/systems/faust_views.py``) both fold it into the ``balances`` view; once both have applied every
event, ``--clients`` concurrent HTTP clients (aiohttp, in this process) ask for random accounts for ``--seconds``:

- *point*: one key per request (eventray ``GET /views/balances/{key}``, Faust ``GET /balances/{key}/``);
- *batch*: ``--batch`` keys per request (eventray ``POST /views/balances/lookup``, Faust a ``/lookup/`` page
  written the same way, as Faust has none); keys/s.

Every answer is checked against the fold of the events (a wrong answer fails the benchmark).

**Command -> visible**: the accounts pipeline (``configs/accounts.yaml`` on Kafka, exactly once, a 250 ms
checkpoint interval) writes its events to the same topic; commands for new accounts go through the command
gateway at ``--rate`` per second; per command, the time from sending it to the reply, and to the first query with
its read_token (min_position) that answers: p50/p99.

**Rebuild** (``--no-rebuild`` leaves it out): ``eventray cqrs rebuild``'s code rebuilds the view from the whole
topic while point queries run, in windows of ``--seconds``: before the rebuild (the baseline), while it catches
up, and after the switch (answered by the rebuild's owners); keys/s and p50/p99 per window, the seconds from the
start of the rebuild to the switch, and every answer checked as above (a wrong answer or a failed query fails the
benchmark).

Each query measurement runs ``--repeat`` times, the two systems interleaved; medians, ratios and the load average
before each run are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiokafka import AIOKafkaProducer

from actors.kafka.admin import ensure_topic
from benchmarks.run import dev_broker
from cluster.control.ray_runtime import connect
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.runner import run_pipeline
from cluster.cqrs.client import CqrsClient
from cluster.cqrs.gateway import CommandGateway
from cluster.cqrs.rebuild import rebuild_view
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.account_views import account_events, account_views_on_kafka, balances_after
from pipelines.examples.accounts import accounts_on_kafka

PARTITIONS = 4
START_TIME_MS = 1_767_225_600_000


class _Run(threading.Thread):
    """A pipeline run until :meth:`stop`."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__(daemon=True)
        self.config = config
        self._stop_event = threading.Event()
        self.error: BaseException | None = None
        self.summary: RunSummary | None = None

    def run(self) -> None:
        try:
            self.summary = run_pipeline(self.config, stop_when=self._stopped)
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def _stopped(self, _: RunProgress) -> bool:
        return self._stop_event.is_set()

    def stop(self) -> list[float]:
        """Stop the run; its recoveries (seconds each), which the report names."""
        self._stop_event.set()
        self.join(timeout=180)
        if self.error is not None:
            raise RuntimeError(f"{self.config.name} failed: {self.error!r}")
        return [] if self.summary is None else list(self.summary.recoveries_s)


async def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, msgspec.json.encode(event), key=event["aggregate_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await condition():
                return
        except (aiohttp.ClientError, OSError):
            pass  # not listening yet
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what} not within {timeout_s} s")


class _System:
    """How to ask one system for one key and for a batch."""

    def __init__(self, name: str, base: str) -> None:
        self.name = name
        self.base = base

    async def point(self, session: aiohttp.ClientSession, key: str) -> Any:
        path = f"/views/balances/{key}" if self.name == "eventray" else f"/balances/{key}/"
        async with session.get(self.base + path) as response:
            body = await response.json(content_type=None)
            assert response.status == 200, f"{self.name}: {response.status} {body}"
            return body["value"]

    async def batch(self, session: aiohttp.ClientSession, keys: list[str]) -> list[Any]:
        if self.name == "eventray":
            request = session.post(self.base + "/views/balances/lookup", data=msgspec.json.encode({"keys": keys}))
        else:
            request = session.get(self.base + "/lookup/", params={"keys": ",".join(keys)})
        async with request as response:
            body = await response.json(content_type=None)
            assert response.status == 200, f"{self.name}: {response.status} {body}"
            values: list[Any] = body["values"]
            return values


async def _measure(
    system: _System, kind: str, expected: dict[str, Any], clients: int, seconds: float, batch: int, seed: int
) -> dict[str, Any]:
    keys = sorted(expected)
    latencies: list[float] = []
    answered = 0
    rng = random.Random(seed)
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if kind == "point":
                key = rng.choice(keys)
                value = await system.point(session, key)
                assert value == expected[key], f"{system.name} answered {key}: {value} != {expected[key]}"
                answered += 1
            else:
                asked = rng.sample(keys, batch)
                values = await system.batch(session, asked)
                assert values == [expected[key] for key in asked], f"{system.name} answered a batch wrongly"
                answered += batch
            latencies.append(time.perf_counter() - started)

    load = os.getloadavg()[0]
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"system": system.name, "kind": kind, "keys_per_s": answered / elapsed,
            "requests_per_s": len(latencies) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "load": load}  # fmt: skip


async def _command_to_visible(
    gateway: CommandGateway, gateway_port: int, router: str, commands: int, rate: float
) -> dict[str, Any]:
    client = CqrsClient(f"http://127.0.0.1:{gateway_port}", router)
    warm = await client.command("accounts", "warm-up", {"command_type": "Open"})  # the pipeline reads: measure now
    await client.view("balances", "warm-up", min_position=warm["read_token"])
    to_reply: list[float] = []
    to_visible: list[float] = []
    slowest: list[tuple[float, float]] = []  # (seconds to the reply, sent at seconds into the run)
    rng = random.Random(11)

    async def one(index: int) -> None:
        key = f"new-{index % 500:04d}"
        started = time.perf_counter()
        kind = "Open" if index < 500 else "Deposit"
        reply = await client.command("accounts", key, {"command_type": kind, "amount_cents": rng.randint(1, 99)})
        to_reply.append(time.perf_counter() - started)
        slowest.append((time.perf_counter() - started, started - began))
        seen = await client.view("balances", key, min_position=reply["read_token"])
        assert seen["found"] and seen["value"]["version"] >= reply["version"]
        to_visible.append(time.perf_counter() - started)

    tasks: list[asyncio.Future[None]] = []
    began = time.perf_counter()
    for index in range(commands):
        ahead_s = index / rate - (time.perf_counter() - began)
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)
        if index == 500:  # the accounts are open before deposits go to them
            await asyncio.gather(*tasks)
        tasks.append(asyncio.ensure_future(one(index)))
    await asyncio.gather(*tasks)
    await client.close()
    to_reply.sort()
    to_visible.sort()

    def percentile(values: list[float], q: float) -> float:
        return 1000 * values[min(len(values) - 1, int(len(values) * q))]

    return {"commands": commands, "rate": rate, "reply_p50_ms": percentile(to_reply, 0.5),
            "reply_p99_ms": percentile(to_reply, 0.99), "visible_p50_ms": percentile(to_visible, 0.5),
            "visible_p99_ms": percentile(to_visible, 0.99),
            "slowest_replies": [[round(s, 3), round(at, 3)] for s, at in sorted(slowest)[-20:]]}  # fmt: skip


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _benchmark(args: argparse.Namespace, work: Path, bootstrap: str) -> dict[str, Any]:
    name = f"bench-cqrs-{uuid.uuid4().hex[:6]}"
    topic = f"{name}.events"
    connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)
    asyncio.run(ensure_topic(connection, topic, PARTITIONS))
    events = account_events(args.events, args.accounts, seed=1, start_time_ms=START_TIME_MS)
    asyncio.run(_produce(bootstrap, topic, events))
    expected = balances_after(events)
    print(f"events topic: {len(events):,} events of {len(expected):,} accounts", flush=True)
    connect(num_cpus=8)  # an embedded Ray both pipelines share
    router_port = _free_port()
    views = account_views_on_kafka(f"{name}-views", bootstrap, topic, work / "views")
    views.update(serve={"port": router_port}, checkpoint={"interval_ms": 1_000, "uri": str(work / "views-ckpt")})
    views["sinks"] = [{"type": "jsonl", "path": str(work / "views-out")}]
    viewing = _Run(parse_config(views))
    viewing.start()
    faust_port = _free_port()
    faust = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.systems.faust_views", bootstrap, topic, str(faust_port),
         str(work / "faust")],
        stdout=subprocess.DEVNULL, stderr=open(work / "faust.log", "wb"),  # noqa: SIM115 - closed with the process
    )  # fmt: skip
    eventray = _System("eventray", f"http://127.0.0.1:{router_port}")
    faust_system = _System("faust", f"http://127.0.0.1:{faust_port}")
    rebuild: dict[str, Any] | None = None
    try:
        asyncio.run(_router_ready(eventray.base))
        asyncio.run(_until(lambda: _all_applied(eventray, expected), "eventray applied every event"))
        print("eventray: every event applied", flush=True)
        asyncio.run(_until(lambda: _faust_applied(faust_system, len(events)), "faust applied every event"))
        print("faust: every event applied", flush=True)
        runs = []
        for attempt in range(args.repeat if args.queries else 0):
            order = [eventray, faust_system] if attempt % 2 == 0 else [faust_system, eventray]
            for kind in ("point", "batch"):
                for system in order:
                    run = asyncio.run(_measure(system, kind, expected, args.clients, args.seconds, args.batch, attempt))
                    run["attempt"] = attempt
                    runs.append(run)
                    print(_line(run), flush=True)
        faust.terminate()
        faust.wait(timeout=60)
        rebuild = _rebuild_phase(args, viewing.config, eventray, expected) if args.rebuild else None
        latency = _latency_phase(args, work, bootstrap, name, topic, router_port)
    finally:
        if faust.poll() is None:
            faust.kill()
        recoveries = viewing.stop()
        if rebuild is not None:
            rebuild["recoveries_s"] = rebuild.pop("running").stop()
    latency["views_recoveries_s"] = recoveries
    return {"events": len(events), "accounts": len(expected), "runs": runs, "latency": latency, "rebuild": rebuild}


class _Rebuild(_Run):
    """The rebuild of the view (:func:`cluster.cqrs.rebuild.rebuild_view`) until :meth:`stop`."""

    def __init__(self, config: PipelineConfig, view: str) -> None:
        super().__init__(config)
        self.view = view
        self.reports: list[str] = []
        self.switched = threading.Event()

    def run(self) -> None:
        try:
            self.summary = rebuild_view(self.config, self.view, None, 0, self._said, self._stopped).summary
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def _said(self, report: str) -> None:
        self.reports.append(report)
        print(f"rebuild: {report}", flush=True)
        if "from now on" in report:
            self.switched.set()


def _rebuild_phase(
    args: argparse.Namespace, config: PipelineConfig, eventray: _System, expected: dict[str, Any]
) -> dict[str, Any]:
    """Point queries before, during and after a rebuild of the view (see the module docstring)."""
    windows = [asyncio.run(_measure(eventray, "point", expected, args.clients, args.seconds, args.batch, 100))]
    windows[0]["phase"] = "before"
    rebuilding = _Rebuild(config, "balances")
    started = time.monotonic()
    rebuilding.start()
    while not rebuilding.switched.is_set():
        if not rebuilding.is_alive():
            raise RuntimeError(f"the rebuild ended before it switched: {rebuilding.error!r}")
        window = asyncio.run(_measure(eventray, "point", expected, args.clients, args.seconds, args.batch, 101))
        windows.append(window | {"phase": "during" if not rebuilding.switched.is_set() else "switch"})
    switched_s = time.monotonic() - started
    after = asyncio.run(_measure(eventray, "point", expected, args.clients, args.seconds, args.batch, 102))
    windows.append(after | {"phase": "after"})
    for window in windows:
        print(f"rebuild phase {window['phase']}: {_line(window | {'attempt': 0})}", flush=True)
    return {"switched_after_s": switched_s, "windows": windows, "reports": rebuilding.reports, "running": rebuilding}


def _line(run: dict[str, Any]) -> str:
    return (f"{run['system']} {run['kind']} #{run['attempt'] + 1}: {run['keys_per_s']:,.0f} keys/s, p50 "
            f"{run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms (load {run['load']:.2f})")  # fmt: skip


def _latency_phase(
    args: argparse.Namespace, work: Path, bootstrap: str, name: str, topic: str, router_port: int
) -> dict[str, Any]:
    commands_topic = f"{name}.commands"
    asyncio.run(ensure_topic(KafkaConnectionConfig(bootstrap_servers=bootstrap), commands_topic, PARTITIONS))
    data = accounts_on_kafka(f"{name}-accounts", bootstrap, commands_topic, work / "accounts")
    data["keyed"].update(events_topic=topic, replies_topic=f"{name}.replies", snapshot_every=None)
    data["sinks"][0].update(topic=f"{name}.replies", topics=[topic], compacted=[])
    data.update(delivery="exactly_once", checkpoint={"interval_ms": 250, "uri": str(work / "accounts-ckpt")})
    accounts = parse_config(data)
    writing = _Run(accounts)
    writing.start()
    try:

        async def measure() -> dict[str, Any]:
            await _until(lambda: _topic_exists(bootstrap, f"{name}.replies"), "the replies topic")
            gateway = CommandGateway({"accounts": accounts})
            port = await gateway.start(port=0)
            try:
                return await _command_to_visible(gateway, port, f"http://127.0.0.1:{router_port}", args.commands,
                                                 args.rate)  # fmt: skip
            finally:
                await gateway.close()

        latency = asyncio.run(measure())
    finally:
        recoveries = writing.stop()
    latency["accounts_recoveries_s"] = recoveries
    reply = f"command -> reply p50 {latency['reply_p50_ms']:.0f} ms, p99 {latency['reply_p99_ms']:.0f} ms"
    print(f"{reply}; -> visible p50 {latency['visible_p50_ms']:.0f} ms, p99 {latency['visible_p99_ms']:.0f} ms")
    return latency


async def _topic_exists(bootstrap: str, topic: str) -> bool:
    from actors.kafka.admin import partition_count  # noqa: PLC0415 - only here

    return bool(await partition_count(KafkaConnectionConfig(bootstrap_servers=bootstrap), topic, required=False))


async def _router_ready(url: str) -> None:
    client = CqrsClient(None, url)
    try:
        await client.wait_ready(timeout_s=300)
    finally:
        await client.close()


async def _all_applied(system: _System, expected: dict[str, Any]) -> bool:
    keys = sorted(expected)
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(keys), 2_000):
            chunk = keys[start : start + 2_000]
            if await system.batch(session, chunk) != [expected[key] for key in chunk]:
                return False
    return True


async def _faust_applied(system: _System, events: int) -> bool:
    async with aiohttp.ClientSession() as session, session.get(system.base + "/applied/") as response:
        return bool(response.status == 200 and (await response.json(content_type=None))["applied"] >= events)


def _median(runs: list[dict[str, Any]], field: str, **match: Any) -> float:
    median: float = statistics.median(run[field] for run in runs if all(run[k] == v for k, v in match.items()))
    return median


def _report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    runs = result["runs"]
    lines = [f"{result['events']:,} events, {result['accounts']:,} accounts; {args.clients} clients, "
             f"{args.seconds:.0f} s per run, batches of {args.batch}; medians of {args.repeat}",
             "", "| queries | eventray keys/s | Faust keys/s | ratio | eventray p50 / p99 ms | Faust p50 / p99 ms |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in ("point", "batch") if runs else ():
        ours = _median(runs, "keys_per_s", system="eventray", kind=kind)
        theirs = _median(runs, "keys_per_s", system="faust", kind=kind)
        lines.append(
            f"| {kind} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x | "
            f"{_median(runs, 'p50_ms', system='eventray', kind=kind):.1f} / "
            f"{_median(runs, 'p99_ms', system='eventray', kind=kind):.1f} | "
            f"{_median(runs, 'p50_ms', system='faust', kind=kind):.1f} / "
            f"{_median(runs, 'p99_ms', system='faust', kind=kind):.1f} |"
        )
    loads = [run["load"] for run in runs] or [os.getloadavg()[0]]
    latency = result["latency"]
    lines += ["", f"load average before the runs: {min(loads):.2f} to {max(loads):.2f}", "",
              f"command -> reply: p50 {latency['reply_p50_ms']:.0f} ms, p99 {latency['reply_p99_ms']:.0f} ms; "
              f"command -> visible in the view (read_token as min_position): p50 {latency['visible_p50_ms']:.0f} ms, "
              f"p99 {latency['visible_p99_ms']:.0f} ms ({latency['commands']:,} commands at {latency['rate']:.0f}/s, "
              "exactly once, 250 ms checkpoints)"]  # fmt: skip
    rebuild = result.get("rebuild")
    if rebuild is not None:
        switched_s = rebuild["switched_after_s"]
        lines += ["", f"rebuild of the view from {result['events']:,} events: switched {switched_s:.1f} s after it "
                  "started; point queries per window (every one answered, rightly):", "",
                  "| window | keys/s | p50 / p99 ms | load |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {w['phase']} | {w['keys_per_s']:,.0f} | {w['p50_ms']:.1f} / {w['p99_ms']:.1f} | {w['load']:.2f} |"
                  for w in rebuild["windows"]]  # fmt: skip
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cqrs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--batch", type=int, default=100, help="keys per batch request")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commands", type=int, default=10_000, help="commands for command -> visible")
    parser.add_argument("--rate", type=float, default=200.0, help="commands per second")
    parser.add_argument("--no-queries", dest="queries", action="store_false", help="command -> visible only")
    parser.add_argument("--no-rebuild", dest="rebuild", action="store_false", help="leave the rebuild phase out")
    parser.add_argument("--json", type=Path, default=None, help="also write the runs as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind like Ctrl-C: the broker we started stops
    with tempfile.TemporaryDirectory(prefix="bench-cqrs-") as scratch:
        work = Path(scratch)
        with dev_broker(work) as (bootstrap, _, description):
            print(f"broker: {description}", flush=True)
            result = _benchmark(args, work, bootstrap)
    report = _report(args, result)
    print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
