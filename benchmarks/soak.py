"""A long run under steady load with a kill every minute: does anything grow? (``make soak``; not in CI)

The orders pipeline, Kafka in and Kafka out, exactly once, on a dev broker of its own:

1. **measure**: a pre-filled backlog read as fast as it goes; throughput = events read per second between the
   first and the last progress poll (start-up excluded);
2. **soak**: a producer writes the input at ``--load`` (0.5) of that throughput for ``--duration-s`` (3,600 s),
   event time advancing with wall time; every ``--kill-every-s`` (60 s) one source or aggregate actor process,
   chosen at random, is SIGKILLed; every ``--sample-every-s`` (10 s) the sampler records the RSS of each actor
   (by its Ray actor name, so a slot's series goes on across the replacement of its process), of the Supervisor
   and of the driver, the size of the checkpoint directory and of the commit-marker topic's log, and the lag
   (events produced and not yet read);
3. **verify** (``--verify``): ``eventray verify`` over the whole run (0 lost, 0 duplicated, windows equal to the
   recomputation). Off by default: verify holds the whole input in memory, and an hour at 47,000 events/s is
   170 million events (a 120 s trial of 5.9 million took 69 s); the chaos table of ``python -m
   benchmarks.guarantees`` verifies each fault kind instead.

Figures (``benchmarks/SOAK.md``, ``benchmarks/results/soak.json``): per actor, the RSS slope after the warm-up
(``--warm-up-s``, 300 s) as a least-squares line, in MiB/h and as the change over the measured span relative to
the line's start (goal: within +-5 %); recovery p50/p99 in the first and the last quarter of the kills; the
checkpoint directory and the marker topic's log segments at the warm-up's end and at the end; the largest lag
and the lag at the end. A killed actor's slot goes on in its replacement, restored from a checkpoint: its line
spans restarts, so only the Supervisor's and the driver's follow one process for the whole hour.
``--duration-s 120 --kill-every-s 20`` makes a short trial of the same path.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import ray

from benchmarks.figures import rss_slope
from benchmarks.guarantees import orders
from benchmarks.measure import actor_processes, rss_bytes
from benchmarks.run import dev_broker
from cluster.commands.produce import produce_events
from cluster.commands.verify import verify_run
from cluster.control.actor_ids import ACTOR_ID
from cluster.control.ray_auth import prepare_ray_auth
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.runner import run_pipeline
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig
from pipelines.io.kafka_acls import commit_marker_topic

__all__ = ["main", "soak"]

BENCH_DIR = Path(__file__).resolve().parent
PARTITIONS = 8
START_TIME_MS = 1_767_225_600_000
_MIB = 1 << 20
_VICTIMS = ("ray::SourceActor", "ray::AggregateActor")


@dataclass(frozen=True)
class SoakSettings:
    duration_s: float = 3_600.0
    load: float = 0.5
    kill_every_s: float = 60.0
    sample_every_s: float = 10.0
    warm_up_s: float = 300.0
    measure_events: int = 600_000
    verify: bool = False


@dataclass
class Sample:
    at_s: float
    rss_mib: dict[str, float]  # actor slot (or "supervisor", "driver") -> RSS
    checkpoint_mib: float
    markers_mib: float
    produced: int
    read: int


@dataclass
class _Shared:
    """What the producer, the killer, the sampler and the progress callback share with the soak."""

    started_s: float = field(default_factory=time.monotonic)
    produced: int = 0
    read: int = 0
    producer_failed: list[BaseException] = field(default_factory=list)
    kills: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s


def soak(work: Path, settings: SoakSettings) -> dict[str, Any]:
    """Measure, soak, verify (module docstring); the figures as a dict."""
    with dev_broker(work) as (bootstrap, _pid, description):
        throughput = measure_throughput(work / "measure", bootstrap, settings.measure_events)
        print(f"measured: {throughput:,.0f} events/s", flush=True)
        rate = settings.load * throughput
        result = _soak_run(work / "soak", bootstrap, work / "broker", rate, settings)
    return {"broker": description, "measured_events_per_s": round(throughput), "rate_per_s": round(rate),
            "settings": settings.__dict__, **result}  # fmt: skip


def measure_throughput(work: Path, bootstrap: str, events: int) -> float:
    """Events per second of the soak's pipeline over a pre-filled backlog, start-up excluded."""
    config = _pipeline(work, bootstrap, "soak-measure", events)
    asyncio.run(produce_events(_connection(bootstrap), f"{config.name}.in", events, _generator(None), None,
                               START_TIME_MS))  # fmt: skip
    polls: list[tuple[float, int]] = []
    run_pipeline(config, on_progress=lambda p: polls.append((time.monotonic(), p.events_in)), poll_s=0.25)
    reading = [(at, read) for at, read in polls if read > 0]
    if len(reading) < 2 or reading[-1][0] <= reading[0][0]:
        raise RuntimeError(f"too few progress polls to measure a throughput ({len(reading)}); raise --measure-events")
    return (reading[-1][1] - reading[0][1]) / (reading[-1][0] - reading[0][0])


