"""``python -m benchmarks.joins``: enrichment with a temporal join, eventray against Quix and a hand-written loop.

The job: every ``OrderCreated`` event of an orders topic gets ``in_stock``, the quantity of the newest
``InventoryUpdated`` event of its SKU from an inventory topic (a left join: an order whose SKU has none yet gets
null), written as one JSON record per order to a Kafka topic. Both topics are pre-filled once (keyed by SKU,
the client's default partitioner, the same partition count: Quix's ``join_asof`` needs co-partitioned topics,
so that is the fair layout) and read from earliest by every system:

- **eventray**: configs/orders_enriched.yaml with the two topics as inputs (temporal join, emitted on the
  watermark over both topics), at-least-once to a Kafka topic, 2 source and 2 join actors on an embedded Ray;
- **quix**: ``join_asof(how="left")`` of two StreamingDataFrames (Quix Streams, pinned in the bench extra);
- **handwritten**: one aiokafka consumer of both topics and a producer; a dict of the latest quantity per SKU,
  looked up as each order arrives (a KStream-KTable join: no watermark, arrival order decides).

Each system runs in its own process, 3 times, the systems interleaved; the drain rate is input records / (done
- ready), ``ready`` being when the system could start reading (partitions assigned, or for eventray its first
progress report with lag), ``done`` when the last output was acknowledged. The table gives the median and its
ratio to the hand-written loop's, with the load average before each run.

Then, in this process: the rows each join keeps over a long run against their bound, and memory per 1M
right-side keys: the temporal join's state (Arrow table bytes and process
RSS growth) holding one version of each of 1M SKUs, next to a Python dict of 1M ``sku -> (time, quantity)``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil
import pyarrow as pa
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from actors.kafka.admin import ensure_topic
from benchmarks.run import dev_broker
from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import GeneratorSourceConfig, parse_config
from pipelines.config.state import JoinConfig
from pipelines.io.generator import generate_events
from pipelines.state.interval_join import IntervalJoin
from pipelines.state.joins import LEFT, RIGHT, SIDE, JoinColumns
from pipelines.state.temporal_join import TemporalJoin

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
ENRICHED_YAML = ROOT / "configs" / "orders_enriched.yaml"
PARTITIONS = 4
SKUS = 5_000
START_TIME_MS = 1_767_225_600_000
SYSTEMS = ("eventray", "quix", "handwritten")
MEMORY_KEYS = 1_000_000


# --- input -----------------------------------------------------------------------------------------------------


async def _fill(bootstrap: str, topic: str, event_type: str, count: int, seed: int) -> int:
    """Produce ``count`` generator events of ``event_type``, keyed by SKU, timestamped with their event time."""
    await ensure_topic(KafkaConnectionConfig(bootstrap_servers=bootstrap), topic, PARTITIONS)
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=seed, rate_per_s=None, invalid_fraction=0.0,
                                      skus=SKUS, event_time_rate_per_s=20_000)  # fmt: skip
    decoder = msgspec.json.Decoder()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    sent, offset, pending = 0, 0, []
    try:
        while sent < count:
            # the same span of every generator partition, in event-time order: each topic partition then holds
            # its events as disordered as the generator makes them (500 ms), as a live producer would write them
            chunk = [
                event
                for partition in range(PARTITIONS)
                for event in generate_events(generator, partition, offset, 5_000, START_TIME_MS).payloads.to_pylist()
            ]
            events = sorted(
                ((decoder.decode(payload), payload) for payload in chunk), key=lambda e: e[0]["event_time_ms"]
            )
            for event, payload in events:
                if event["event_type"] != event_type or sent >= count:
                    continue
                # no record timestamp: the broker's time, so that retention does not delete the generator's event
                # times (months old) while the benchmark runs; Quix reads event time from the value
                pending.append(await producer.send(topic, payload, key=event["sku"].encode()))
                sent += 1
            offset += 5_000
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


# --- the systems, each run as a child process --------------------------------------------------------------------


def _run_eventray(spec: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ENRICHED_YAML.read_text(encoding="utf-8"))
    work = Path(spec["work_dir"])
    data["inputs"]["orders"]["source"] = {"type": "kafka", "topic": spec["orders"], "start": "earliest",
                                          "group_id": f"bench-join-{uuid.uuid4().hex[:6]}"}  # fmt: skip
    data["inputs"]["inventory"]["source"] = {"type": "kafka", "topic": spec["inventory"], "start": "earliest"}
    data.update(
        name="bench-join",
        kafka={"bootstrap_servers": spec["bootstrap"]},
        sinks=[{"type": "kafka", "topic": spec["output"], "key_column": "sku"}],
        dead_letter={"type": "jsonl", "path": str(work / "dead_letter")},
        checkpoint={"uri": str(work / "checkpoints")},
        runtime={"duration_s": None, "source_actors": 2, "aggregate_actors": 2},
        tracing={"enabled": False},
    )
    total = spec["orders_count"] + spec["inventory_count"]
    seen: dict[str, float] = {}

    def on_progress(progress: RunProgress) -> None:
        seen.setdefault("offset", time.time() - progress.elapsed_s)
        if "ready" not in seen and (progress.lag_records > 0 or progress.events_in > 0):
            seen["ready"] = progress.elapsed_s

    summary = run_pipeline(parse_config(data), on_progress=on_progress, poll_s=0.1,
                           stop_when=lambda progress: progress.events_in >= total)  # fmt: skip
    offset = seen.get("offset", time.time() - summary.progress.elapsed_s)
    progress = summary.progress
    ready_s, done_s = offset + seen.get("ready", 0.0), offset + progress.elapsed_s
    return {"ready_s": ready_s, "done_s": done_s, "inputs": progress.events_in, "outputs": progress.windows_emitted,
            "late": progress.late_events}  # fmt: skip


def _run_handwritten(spec: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_handwritten(spec))


async def _handwritten(spec: dict[str, Any]) -> dict[str, Any]:
    bootstrap = spec["bootstrap"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=1 << 22
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=1 << 20)  # fmt: skip
    await consumer.start()
    await producer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in (spec["orders"], spec["inventory"]) for p in range(PARTITIONS)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ready_s = time.time()
        decoder, encoder = msgspec.json.Decoder(), msgspec.json.Encoder()
        stock: dict[str, int] = {}
        inputs = outputs = 0
        pending: list[asyncio.Future[Any]] = []
        while outputs < spec["orders_count"]:
            fetched = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for partition, records in fetched.items():
                inputs += len(records)
                if partition.topic == spec["inventory"]:
                    for record in records:
                        event = decoder.decode(record.value)
                        stock[event["sku"]] = event["quantity"]
                    continue
                for record in records:
                    order = decoder.decode(record.value)
                    order["in_stock"] = stock.get(order["sku"])
                    pending.append(await producer.send(spec["output"], encoder.encode(order), key=record.key))
                    outputs += 1
            if len(pending) > 10_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return {"ready_s": ready_s, "done_s": time.time(), "inputs": inputs, "outputs": outputs}
    finally:
        await producer.stop()
        await consumer.stop()


def _run_quix(spec: dict[str, Any]) -> dict[str, Any]:
    # Quix Streams is in the bench extra only: imported where it runs, so `make typecheck` and the tests need none
    run: Callable[[dict[str, Any]], dict[str, Any]] = importlib.import_module("benchmarks.systems.quix_join").run
    return run(spec)


_CHILDREN = {"eventray": _run_eventray, "quix": _run_quix, "handwritten": _run_handwritten}


def _run_child(system: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``system`` in a process of its own; return what it measured, with the load average before it."""
    work = Path(spec["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    load = os.getloadavg()[0]
    completed = subprocess.run([sys.executable, "-m", "benchmarks.joins", "--child", system, str(work / "spec.json")],
                               capture_output=True, text=True, check=False, cwd=ROOT)  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result.update(system=system, load=load, rate=result["inputs"] / max(result["done_s"] - result["ready_s"], 1e-9))
    return result


# --- memory per 1M right-side keys --------------------------------------------------------------------------------


def _memory_per_million_keys() -> dict[str, float]:
    process = psutil.Process()
    keys = pa.array([f"sku-{index:07d}" for index in range(MEMORY_KEYS)])
    times = pa.array(np.arange(MEMORY_KEYS, dtype=np.int64))
    quantities = pa.array(np.arange(MEMORY_KEYS, dtype=np.int64) % 1_000)
    gc.collect()
    before = process.memory_info().rss
    join = TemporalJoin(JoinConfig(key="sku", left="orders", right="inventory"),
                        JoinColumns(("sku", "_timestamp"), ("in_stock",)))  # fmt: skip
    join.add(pa.RecordBatch.from_arrays([keys, times, quantities, pa.array(np.full(MEMORY_KEYS, RIGHT, np.int8))],
                                        names=["sku", "_timestamp", "in_stock", SIDE]))  # fmt: skip
    join.advance(MEMORY_KEYS)  # the watermark passes every version: one per key is kept
    state_bytes = join.snapshot().nbytes
    gc.collect()
    join_rss = process.memory_info().rss - before
    del join
    gc.collect()
    before = process.memory_info().rss
    table = {key: (time_ms, quantity) for key, time_ms, quantity in
             zip(keys.to_pylist(), times.to_pylist(), quantities.to_pylist(), strict=True)}  # fmt: skip
    dict_rss = process.memory_info().rss - before
    assert len(table) == MEMORY_KEYS
    return {"join_state_mib": state_bytes / (1 << 20), "join_rss_mib": join_rss / (1 << 20),
            "dict_rss_mib": dict_rss / (1 << 20)}  # fmt: skip


# --- state over a long run ---------------------------------------------------------------------------------------

LONG_RUN_STEPS = 2_000
STEP_ROWS = 1_000  # per side and step
STEP_MS = 10
JITTER_MS = 500
DISORDER_MS = 1_000
LIVE_KEYS = 100_000


def _state_over_a_long_run(mode: str) -> dict[str, Any]:
    """A temporal or interval join fed ``LONG_RUN_STEPS`` steps of ``STEP_ROWS`` rows a side (random keys of
    ``LIVE_KEYS``, event time ``STEP_MS`` a step with up to ``JITTER_MS`` of disorder), the watermark
    ``DISORDER_MS`` behind the newest time: the rows kept, sampled, against ``rate x (span + lateness) + live keys``
    (plus the version index's unsorted part, at most a quarter of the sorted one or 8,192 rows)."""
    rng = np.random.default_rng(11)
    interval = mode == "interval"
    settings: dict[str, Any] = {"mode": "interval", "lower_ms": -1_000, "upper_ms": 1_000} if interval else {}
    config = JoinConfig(key="sku", left="orders", right="inventory", **settings)
    join: Any = (IntervalJoin if interval else TemporalJoin)(config, JoinColumns(("sku", "_timestamp"), ("in_stock",)))
    keys = pa.array([f"sku-{index:05d}" for index in range(LIVE_KEYS)])
    sides = pa.array(np.repeat(np.array([LEFT, RIGHT], dtype=np.int8), STEP_ROWS))
    samples: list[int] = []
    emitted = 0
    for step in range(LONG_RUN_STEPS):
        times = step * STEP_MS + rng.integers(0, JITTER_MS, 2 * STEP_ROWS)
        rows = pa.RecordBatch.from_arrays(
            [keys.take(pa.array(rng.integers(0, LIVE_KEYS, 2 * STEP_ROWS))), pa.array(times),
             pa.array(rng.integers(0, 1_000, 2 * STEP_ROWS)), sides],
            names=["sku", "_timestamp", "in_stock", SIDE],
        )  # fmt: skip
        join.add(rows)
        result = join.advance(step * STEP_MS + JITTER_MS - DISORDER_MS)
        emitted += 0 if result is None else result.num_rows
        if step % 50 == 0:
            samples.append(join.state_rows)
    rate_per_ms = STEP_ROWS / STEP_MS  # rows per ms of event time, a side
    span_ms = 2_000 if interval else 0
    lateness_ms = DISORDER_MS + JITTER_MS
    bound = 2 * rate_per_ms * (span_ms + lateness_ms) + (0 if interval else LIVE_KEYS)
    # interval: right rows are dropped in steps of an eighth of the span; temporal: the version index's delta
    slack = rate_per_ms * span_ms / 8 if interval else max(8_192, bound // 4)
    return {"mode": mode, "rows_in": 2 * STEP_ROWS * LONG_RUN_STEPS, "emitted": emitted, "bound": bound,
            "slack": slack, "most": max(samples), "half": samples[len(samples) // 2], "last": samples[-1]}  # fmt: skip


# --- the report ----------------------------------------------------------------------------------------------------


def _report(
    runs: list[dict[str, Any]],
    memory: dict[str, float],
    long_runs: list[dict[str, Any]],
    counts: tuple[int, int],
    repeat: int,
) -> str:
    systems = [system for system in SYSTEMS if any(run["system"] == system for run in runs)]
    medians = {system: statistics.median(run["rate"] for run in runs if run["system"] == system) for system in systems}
    baseline = medians.get("handwritten")
    lines = [
        "# Joins: enrichment with a temporal join",
        "",
        f"Written by `python -m benchmarks.joins` on {time.strftime('%Y-%m-%d')}; {psutil.cpu_count()} cores. Orders "
        f"{counts[0]:,} and inventory updates {counts[1]:,} ({SKUS:,} SKUs), each in a topic of {PARTITIONS} "
        f"partitions keyed by SKU, pre-filled and read from earliest; median of {repeat} runs per system, the "
        "systems interleaved. The job and the timing: the module docstring of benchmarks/joins.py.",
        "",
        "| system | input records/s (median) | vs hand-written | runs (records/s, load before) |",
        "|---|---:|---:|---|",
    ]
    for system in systems:
        mine = [run for run in runs if run["system"] == system]
        each = ", ".join(f"{run['rate']:,.0f} ({run['load']:.1f})" for run in mine)
        ratio = "-" if baseline is None else f"{medians[system] / baseline:.2f}"
        lines.append(f"| {system} | {medians[system]:,.0f} | {ratio} | {each} |")
    lines += [
        "",
        "Outputs per run: " + ", ".join(f"{run['system']} {run['outputs']:,}" for run in runs) + "; eventray's "
        f"late orders (dead-lettered): {sum(run.get('late', 0) for run in runs):,}.",
        "",
        "What differs: eventray emits an order once the watermark over both topics has passed it, with the version "
        "valid at its event time, the same on any replay; Quix looks the version up as the order arrives (its "
        "store holds versions by timestamp, but a version that arrives after the order is not seen); the "
        "hand-written loop keeps only the latest quantity, whatever its time.",
        "",
        f"## Memory per {MEMORY_KEYS:,} right-side keys",
        "",
        "| what | MiB |",
        "|---|---:|",
        f"| temporal join state (one version per key, Arrow table bytes) | {memory['join_state_mib']:,.1f} |",
        f"| temporal join, process RSS growth | {memory['join_rss_mib']:,.1f} |",
        f"| Python dict `sku -> (time, quantity)`, process RSS growth | {memory['dict_rss_mib']:,.1f} |",
        "",
        "## State over a long run",
        "",
        f"Each join fed {LONG_RUN_STEPS:,} steps of {STEP_ROWS:,} rows a side ({LIVE_KEYS:,} live keys, "
        f"{STEP_MS} ms of event time a step, up to {JITTER_MS} ms of disorder, the watermark {DISORDER_MS} ms "
        "behind the newest time; the interval join's span is [-1 s, +1 s]), rows kept sampled every 50 steps. "
        "Bound: rate x (span + lateness) + live keys, for both sides; slack: the temporal join's version index may "
        "keep up to a quarter more (or 8,192 rows) between rebuilds, the interval join drops right rows in steps "
        "of an eighth of its span.",
        "",
        "| join | rows in | rows out | bound (+ slack) | most kept | kept halfway | kept at the end |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in long_runs:
        lines.append(f"| {run['mode']} | {run['rows_in']:,} | {run['emitted']:,} | {run['bound']:,.0f} "
                     f"(+ {run['slack']:,.0f}) | {run['most']:,} | {run['half']:,} | {run['last']:,} |")  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.joins", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200_000, help="OrderCreated events in the orders topic")
    parser.add_argument("--inventory", type=int, default=50_000, help="InventoryUpdated events in the inventory topic")
    parser.add_argument("--repeat", type=int, default=3, help="runs per system (the median is reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "JOINS.md", help="where the report goes")
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="which systems to run")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "SPEC"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        system, spec_path = args.child
        print(json.dumps(_CHILDREN[system](json.loads(Path(spec_path).read_text(encoding="utf-8")))), flush=True)
        return 0
    # a SIGTERM (``timeout``, a CI job cancelled) unwinds like Ctrl-C, so the broker this run started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-joins-") as scratch:
        work = Path(scratch)
        with dev_broker(work) as (bootstrap, _, description):
            print(f"broker: {description}", flush=True)
            name = f"bench-join-{uuid.uuid4().hex[:6]}"
            orders = asyncio.run(_fill(bootstrap, f"{name}.orders", "OrderCreated", args.orders, seed=42))
            inventory = asyncio.run(_fill(bootstrap, f"{name}.inventory", "InventoryUpdated", args.inventory, seed=7))
            for attempt in range(args.repeat):
                for system in args.systems:
                    spec = {"bootstrap": bootstrap, "orders": f"{name}.orders", "inventory": f"{name}.inventory",
                            "output": f"{name}.{system}-{attempt}", "orders_count": orders,
                            "inventory_count": inventory, "work_dir": str(work / f"{system}-{attempt}")}  # fmt: skip
                    run = _run_child(system, spec)
                    print(f"{system} #{attempt + 1}: {run['rate']:,.0f} records/s, {run['outputs']:,} outputs, "
                          f"load {run['load']:.1f}", flush=True)  # fmt: skip
                    runs.append(run)
    memory = _memory_per_million_keys()
    long_runs = [_state_over_a_long_run(mode) for mode in ("temporal", "interval")]
    args.out.write_text(_report(runs, memory, long_runs, (orders, inventory), args.repeat), encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "memory": memory, "long_runs": long_runs}, indent=2),
                             encoding="utf-8")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
