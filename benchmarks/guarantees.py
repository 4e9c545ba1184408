"""``python -m benchmarks.guarantees [--quick]``: what the delivery guarantees cost, measured on this machine.

1. Recovery time after an actor kill: the orders pipeline (generator, exactly-once files, checkpoints every
   500 ms) while a random source or aggregate actor process is SIGKILLed every few seconds; the Supervisor
   measures from noticing the death to the restored topology reading again. The run is then verified.
2. Checkpoint duration against state size: the orders pipeline with 1-hour windows (state only grows) over
   more and more customers; every checkpoint's duration and state bytes come from its metadata.
3. Exactly-once / at-least-once throughput for the orders pipeline on Kafka (Kafka in, Kafka out), runs
   interleaved on one pre-filled topic.
4. Faults (:mod:`benchmarks.faults`, :mod:`benchmarks.fault_kinds`): network faults, broker bounces, stopped
   actors, storage errors, a full disk, a reused epoch number and a slow sink, each several times, every run
   verified exactly once. ``--only faults`` runs this part alone and keeps the other parts' last results;
   ``--fault-kinds a,b`` runs only those kinds and keeps the other kinds' last rows.

Writes ``benchmarks/GUARANTEES.md`` and ``benchmarks/results/guarantees.json``. Uses an embedded Ray and its own
dev Kafka broker (or ``KAFKA_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.faults import FAULT_KINDS, fault_runs
from benchmarks.figures import merged_faults
from benchmarks.measure import actor_processes
from benchmarks.run import dev_broker
from benchmarks.workloads import prefill_topic
from cluster.commands.verify import verify_run
from cluster.control.ray_auth import prepare_ray_auth
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.examples.orders import orders_pipeline
from pipelines.state.checkpoint_store import Checkpoint

__all__ = ["main"]

BENCH_DIR = Path(__file__).resolve().parent
START_TIME_MS = 1_767_225_600_000


def orders(work: Path, **update: Any) -> PipelineConfig:
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    data.update(
        name=f"guarantees-{uuid.uuid4().hex[:6]}",
        sinks=[{"type": "jsonl", "path": str(work / "windows")}],
        dead_letter={"type": "jsonl", "path": str(work / "dead_letter")},
        tracing={"enabled": False},
        checkpoint={"interval_ms": 500, "uri": str(work / "checkpoints"), "keep": 1_000},
    )
    for key, value in update.items():
        section, _, field = key.partition("__")
        if field:
            data[section] = {**data.get(section, {}), field: value}
        else:
            data[section] = value
    return parse_config(data)


def recovery_times(work: Path, kills: int, rate: int) -> dict[str, Any]:
    events = rate * (4 + 2 * kills)
    config = orders(
        work, source__rate_per_s=rate, source__start_time_ms=START_TIME_MS, delivery="exactly_once",
        runtime__max_events=events, runtime__duration_s=None,
    )  # fmt: skip
    killed: list[str] = []
    done = threading.Event()

    def kill_repeatedly() -> None:
        rng = random.Random(5)
        done.wait(3.0)
        while not done.is_set() and len(killed) < kills:
            victims = actor_processes("ray::SourceActor", "ray::AggregateActor")
            if victims:
                victim = rng.choice(victims)
                killed.append(" ".join(victim.cmdline())[:40])
                victim.kill()
            done.wait(2.0)

    killer = threading.Thread(target=kill_repeatedly, daemon=True)
    killer.start()
    summary = run_pipeline(config)
    done.set()
    killer.join()
    report = asyncio.run(verify_run(config))
    times = sorted(summary.recoveries_s)
    return {
        "events": events,
        "kills": len(killed),
        "recoveries": len(times),
        "recovery_s": times,
        "p50_s": statistics.median(times) if times else None,
        "p99_s": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] if times else None,
        "exactly_once_ok": report.ok_for("exactly_once"),
        "failures": report.failures("exactly_once"),
    }


def checkpoint_costs(work: Path, customers: list[int], events: int) -> list[dict[str, Any]]:
    rows = []
    for count in customers:
        run_dir = work / f"state-{count}"
        config = orders(
            run_dir, source__rate_per_s=None, source__customers=count, source__start_time_ms=START_TIME_MS,
            source__event_time_rate_per_s=2_000, runtime__max_events=events, runtime__duration_s=None,
            aggregate__window={"type": "tumbling", "size_ms": 3_600_000},
        )  # fmt: skip
        run_pipeline(config)
        metadata = [
            msgspec.json.decode(path.read_bytes(), type=Checkpoint)
            for path in sorted((run_dir / "checkpoints").rglob("_checkpoint.json"))
        ]
        for checkpoint in metadata:
            state = sum(a.state.size_bytes for a in checkpoint.aggregates if a.state is not None)
            rows.append({"customers": count, "epoch": checkpoint.epoch, "state_bytes": state,
                         "duration_ms": checkpoint.duration_ms, "final": checkpoint.finished})  # fmt: skip
    return rows


def delivery_throughput(work: Path, bootstrap: str, events: int, repeats: int) -> dict[str, Any]:
    topic = f"guarantees-in-{uuid.uuid4().hex[:6]}"
    asyncio.run(prefill_topic(bootstrap, topic, events))
    rates: dict[str, list[float]] = {"at_least_once": [], "exactly_once": []}
    for _ in range(repeats):
        for delivery, measured in rates.items():
            name = f"g-{delivery[:2]}-{uuid.uuid4().hex[:6]}"
            config = orders(
                work / name,
                name=name,
                source={"type": "kafka", "topic": topic, "group_id": name, "start": "earliest"},
                sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
                dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
                kafka={"bootstrap_servers": bootstrap},
                delivery=delivery,
                runtime__max_events=events, runtime__duration_s=None,
                checkpoint__interval_ms=2_000,
            )  # fmt: skip
            started = time.monotonic()
            summary = run_pipeline(config)
            measured.append(summary.progress.events_in / (time.monotonic() - started))
    medians = {delivery: statistics.median(values) for delivery, values in rates.items()}
    return {"events": events, "rates": rates, "medians": medians,
            "ratio": medians["exactly_once"] / medians["at_least_once"]}  # fmt: skip


def write_report(results: dict[str, Any]) -> None:
    (BENCH_DIR / "results").mkdir(exist_ok=True)
    (BENCH_DIR / "results" / "guarantees.json").write_text(json.dumps(results, indent=2))
    recovery = results["recovery"]
    lines = [
        "# What the guarantees cost (`python -m benchmarks.guarantees`)",
        "",
        f"Machine: {os.cpu_count()} cores; embedded Ray; {results['when']}.",
        "",
        "## Recovery time after an actor kill",
        "",
        f"{recovery['kills']} SIGKILLs of random source/aggregate actor processes during one exactly-once run of "
        f"{recovery['events']:,} events (generator, checkpoints every 500 ms); {recovery['recoveries']} recoveries "
        "(a kill that lands while the topology is being replaced is absorbed by that recovery). Time from the "
        "Supervisor noticing the death to the restored topology reading again:",
        "",
        f"- p50 **{recovery['p50_s']:.2f} s**, p99 **{recovery['p99_s']:.2f} s** "
        f"(all: {', '.join(f'{t:.2f}' for t in recovery['recovery_s'])})",
        "- verified exactly-once afterwards: "
        + ("yes, 0 lost / 0 duplicated" if recovery["exactly_once_ok"] else str(recovery["failures"])),
        "",
        "## Checkpoint duration against state size",
        "",
        "Orders pipeline, 1-hour windows (state only grows), 2 aggregate actors; duration = barrier to commit.",
        "",
        "| customers | checkpoints | state at the largest | median duration | largest-state duration |",
        "|---:|---:|---:|---:|---:|",
    ]
    by_customers: dict[int, list[dict[str, Any]]] = {}
    for row in results["checkpoints"]:
        if not row["final"]:
            by_customers.setdefault(row["customers"], []).append(row)
    for customers, rows in sorted(by_customers.items()):
        largest = max(rows, key=lambda row: row["state_bytes"])
        lines.append(
            f"| {customers:,} | {len(rows)} | {largest['state_bytes'] / 1e6:.2f} MB | "
            f"{statistics.median(r['duration_ms'] for r in rows):.0f} ms | {largest['duration_ms']:.0f} ms |"
        )
    throughput = results.get("throughput")
    if throughput:
        medians = throughput["medians"]
        lines += [
            "",
            "## Exactly-once / at-least-once throughput (orders pipeline, Kafka in and out)",
            "",
            f"{throughput['events']:,} events pre-filled, runs interleaved, wall clock including actor start-up:",
            "",
            f"- at-least-once: {', '.join(f'{r:,.0f}' for r in throughput['rates']['at_least_once'])} events/s "
            f"(median {medians['at_least_once']:,.0f})",
            f"- exactly-once: {', '.join(f'{r:,.0f}' for r in throughput['rates']['exactly_once'])} events/s "
            f"(median {medians['exactly_once']:,.0f})",
            f"- ratio exactly-once / at-least-once: **{throughput['ratio']:.2f}x**",
        ]
    lines += _fault_lines(results.get("faults"))
    (BENCH_DIR / "GUARANTEES.md").write_text("\n".join(lines) + "\n")


def _fault_lines(faults: dict[str, Any] | None) -> list[str]:
    """The chaos table: each fault kind's runs, recoveries, recovery times, run time and verdicts."""
    if not faults:
        return []
    lines = [
        "",
        f"## Faults ({faults['when']})",
        "",
        f"Orders pipeline, Kafka in and out, exactly once, {faults['events']:,} events, checkpoints every 500 ms, "
        "Kafka requests time out after 3 s; the broker advertises a loopback fault proxy "
        "(`cluster/kafka_dev/fault_proxy.py`), so every connection goes through it. Each fault starts once a "
        "checkpoint is complete; each run is verified with `eventray verify`; what each fault does: the module "
        "docstring of `benchmarks/fault_kinds.py`. Recovery: from the Supervisor noticing a failure to the "
        "restored topology reading; a fault the clients rode out needs none. Stopped: from SIGSTOP to Ray's "
        "actor table having the actor dead (the watchdog's kill, after `runtime.unresponsive_after_s`: by "
        "default twice the checkpoint interval, at least 5 s, so 5 s here; the stopped process itself ends "
        "about 5 s later, when Ray force-kills it), then to the restored "
        "topology's first complete checkpoint (detected, then restored: per run). Peak RSS: the actor "
        "processes' summed RSS, the largest of the runs (not measured before 22:00).",
        "",
        "| fault | runs | recoveries per run | recovery p50 | recovery p99 | stopped | run time (median) | "
        "peak RSS | exactly once | when |",
        "|---|---:|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for kind, row in faults["by_fault"].items():
        p50, p99, median = row["recovery_p50_s"], row["recovery_p99_s"], row["run_s_median"]
        detected = ", ".join(_stopped(row.get("detected_s", []), row.get("restored_s", []))) or "-"
        peak = row.get("peak_rss_mib")
        lines.append(
            f"| {kind} | {len(row['runs'])} | {', '.join(map(str, row['recoveries_per_run']))} | "
            f"{'-' if p50 is None else f'{p50:.2f} s'} | {'-' if p99 is None else f'{p99:.2f} s'} | {detected} | "
            f"{'-' if median is None else f'{median:.1f} s'} | {'-' if not peak else f'{peak:.0f} MiB'} | "
            f"{row['exactly_once_runs']} of {len(row['runs'])} | {row.get('when', faults['when'])} |"
        )
    return lines


def _stopped(detected: list[float], restored: list[float]) -> list[str]:
    """Per run: "10.3 s" (detected; rows measured before restored_s), or "10.3 / 13.1 s" (detected / restored)."""
    if len(restored) != len(detected):
        return [f"{t:.1f} s" for t in detected]
    return [f"{d:.1f} / {r:.1f} s" for d, r in zip(detected, restored, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer kills, smaller state, fewer events")
    parser.add_argument("--skip-kafka", action="store_true")
    parser.add_argument("--only", choices=["faults"], help="run this part alone; keep the others' last results")
    parser.add_argument("--fault-runs", type=int, default=3, help="runs of each fault kind (default 3)")
    parser.add_argument("--fault-kinds", help=f"comma-separated, of {', '.join(FAULT_KINDS)} (default: all)")
    args = parser.parse_args(argv)
    prepare_ray_auth(os.environ, embedded=True)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, Any]
    if args.fault_runs < 1:
        parser.error("--fault-runs must be at least 1")
    kinds = tuple(args.fault_kinds.split(",")) if args.fault_kinds else FAULT_KINDS
    if unknown := [kind for kind in kinds if kind not in FAULT_KINDS]:
        parser.error(f"--fault-kinds: unknown {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
    if args.only == "faults":
        previous = BENCH_DIR / "results" / "guarantees.json"
        if not previous.is_file():
            parser.error(f"--only faults keeps the other parts' results from {previous}; run without --only first")
        results = json.loads(previous.read_text())
        with tempfile.TemporaryDirectory(prefix="eventray-faults-") as temporary:
            ran = fault_runs(Path(temporary), args.fault_runs, orders, kinds)
        results["faults"] = merged_faults(results.get("faults"), ran, now, FAULT_KINDS)
        write_report(results)
        print(f"wrote {BENCH_DIR / 'GUARANTEES.md'}")
        return 0
    results = {"when": now}
    with tempfile.TemporaryDirectory(prefix="eventray-guarantees-") as temporary:
        work = Path(temporary)
        results["recovery"] = recovery_times(work / "recovery", kills=4 if args.quick else 12, rate=20_000)
        print("recovery:", {k: v for k, v in results["recovery"].items() if k != "recovery_s"}, flush=True)
        customers = [1_000, 20_000] if args.quick else [1_000, 10_000, 50_000, 200_000]
        results["checkpoints"] = checkpoint_costs(work / "state", customers, 200_000 if args.quick else 600_000)
        print("checkpoints:", len(results["checkpoints"]), flush=True)
        if not args.skip_kafka:
            with dev_broker(work) as (bootstrap, _pid, _description):
                results["throughput"] = delivery_throughput(
                    work / "kafka", bootstrap, 200_000 if args.quick else 500_000, 2 if args.quick else 3
                )
            print("throughput:", results["throughput"]["medians"], flush=True)
            ran = fault_runs(work / "faults", args.fault_runs, orders, kinds)
            earlier = BENCH_DIR / "results" / "guarantees.json"  # kinds left out by --fault-kinds keep their rows
            earlier_faults = json.loads(earlier.read_text()).get("faults") if earlier.is_file() else None
            results["faults"] = merged_faults(earlier_faults, ran, now, FAULT_KINDS)
    write_report(results)
    print(f"wrote {BENCH_DIR / 'GUARANTEES.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
