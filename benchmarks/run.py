"""``python -m benchmarks.run [--quick] [--workloads W1,W1D,W2,W3] [--systems eventray,quix,...]``

Starts its own dev Kafka broker (or uses ``KAFKA_BOOTSTRAP``), pre-fills an input topic once per input size and
feed (W1D's dirty feed has its own topic), runs every selected system on every selected workload it supports
(W1D right after W1, so both are measured on the same machine state), each in its own subprocess, checks each
output, measures eventray's scaling from 1 to 2 source actors and (full mode) the end-to-end latency, then writes
``benchmarks/results/<mode>.json``, ``benchmarks/results/<mode>.png`` and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from benchmarks.driver import RunResult, run_system
from benchmarks.latency import measure_latency
from benchmarks.protocol import RunSpec
from benchmarks.report import BENCH_DIR, write_results
from benchmarks.systems import SYSTEMS, not_run_reason
from benchmarks.workloads import WORKLOADS, Expected, expected_output, is_dirty_feed, prefill_topic
from cluster.control.ray_auth import prepare_ray_auth
from cluster.kafka_dev import DevBrokerConfig, bootstrap_from_env, start_broker, stop_broker

__all__ = ["dev_broker", "main"]

FULL_EVENTS = 1_000_000
QUICK_EVENTS = 200_000
# Faust drains ~2,000-4,000 events/s here; in quick mode it gets a smaller topic so the run fits in 3 minutes.
QUICK_EVENTS_BY_SYSTEM = {"faust": 30_000}
TIMEOUT_S = {"quick": 150.0, "full": 1_800.0}
PACKAGES = ("eventray", "ray", "pyarrow", "aiokafka", "msgspec", "orjson", "quixstreams", "confluent-kafka",
            "faust-streaming", "psutil", "matplotlib")  # fmt: skip


@dataclass
class Inputs:
    """Pre-filled input topics and their expected outputs, one per (input size, dirty feed), made on first use."""

    bootstrap: str
    run_id: str
    topics: dict[tuple[int, bool], str] = field(default_factory=dict)
    expected: dict[tuple[int, bool], Expected] = field(default_factory=dict)

    def topic(self, events: int, dirty: bool = False) -> str:
        """The topic of ``events`` generator events, of W1D's dirty feed when ``dirty``; filled on first use."""
        if (events, dirty) not in self.topics:
            topic = f"bench-input-{events}{'-dirty' if dirty else ''}-{self.run_id}"
            started = time.monotonic()
            report = asyncio.run(prefill_topic(self.bootstrap, topic, events, dirty))
            print(f"  pre-filled {topic}: {report.events:,} events in {time.monotonic() - started:.1f} s", flush=True)
            self.topics[(events, dirty)] = topic
        return self.topics[(events, dirty)]

    def expected_for(self, events: int, dirty: bool = False) -> Expected:
        """The expected output of :meth:`topic` ``(events, dirty)``'s events; computed on first use."""
        if (events, dirty) not in self.expected:
            self.expected[(events, dirty)] = expected_output(events, dirty=dirty)
        return self.expected[(events, dirty)]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 events, no latency run: under 3 minutes")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, default {','.join(WORKLOADS)} (W1D: W1 on a feed with 1 %% invalid events; "
        "eventray only, the peers have no dead-letter path)",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated of {', '.join(SYSTEMS)}")
    parser.add_argument("--events", type=int, default=None, help="input events per topic (overrides the mode)")
    parser.add_argument("--no-scaling", action="store_true", help="skip eventray's 1-source-actor run")
    parser.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure W2 latency at 50 %% of eventray's throughput (default: full mode only)",
    )
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="how long the latency input lasts")
    return parser.parse_args(argv)


@contextmanager
def dev_broker(work: Path) -> Iterator[tuple[str, int | None, str]]:
    """(bootstrap, broker pid or None, description): KAFKA_BOOTSTRAP if set, else a dev broker we start."""
    external = bootstrap_from_env()
    if external is not None:
        yield external, None, f"existing broker at {external} (KAFKA_BOOTSTRAP)"
        return
    config = DevBrokerConfig(state_dir=work / "broker", port=0, heap_mb=1024)
    broker = start_broker(config)
    try:
        yield broker.bootstrap, broker.pid, f"Apache Kafka {broker.kafka_version} dev broker (KRaft, 1 GiB heap)"
    finally:
        stop_broker(broker.state_dir)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / (1 << 30),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "load_at_start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    versions = {package: _version(package) for package in PACKAGES}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=BENCH_DIR.parent, check=False).stdout.strip()  # fmt: skip
    if commit:
        versions["eventray"] += f" (commit {commit})"
    return versions