def _soak_run(work: Path, bootstrap: str, broker_dir: Path, rate: float, settings: SoakSettings) -> dict[str, Any]:
    events = int(rate * settings.duration_s)
    config = _pipeline(work, bootstrap, "soak", events)
    shared = _Shared()
    sampling = (work, broker_dir, config, settings.sample_every_s, shared)
    threads = [
        threading.Thread(target=_produce, args=(bootstrap, config, events, rate, shared), daemon=True),
        threading.Thread(target=_kill_repeatedly, args=(settings.kill_every_s, shared), daemon=True),
        threading.Thread(target=_sample_repeatedly, args=sampling, daemon=True),
    ]
    for thread in threads:
        thread.start()

    def on_progress(progress: RunProgress) -> None:
        shared.read = progress.events_in

    summary: RunSummary | None = None
    failed: str | None = None
    try:  # a run that fails (e.g. more recoveries than checkpoint.max_recoveries allow) still gets its figures
        summary = run_pipeline(config, on_progress=on_progress, stop_when=lambda _p: bool(shared.producer_failed))
    except Exception as error:  # noqa: BLE001 -- reported with the figures gathered so far
        failed = f"{type(error).__name__}: {error}"[-600:]
    finally:
        shared.done.set()
        for thread in threads:
            thread.join(timeout=60)
    if shared.producer_failed:
        raise RuntimeError(f"the input was not all produced: {shared.producer_failed[0]!r}")
    run_s = shared.elapsed_s()
    verified: dict[str, Any] = {"verified": False, "failed": failed}
    if settings.verify and summary is not None:
        started = time.monotonic()
        report = asyncio.run(verify_run(config))
        verified = {
            "verified": True,
            "exactly_once_ok": report.ok_for("exactly_once"),
            "failures": report.failures("exactly_once"),
            "verify_s": round(time.monotonic() - started, 1),
        }
    return {"events": events, "run_s": round(run_s, 1), **_figures(shared, summary, settings), **verified}


def _pipeline(work: Path, bootstrap: str, prefix: str, events: int) -> PipelineConfig:
    name = f"{prefix}-{os.getpid()}-{int(time.time())}"
    return orders(
        work, name=name, delivery="exactly_once", runtime__max_events=events, runtime__duration_s=None,
        source={"type": "kafka", "topic": f"{name}.in", "group_id": name, "start": "earliest"},
        sinks=[{"type": "kafka", "topic": f"{name}.out", "key_column": "customer_id"}],
        dead_letter={"type": "kafka", "topic": f"{name}.dlq"},
        kafka={"bootstrap_servers": bootstrap},
        checkpoint={"uri": str(work / "checkpoints")},  # the defaults: every 5 s, the last 3 kept
    )  # fmt: skip


def _generator(rate: float | None) -> GeneratorSourceConfig:
    return GeneratorSourceConfig(partitions=PARTITIONS, seed=23, rate_per_s=None,
                                 event_time_rate_per_s=rate or 20_000, invalid_fraction=0.01)  # fmt: skip


def _connection(bootstrap: str) -> KafkaConnectionConfig:
    return KafkaConnectionConfig(bootstrap_servers=bootstrap)


class _SoakEnded(Exception):
    """Raised in the producer's progress callback once the run ended (Ctrl-C, a failure): it stops producing."""


def _produce(bootstrap: str, config: PipelineConfig, events: int, rate: float, shared: _Shared) -> None:
    def produced(count: int) -> None:
        shared.produced = count
        if shared.done.is_set():
            raise _SoakEnded

    try:
        asyncio.run(produce_events(_connection(bootstrap), f"{config.name}.in", events, _generator(rate), rate,
                                   START_TIME_MS, on_progress=produced))  # fmt: skip
    except _SoakEnded:
        pass
    except Exception as error:  # noqa: BLE001 -- the soak stops and says so
        shared.producer_failed.append(error)


