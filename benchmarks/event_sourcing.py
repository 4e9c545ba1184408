"""``python -m benchmarks.event_sourcing``: event-sourced accounts end to end on Kafka, and rebuilt from the archive.

**End to end** (eventray alone: no peer decides commands against an event store on Kafka): the accounts workload
(``pipelines.examples.accounts.account_commands``: concurrent writers, stale expected versions, resends) keyed
by account in a topic of 4 partitions; the stage of ``configs/accounts.yaml`` with 2 source and 2 aggregate
actors, events, snapshots and replies to Kafka, on an embedded Ray.

- *throughput*: a pre-filled backlog read from earliest; commands/s = commands / (done - ready), ``ready`` being
  the first progress report with lag, ``done`` when every command is read and its outputs acknowledged;
- *latency*: commands sent at a steady rate while the pipeline runs, each stamped with its send time; a
  read_committed consumer of the replies topic takes (reply visible - sent). Under exactly-once a reply becomes
  visible when its epoch's transaction commits, after the checkpoint that holds it completes: the checkpoint
  interval bounds the latency from below (about half an interval on average, a whole one at worst, plus the
  barrier and the commit). At-least-once replies are visible as soon as they are produced.

**Rebuild** (in this process): the same account histories in eventray's Parquet archive (the stage's output with
``bucket_by: aggregate_id``, 16 buckets, new files every ~25,000 commands as a run's epochs make them) and in the
``eventsourcing`` library (9.5, SQLite, its default JSON transcoder);
every aggregate rebuilt, and 200 random ones looked up by id, events/s; both must agree on every balance.

Each measurement runs 3 times (runs of different kinds interleaved); the report gives medians, ratios and the
load average before each run.
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
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from actors.kafka.admin import ensure_topic
from benchmarks.run import dev_broker
from cluster.commands.event_store_io import REPLAY_COLUMNS, ParquetArchive, read_files
from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import ParquetSinkConfig, PipelineConfig, parse_config
from pipelines.config.state import EventSourcedConfig
from pipelines.examples.accounts import Account, account_commands, accounts_on_kafka
from pipelines.io.sinks import ParquetSink
from pipelines.state.event_sourced import EventSourced
from pipelines.state.replay import replay_history

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
START_TIME_MS = 1_767_225_600_000
ACCOUNT = "pipelines.examples.accounts:Account"
LATENCY_SETTINGS = (("exactly_once", 250), ("exactly_once", 1_000), ("at_least_once", 1_000))


def _config(spec: dict[str, Any], delivery: str, interval_ms: int) -> PipelineConfig:
    """configs/accounts.yaml on Kafka (a group of its own, a snapshot every 50 events) at ``delivery``."""
    name = spec["name"]
    data = accounts_on_kafka(name, spec["bootstrap"], spec["topic"], Path(spec["work_dir"]))
    data["source"]["group_id"] = f"{name}-{uuid.uuid4().hex[:6]}"
    data["keyed"]["snapshot_every"] = 50
    data.update(delivery=delivery, checkpoint={**data["checkpoint"], "interval_ms": interval_ms})
    return parse_config(data)


async def _produce(
    bootstrap: str,
    topic: str,
    commands: list[dict[str, Any]],
    rate_per_s: float | None,
    sent_at: dict[str, float] | None = None,
) -> None:
    """Each command keyed by its account; at ``rate_per_s`` (None: as fast as acknowledged), noting send times."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    started = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    try:
        for sent, command in enumerate(commands):
            if sent_at is not None:  # a resend keeps its first time: its first reply answers that
                sent_at.setdefault(command["command_id"], time.time())
            value = msgspec.json.encode(command)
            pending.append(await producer.send(topic, value, key=command["aggregate_id"].encode()))
            if rate_per_s is not None:
                ahead_s = sent / rate_per_s - (time.monotonic() - started)
                if ahead_s > 0.002:
                    await asyncio.sleep(ahead_s)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _commands(count: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    commands = account_commands(2_000, count, seed, START_TIME_MS)
    return [{**command, "command_id": f"{prefix}{command['command_id']}"} for command in commands]


# --- children: one pipeline run each ------------------------------------------------------------------------------


def _run_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, float] = {}

    def on_progress(progress: RunProgress) -> None:
        seen.setdefault("offset", time.time() - progress.elapsed_s)
        if "ready" not in seen and (progress.lag_records > 0 or progress.events_in > 0):
            seen["ready"] = progress.elapsed_s

    config = _config(spec, spec["delivery"], spec["interval_ms"])
    summary = run_pipeline(
        config, on_progress=on_progress, poll_s=0.1, stop_when=lambda progress: progress.events_in >= spec["count"]
    )
    offset = seen.get("offset", time.time() - summary.progress.elapsed_s)
    ready_s, done_s = offset + seen.get("ready", 0.0), offset + summary.progress.elapsed_s
    return {
        "commands": summary.progress.events_in,
        "outputs": summary.progress.windows_emitted,
        "rate": summary.progress.events_in / max(done_s - ready_s, 1e-9),
    }