def _print_row(result: RunResult) -> None:
    status = result.error or ("correct" if result.correct else f"NOT correct: {result.verdict}")
    print(
        f"  {result.workload} {result.system:<13} actors={result.source_actors} {result.events_per_s:>12,.0f} ev/s "
        f"cpu {result.cpu_s_per_m:6.1f} s/M  pss {result.peak_pss_mib:7.0f} MiB  start-up {result.startup_s:4.1f} s"
        f"  {status}",
        flush=True,
    )


@dataclass
class Session:
    mode: str
    events: int
    bootstrap: str
    broker_pid: int | None
    work: Path
    inputs: Inputs

    def events_for(self, system: str) -> int:
        if self.mode == "quick":
            return min(self.events, QUICK_EVENTS_BY_SYSTEM.get(system, self.events))
        return self.events

    def run(self, workload: str, system: str, source_actors: int = 2) -> RunResult:
        events = self.events_for(system)
        name = f"{workload.lower()}-{system}-{source_actors}-{uuid.uuid4().hex[:6]}"
        kafka, dirty = workload != "W3", is_dirty_feed(workload)
        expected = self.inputs.expected_for(events, dirty)
        spec = RunSpec(
            system=system, workload=workload, events=events, order_events=expected.order_events,
            work_dir=str(self.work / name), source_actors=source_actors,
            bootstrap=self.bootstrap if kafka else None,
            input_topic=self.inputs.topic(events, dirty) if kafka else None,
            output_topic=f"bench-out-{name}" if kafka else None,
        )  # fmt: skip
        result = run_system(spec, expected, self.broker_pid, TIMEOUT_S[self.mode])
        _print_row(result)
        return result


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    options = _parse(arguments)
    prepare_ray_auth(os.environ, embedded=True)  # one auth mode for every process (ARCHITECTURE.md section 7)
    mode = "quick" if options.quick else "full"
    events = options.events or (QUICK_EVENTS if options.quick else FULL_EVENTS)
    workloads = [w.strip().upper() for w in options.workloads.split(",") if w.strip()]
    systems = [s.strip() for s in options.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS)) + sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        print(f"unknown systems or workloads: {unknown}; systems: {list(SYSTEMS)}, workloads: {list(WORKLOADS)}")
        return 2
    latency = options.latency if options.latency is not None else not options.quick
    started = time.monotonic()
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="eventray-bench-") as temporary:
        work = Path(temporary)
        with dev_broker(work) as (bootstrap, broker_pid, broker_description):
            print(f"broker: {broker_description}", flush=True)
            session = Session(mode, events, bootstrap, broker_pid, work, Inputs(bootstrap, uuid.uuid4().hex[:6]))
            results: list[RunResult] = []
            not_run: dict[str, dict[str, str]] = {}
            for workload in workloads:
                for system in systems:
                    reason = not_run_reason(workload, system)
                    if reason is not None:
                        not_run.setdefault(workload, {})[system] = reason
                        continue
                    results.append(session.run(workload, system))
            if "W1" in workloads and "eventray" in systems and not options.no_scaling:
                scaling = session.run("W1", "eventray", source_actors=1)
                results.append(scaling)
            latency_report = None
            if latency and "W2" in workloads:
                latency_report = measure_latency(session, results, systems, options.latency_seconds)
    run = {
        "mode": mode,
        "events": events,
        "command": shlex.join(["python", "-m", "benchmarks.run", *arguments]),
        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "total_s": time.monotonic() - started,
        "machine": machine,
        "broker": broker_description,
        "broker_sampled": session.broker_pid is not None,
        "versions": _versions(),
        "results": [_row(result) for result in results],
        "not_run": not_run,
        "latency": latency_report,
        "latency_skipped": None if latency else "Not measured: quick mode (run without --quick, or with --latency).",
        "notes": _run_notes(session),
    }
    path = write_results(run)
    print(f"wrote {path}, {BENCH_DIR / 'RESULTS.md'} and {path.with_suffix('.png')} in {run['total_s']:.0f} s")
    return 0


def _row(result: RunResult) -> dict[str, Any]:
    row = result.as_dict()
    row["extra"] = {key: value for key, value in row["extra"].items() if key != "traceback"}
    # the 1-source-actor eventray run belongs to the scaling table only
    row["scaling_only"] = result.system == "eventray" and result.source_actors == 1
    return row


def _run_notes(session: Session) -> list[str]:
    notes = []
    if session.mode == "quick":
        for system, events in QUICK_EVENTS_BY_SYSTEM.items():
            notes.append(
                f"quick mode: {system} drains a {events:,}-event topic (same generator, its first events per "
                "partition) so that the whole run fits in 3 minutes; its events/s stay comparable"
            )
    return notes


if __name__ == "__main__":
    sys.exit(main())