def _kill_repeatedly(every_s: float, shared: _Shared) -> None:
    rng = random.Random(7)
    while not shared.done.wait(every_s):
        victims = actor_processes(*_VICTIMS)
        if victims:
            victim = rng.choice(victims)
            try:
                title = " ".join(victim.cmdline())[:40]
                victim.kill()
            except psutil.Error:
                continue  # it died on its own meanwhile
            shared.kills.append((round(shared.elapsed_s(), 1), title))


def _sample_repeatedly(work: Path, broker_dir: Path, config: PipelineConfig, every_s: float, shared: _Shared) -> None:
    marker_topic = commit_marker_topic(config.name)
    while not shared.done.wait(every_s):
        shared.samples.append(
            Sample(
                at_s=round(shared.elapsed_s(), 1),
                rss_mib=_actor_rss(config.name),
                checkpoint_mib=_size_mib(work / "checkpoints"),
                markers_mib=sum(_size_mib(log, "*.log") for log in broker_dir.rglob(f"{marker_topic}-0")),
                produced=shared.produced,
                read=shared.read,
            )
        )


def _actor_rss(pipeline: str) -> dict[str, float]:
    """RSS per actor slot (named by Ray's actor table), the Supervisor and the driver."""
    names = {}
    if ray.is_initialized():
        try:  # Ray's GCS actor table (no dashboard needed); a developer API, so a failure only loses names
            table = ray._private.state.actors(actor_state_name="ALIVE")  # noqa: SLF001
            names = {int(actor["Pid"]): str(actor["Name"]) for actor in table.values()}
        except Exception:  # noqa: BLE001
            names = {}
    rss: dict[str, float] = {"driver": psutil.Process().memory_info().rss / _MIB}
    for process in actor_processes("ray::"):
        name = names.get(process.pid, "").removeprefix(f"{pipeline}-")
        if not name:
            continue
        slot = "supervisor" if name.endswith("-supervisor") else (m["slot"] if (m := ACTOR_ID.match(name)) else name)
        if used := rss_bytes(process):
            rss[slot] = used / _MIB
    return rss


def _size_mib(path: Path, pattern: str = "*") -> float:
    """Bytes on disk under ``path`` of the files matching ``pattern`` (``*.log``: a Kafka partition's segments,
    not the indexes it preallocates), in MiB."""
    return sum(_file_size(file) for file in path.rglob(pattern) if not file.is_dir()) / _MIB


def _file_size(path: Path) -> int:
    """Bytes on disk (Kafka preallocates its 10 MiB index files sparsely: their length is not their size)."""
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0  # deleted while we walked (an older checkpoint, a cleaned segment)