def _run_latency(spec: dict[str, Any]) -> dict[str, Any]:
    bootstrap, name = spec["bootstrap"], spec["name"]
    connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)
    for topic in (f"{name}.events", f"{name}.replies", f"{name}.snapshots"):
        asyncio.run(ensure_topic(connection, topic, PARTITIONS))
    commands = _commands(spec["count"], seed=spec["seed"], prefix=f"{name}-")
    ids = {command["command_id"] for command in commands}  # resends share an id: one first reply each
    deadline_s = 120 + len(commands) / spec["rate"]  # a reply that never comes ends the run, counted as missing
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    started = threading.Event()
    finished = threading.Event()

    def consume() -> None:
        asyncio.run(_consume_replies(bootstrap, f"{name}.replies", seen_at, started, finished))

    def produce() -> None:
        started.wait()
        asyncio.run(_produce(bootstrap, spec["topic"], commands, spec["rate"], sent_at))

    threads = [threading.Thread(target=consume, daemon=True), threading.Thread(target=produce, daemon=True)]
    for thread in threads:
        thread.start()

    def on_progress(progress: RunProgress) -> None:
        if progress.elapsed_s > 2:  # the actors are up and reading: start sending
            started.set()

    config = _config(spec, spec["delivery"], spec["interval_ms"])
    run_pipeline(
        config,
        on_progress=on_progress,
        poll_s=0.1,
        stop_when=lambda progress: (
            (progress.events_in >= len(commands) and len(seen_at) >= len(ids)) or progress.elapsed_s > deadline_s
        ),
    )
    finished.set()
    for thread in threads:
        thread.join(timeout=30)
    skip = len(commands) // 10  # the first tenth warms up
    latencies = sorted(
        (seen_at[c["command_id"]] - sent_at[c["command_id"]]) * 1000
        for c in commands[skip:]
        if c["command_id"] in seen_at and c["command_id"] in sent_at
    )
    return {
        "replies": len(latencies),
        "p50_ms": _quantile(latencies, 0.5),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
    }


async def _consume_replies(
    bootstrap: str, topic: str, seen_at: dict[str, float], started: threading.Event, finished: threading.Event
) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not finished.is_set():
            fetched = await consumer.getmany(timeout_ms=50, max_records=10_000)
            now = time.time()
            for records in fetched.values():
                for record in records:
                    seen_at.setdefault(msgspec.json.decode(record.value)["command_id"], now)
    finally:
        await consumer.stop()


def _quantile(values: list[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


_CHILDREN = {"throughput": _run_throughput, "latency": _run_latency}


def _run_child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    work = Path(spec["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    load = os.getloadavg()[0]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.event_sourcing", "--child", kind, str(work / "spec.json")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result.update(kind=kind, delivery=spec["delivery"], interval_ms=spec["interval_ms"], load=load)
    return result


# --- rebuild: eventray's Parquet archive against the eventsourcing library on SQLite -----------------------------


def _histories(work: Path, commands: int) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """The stage's output for ``commands`` commands, archived as Parquet bucketed by account; each account's
    events as rows."""
    operator = EventSourced(EventSourcedConfig(aggregate=ACCOUNT, snapshot_every=None), Account())
    archive = work / "archive"
    sink = ParquetSink(str(archive), "0", bucket_by="aggregate_id", buckets=16)
    rows = [{**command, "_timestamp": command["issued_ms"]} for command in _commands(commands, 5, "")]
    for start in range(0, len(rows), 4_096):
        output = operator.add(pa.RecordBatch.from_pylist(rows[start : start + 4_096])).output
        if output is not None:
            sink.write(output.filter(pa.compute.equal(output.column("topic"), "events")))
        if (start // 4_096) % 6 == 5:  # as a run's epochs do: new files for every ~25,000 commands
            sink.flush()
    sink.close()
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in pa.dataset.dataset(str(archive), format="parquet").to_table().to_pylist():
        events[row["aggregate_id"]].append(row)
    return archive, events


def _eventsourcing_store(work: Path, events: dict[str, list[dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    from benchmarks.systems.eventsourcing_bank import open_bank, store_history  # noqa: PLC0415 - bench extra

    bank = open_bank(work / "eventsourcing.sqlite")
    ids = {key: store_history(bank, key, sorted(rows, key=lambda row: row["version"])) for key, rows in events.items()}
    return bank, ids


def _rebuild_eventray(archive: Path, keys: list[str] | None) -> dict[str, int]:
    """Every account rebuilt from one read of the archive (``keys`` None), or each of ``keys`` looked up alone."""
    sink = ParquetSinkConfig(path=str(archive), bucket_by="aggregate_id", buckets=16)
    balances: dict[str, int] = {}
    if keys is None:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in read_files(sink, "aggregate_id", None):
            grouped[row["aggregate_id"]].append(row)
        for key, rows in grouped.items():
            balances[key] = replay_history(Account(), rows).state["balance_cents"]
        return balances
    opened = ParquetArchive(
        sink, "aggregate_id", REPLAY_COLUMNS
    )  # opened once, as the eventsourcing application keeps its
    for key in keys:  # SQLite connection: each lookup reads the row groups of its bucket that may hold the key
        balances[key] = replay_history(Account(), opened.rows_of(key)).state["balance_cents"]
    return balances


def _rebuild_eventsourcing(bank: Any, ids: dict[str, Any], keys: list[str]) -> dict[str, int]:
    return {key: bank.repository.get(ids[key]).balance_cents for key in keys}


def _rebuilds(work: Path, commands: int, repeat: int) -> dict[str, Any]:
    archive, events = _histories(work, commands)
    bank, ids = _eventsourcing_store(work, events)
    total = sum(len(rows) for rows in events.values())
    every = sorted(events)
    sample = random.Random(3).sample(every, min(200, len(every)))
    sample_events = sum(len(events[key]) for key in sample)
    runs: list[dict[str, Any]] = []
    for attempt in range(repeat):
        for system in ("eventray", "eventsourcing"):
            for scope, keys, count in (("all", every, total), ("lookup", sample, sample_events)):
                load = os.getloadavg()[0]
                started = time.perf_counter()
                if system == "eventray":
                    balances = _rebuild_eventray(archive, None if scope == "all" else keys)
                else:
                    balances = _rebuild_eventsourcing(bank, ids, keys)
                elapsed = time.perf_counter() - started
                runs.append(
                    {
                        "system": system,
                        "scope": scope,
                        "attempt": attempt,
                        "events": count,
                        "rate": count / elapsed,
                        "load": load,
                        "balances": balances,
                    }
                )
    reference = next(run["balances"] for run in runs if run["system"] == "eventsourcing" and run["scope"] == "all")
    for run in runs:
        wrong = [key for key, balance in run.pop("balances").items() if reference[key] != balance]
        assert not wrong, f"{run['system']} rebuilt other balances than eventsourcing for {wrong[:5]}"
    return {
        "aggregates": len(every),
        "events": total,
        "sample": len(sample),
        "sample_events": sample_events,
        "runs": runs,
    }


# --- report -------------------------------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], field: str, **match: Any) -> float:
    values = [run[field] for run in runs if all(run[k] == v for k, v in match.items()) and run[field] is not None]
    return statistics.median(values) if values else float("nan")


def _report(args: argparse.Namespace, end_to_end: list[dict[str, Any]], rebuild: dict[str, Any]) -> str:
    lines = [
        "# Event sourcing: commands end to end on Kafka, and rebuilds from the archive",
        "",
        f"Written by `python -m benchmarks.event_sourcing` on {time.strftime('%Y-%m-%d')}; {psutil.cpu_count()} "
        f"cores; median of {args.repeat} runs each (load average before each run in parentheses). What is "
        "measured and how: the module docstring of benchmarks/event_sourcing.py.",
        "",
        f"## End to end: {args.commands:,} commands, 2,000 accounts, {PARTITIONS} partitions",
        "",
        "| delivery | checkpoint interval | commands/s (median) | runs |",
        "|---|---:|---:|---|",
    ]
    for delivery in ("exactly_once", "at_least_once"):
        mine = [r for r in end_to_end if r["kind"] == "throughput" and r["delivery"] == delivery]
        if mine:
            each = ", ".join(f"{r['rate']:,.0f} ({r['load']:.1f})" for r in mine)
            lines.append(
                f"| {delivery} | {mine[0]['interval_ms']:,} ms | "
                f"{_median(end_to_end, 'rate', kind='throughput', delivery=delivery):,.0f} | {each} |"
            )
    lines += [
        "",
        f"Latency, command sent -> reply visible to a read_committed consumer, at {args.rate:,} commands/s for "
        f"{args.latency_commands:,} commands (the first tenth left out as warm-up):",
        "",
        "| delivery | checkpoint interval | p50 ms | p99 ms | runs (p99) |",
        "|---|---:|---:|---:|---|",
    ]
    for delivery, interval in LATENCY_SETTINGS:
        mine = [
            r
            for r in end_to_end
            if r["kind"] == "latency" and r["delivery"] == delivery and r["interval_ms"] == interval
        ]
        if mine:
            each = ", ".join(f"{r['p99_ms']:,.0f} ({r['load']:.1f})" for r in mine if r["p99_ms"] is not None)
            match = {"kind": "latency", "delivery": delivery, "interval_ms": interval}
            lines.append(
                f"| {delivery} | {interval:,} ms | {_median(end_to_end, 'p50_ms', **match):,.0f} | "
                f"{_median(end_to_end, 'p99_ms', **match):,.0f} | {each} |"
            )
    runs = rebuild["runs"]
    lines += [
        "",
        "Under exactly-once a reply is visible only once the transaction of its epoch commits, after the checkpoint "
        "holding it completes: the interval bounds the latency from below (half an interval on average, a whole "
        "one at worst, plus the barrier's round and the commit). At-least-once replies are visible once produced.",
        "",
        f"## Rebuild: {rebuild['aggregates']:,} accounts, {rebuild['events']:,} events",
        "",
        "| rebuild | eventray (Parquet archive) events/s | eventsourcing 9.5 (SQLite) events/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for scope, what in (
        ("all", "every aggregate"),
        ("lookup", f"{rebuild['sample']} aggregates by id ({rebuild['sample_events']:,} events)"),
    ):
        ours = _median(runs, "rate", system="eventray", scope=scope)
        theirs = _median(runs, "rate", system="eventsourcing", scope=scope)
        lines.append(f"| {what} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")
    lines += [
        "",
        "Runs (events/s, load): "
        + "; ".join(f"{r['system']} {r['scope']} {r['rate']:,.0f} ({r['load']:.1f})" for r in runs)
        + ".",
        "",
        "Both rebuilt the same balance for every account (checked in the run). eventray reads an aggregate's "
        "history from the files of its bucket (16 buckets), filtered by row-group statistics; a full rebuild "
        "reads the archive once and folds each account's events through the same `evolve` as the live stage. "
        "eventsourcing selects each aggregate's events from SQLite by id and reconstructs it.",
    ]
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.event_sourcing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=200_000, help="commands in the throughput backlog")
    parser.add_argument("--latency-commands", type=int, default=20_000, help="commands sent in a latency run")
    parser.add_argument("--rate", type=int, default=2_000, help="commands/s sent in a latency run")
    parser.add_argument("--rebuild-commands", type=int, default=300_000, help="commands behind the rebuilt histories")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the median is reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "EVENT_SOURCING.md", help="the report")
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        kind, spec_path = args.child
        print(json.dumps(_CHILDREN[kind](json.loads(Path(spec_path).read_text(encoding="utf-8")))), flush=True)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind like Ctrl-C: the broker we started stops
    end_to_end: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-es-") as scratch:
        work = Path(scratch)
        rebuild = _rebuilds(work / "rebuild", args.rebuild_commands, args.repeat)
        print(f"rebuild: {rebuild['events']:,} events measured", flush=True)
        with dev_broker(work) as (bootstrap, _, description):
            print(f"broker: {description}", flush=True)
            backlog = f"bench-es-{uuid.uuid4().hex[:6]}.commands"
            asyncio.run(ensure_topic(KafkaConnectionConfig(bootstrap_servers=bootstrap), backlog, PARTITIONS))
            asyncio.run(_produce(bootstrap, backlog, _commands(args.commands, 1, ""), None))
            for attempt in range(args.repeat):
                for delivery in ("exactly_once", "at_least_once"):
                    name = f"es-{delivery}-{attempt}-{uuid.uuid4().hex[:4]}"
                    spec = {
                        "bootstrap": bootstrap,
                        "topic": backlog,
                        "name": name,
                        "delivery": delivery,
                        "interval_ms": 1_000,
                        "count": args.commands,
                        "work_dir": str(work / name),
                    }
                    run = _run_child("throughput", spec)
                    print(f"throughput {delivery} #{attempt + 1}: {run['rate']:,.0f} commands/s", flush=True)
                    end_to_end.append(run)
                for delivery, interval in LATENCY_SETTINGS:
                    name = f"lat-{delivery}-{interval}-{attempt}-{uuid.uuid4().hex[:4]}"
                    asyncio.run(
                        ensure_topic(KafkaConnectionConfig(bootstrap_servers=bootstrap), f"{name}.commands", PARTITIONS)
                    )
                    spec = {
                        "bootstrap": bootstrap,
                        "topic": f"{name}.commands",
                        "name": name,
                        "delivery": delivery,
                        "interval_ms": interval,
                        "count": args.latency_commands,
                        "rate": args.rate,
                        "seed": attempt,
                        "work_dir": str(work / name),
                    }
                    run = _run_child("latency", spec)
                    print(
                        f"latency {delivery} {interval} ms #{attempt + 1}: p50 {run['p50_ms']} ms, "
                        f"p99 {run['p99_ms']} ms",
                        flush=True,
                    )
                    end_to_end.append(run)
    args.out.write_text(_report(args, end_to_end, rebuild), encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps({"end_to_end": end_to_end, "rebuild": rebuild}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