def _figures(shared: _Shared, summary: RunSummary | None, settings: SoakSettings) -> dict[str, Any]:
    samples = shared.samples
    after = [sample for sample in samples if sample.at_s >= settings.warm_up_s] or samples
    slots = sorted({slot for sample in samples for slot in sample.rss_mib})
    recoveries = list(summary.recoveries_s) if summary is not None else []
    quarter = max(1, len(recoveries) // 4)
    return {
        "kills": len(shared.kills),
        "recoveries": len(recoveries),
        "recovery_first_quarter": _p50_p99(recoveries[:quarter]),
        "recovery_last_quarter": _p50_p99(recoveries[-quarter:]),
        "rss": {slot: rss_slope([(s.at_s, s.rss_mib[slot]) for s in after if slot in s.rss_mib]) for slot in slots},
        "checkpoint_mib": _first_last(after, lambda s: s.checkpoint_mib),
        "markers_mib": _first_last(after, lambda s: s.markers_mib),
        "lag_max": max((s.produced - s.read for s in samples), default=0),
        "lag_end": samples[-1].produced - samples[-1].read if samples else None,
        "events_in": summary.progress.events_in if summary is not None else shared.read,
        "samples": [sample.__dict__ for sample in samples],
        "kill_log": shared.kills,
    }


def _p50_p99(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50_s": None, "p99_s": None}
    return {"p50_s": round(statistics.median(ordered), 2),
            "p99_s": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 2)}  # fmt: skip


def _first_last(samples: list[Sample], value: Callable[[Sample], float]) -> dict[str, float | None]:
    if not samples:
        return {"at_warm_up_mib": None, "end_mib": None, "max_mib": None}
    return {"at_warm_up_mib": round(value(samples[0]), 2), "end_mib": round(value(samples[-1]), 2),
            "max_mib": round(max(value(s) for s in samples), 2)}  # fmt: skip


def write_report(result: dict[str, Any]) -> None:
    (BENCH_DIR / "results").mkdir(exist_ok=True)
    (BENCH_DIR / "results" / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    (BENCH_DIR / "SOAK.md").write_text("\n".join(report_lines(result)) + "\n")


def report_lines(result: dict[str, Any]) -> list[str]:
    settings = result["settings"]
    lines = [
        f"# A soak run (`make soak`, {result['when']})",
        "",
        f"Machine: {result['machine']}. {result['broker']}. The orders pipeline, Kafka in and out, exactly once,"
        f" checkpoints every 5 s; measured throughput {result['measured_events_per_s']:,} events/s, fed at "
        f"{settings['load']:.0%} of it ({result['rate_per_s']:,} events/s) for {settings['duration_s']:,.0f} s "
        f"({result['events']:,} events); a SIGKILL of a random source or aggregate every "
        f"{settings['kill_every_s']:g} s; samples every {settings['sample_every_s']:g} s, slopes after a "
        f"{settings['warm_up_s']:g} s warm-up.",
        "",
        f"- kills {result['kills']}, recoveries {result['recoveries']}; recovery p50/p99 in the first quarter "
        f"{_pair(result['recovery_first_quarter'])}, in the last {_pair(result['recovery_last_quarter'])}",
        f"- lag: at most {result['lag_max']:,} events, {result['lag_end'] or 0:,} at the last sample; "
        f"{result['events_in']:,} events read",
        f"- checkpoint directory: {_sizes(result['checkpoint_mib'])}; commit-marker topic: "
        f"{_sizes(result['markers_mib'])}",
        *([f"- **the run failed**: {result['failed']}"] if result.get("failed") else []),
        "- verified: " + (("exactly once" if result["exactly_once_ok"] else "FAILED: " + "; ".join(result["failures"]))
                          + f" ({result['verify_s']} s)" if result["verified"] else "not verified (--verify)"),
        "",
        "| process | RSS at warm-up end | RSS at end (line) | slope | change |",
        "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for slot, line in result["rss"].items():
        if line["mib_per_h"] is None:
            continue
        lines.append(f"| {slot} | {line['start_mib']:.0f} MiB | {line['end_mib']:.0f} MiB | "
                     f"{line['mib_per_h']:+.1f} MiB/h | {line['change_pct']:+.1f} % |")  # fmt: skip
    return lines


def _pair(figures: dict[str, float | None]) -> str:
    return "-" if figures["p50_s"] is None else f"{figures['p50_s']} s / {figures['p99_s']} s"


def _sizes(figures: dict[str, float | None]) -> str:
    warm, end, most = figures["at_warm_up_mib"], figures["end_mib"], figures["max_mib"]
    return f"{warm} MiB after the warm-up, {end} MiB at the end (max {most})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    defaults = SoakSettings()
    parser.add_argument("--duration-s", type=float, default=defaults.duration_s, help="how long the input flows")
    parser.add_argument("--load", type=float, default=defaults.load, help="input rate as a share of throughput")
    parser.add_argument("--kill-every-s", type=float, default=defaults.kill_every_s)
    parser.add_argument("--sample-every-s", type=float, default=defaults.sample_every_s)
    parser.add_argument("--warm-up-s", type=float, default=defaults.warm_up_s, help="not in the RSS slopes")
    parser.add_argument("--measure-events", type=int, default=defaults.measure_events)
    parser.add_argument("--verify", action="store_true", help="eventray verify at the end (memory: the whole input)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (samples left out)")
    args = parser.parse_args(argv)
    if not 0 < args.load <= 1 or min(args.duration_s, args.kill_every_s, args.sample_every_s) <= 0:
        parser.error("--load must be in (0, 1]; durations must be positive")
    settings = SoakSettings(args.duration_s, args.load, args.kill_every_s, args.sample_every_s, args.warm_up_s,
                            args.measure_events, args.verify)  # fmt: skip
    prepare_ray_auth(os.environ, embedded=True)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    machine = f"{psutil.cpu_count()} cores, load {load} at start"
    with tempfile.TemporaryDirectory(prefix="eventray-soak-") as temporary:
        result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
                  **soak(Path(temporary), settings)}  # fmt: skip
    write_report(result)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "kill_log")}, indent=1))
    else:
        print("\n".join(report_lines(result)))
    if result.get("failed"):
        return 1
    return 0 if not result["verified"] or result["exactly_once_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
