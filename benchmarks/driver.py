"""Running one system on one workload in its own subprocess, measured from outside, output checked.

The figures of a run (:class:`RunResult`): drain throughput = input events / (done - ready), where "ready" is
when the system's consumer was assigned and positioned (start-up over, reading can begin) and "done" is when
the last input event was processed and every output was flushed; CPU seconds of the system's
whole process tree over the same interval, per million input events (and the broker's, separately); peak
memory of the tree; wall time from spawning the process to done (start-up included).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actors.kafka.admin import ensure_topic
from benchmarks.measure import TreeSampler
from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.verify import Verdict, read_jsonl_dir, read_topic_values, verify_orders, verify_windows
from benchmarks.workloads import PARTITIONS, Expected
from cluster.control.ray_auth import prepare_ray_auth
from pipelines.config.kafka import KafkaConnectionConfig

__all__ = ["REPO_DIR", "RunResult", "child_environment", "run_system"]

REPO_DIR = Path(__file__).resolve().parent.parent  # `python -m benchmarks.child` must find the package


@dataclass
class RunResult:
    workload: str
    system: str
    events: int
    source_actors: int
    events_in: int = 0
    outputs: int = 0
    drain_s: float = 0.0
    events_per_s: float = 0.0
    cpu_s: float = 0.0
    cpu_s_per_m: float = 0.0
    broker_cpu_s_per_m: float = 0.0
    total_cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    wall_s: float = 0.0
    startup_s: float = 0.0
    correct: bool = False
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def child_environment() -> dict[str, str]:
    """The environment of every system's process: one Ray auth mode (ARCHITECTURE.md section 7), quiet Ray."""
    environment = dict(os.environ)
    prepare_ray_auth(environment, embedded=True)
    environment.setdefault("RAY_DEDUP_LOGS", "0")
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def create_output_topic(bootstrap: str, topic: str) -> None:
    asyncio.run(ensure_topic(KafkaConnectionConfig(bootstrap_servers=bootstrap), topic, PARTITIONS))


def run_system(
    spec: RunSpec,
    expected: Expected,
    broker_pid: int | None,
    timeout_s: float,
    feed: Callable[[Path], None] | None = None,
) -> RunResult:
    """Run ``spec`` in a subprocess, sample its process tree, then check its output.

    ``feed``, when given, is called with the run's work dir once the subprocess is started (a latency run
    produces the input there, after the system has touched ``<work dir>/ready``).
    """
    work = Path(spec.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if spec.output_topic is not None and spec.bootstrap is not None:
        create_output_topic(spec.bootstrap, spec.output_topic)
    spec_path, report_path = work / "spec.json", work / "report.json"
    spec.save(spec_path)
    result = RunResult(spec.workload, spec.system, spec.events, spec.source_actors)
    load_1m = os.getloadavg()[0]  # others' work on the machine, for reading the figures
    spawned_s = time.time()
    with (work / "stdout.log").open("wb") as stdout, (work / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.child", str(spec_path), str(report_path)],
            stdout=stdout, stderr=stderr, env=child_environment(), start_new_session=True, cwd=REPO_DIR,
        )  # fmt: skip
        sampler = TreeSampler(process.pid, broker_pid)
        sampler.start()
        timed_out = False
        try:
            if feed is not None:
                feed(work)
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            result.notes.append(f"stopped after the {timeout_s:.0f} s time limit")
            _stop(process)
        finally:
            sampler.stop()
    if not report_path.exists():
        result.error = f"exited {process.returncode} without a report; see {work / 'stderr.log'}"
        return result
    report = ChildReport.load(report_path)
    _fill_figures(result, report, sampler, spawned_s)
    result.extra["load_1m_at_start"] = round(load_1m, 2)
    if report.error is None and not timed_out:
        verdict = check_output(spec, expected, report)
        result.correct, result.verdict = verdict.correct, verdict.summary
    return result


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the subprocess we started, and its session (its own Ray or peer processes), SIGTERM then SIGKILL."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue
        return


def _fill_figures(result: RunResult, report: ChildReport, sampler: TreeSampler, spawned_s: float) -> None:
    result.error = report.error
    result.notes.extend(report.notes)
    result.extra = report.extra
    result.events_in = report.events_in
    result.outputs = report.outputs
    result.total_cpu_s = sampler.total_cpu_s
    result.peak_rss_mib = sampler.peak_rss_mib
    result.peak_pss_mib = sampler.peak_pss_mib
    if report.error is not None or not report.done_s:
        return
    result.drain_s = report.drain_s
    result.events_per_s = report.events_in / report.drain_s
    cpu_s, broker_cpu_s = sampler.cpu_between(report.ready_s, report.done_s)
    result.cpu_s = cpu_s
    millions = max(report.events_in, 1) / 1e6
    result.cpu_s_per_m = cpu_s / millions
    result.broker_cpu_s_per_m = broker_cpu_s / millions
    result.wall_s = report.done_s - spawned_s
    result.startup_s = report.ready_s - spawned_s


def check_output(spec: RunSpec, expected: Expected, report: ChildReport) -> Verdict:
    """Compare what the system wrote with ``expected`` (of the feed ``spec.workload`` reads).

    W1, W1D and W3 are checked as windows (:func:`verify_windows`), W2 as orders. On the dirty feed (W1D) a
    system that reports ``dead_lettered`` (eventray) must also have dead-lettered exactly the invalid events a
    schema rejects: more means valid events were lost, fewer that invalid ones went through.
    """
    if spec.system == "bare_getmany":
        complete = report.events_in == expected.events
        what = "generated" if spec.workload == "W3" else "read"
        return Verdict(complete, f"{report.events_in}/{expected.events} events {what}, no processing", 0)
    if spec.workload == "W3":
        rows = read_jsonl_dir(Path(spec.work_dir) / "windows")
    else:
        assert spec.bootstrap is not None and spec.output_topic is not None
        rows = read_topic_values(spec.bootstrap, spec.output_topic)
    if spec.workload == "W2":
        return verify_orders(rows, expected)
    verdict = verify_windows(rows, expected)
    dead_lettered = report.extra.get("dead_lettered")
    if not expected.dirty or dead_lettered is None:
        return verdict
    return _with_dead_letters(verdict, int(dead_lettered), expected.rejected_events)


def _with_dead_letters(verdict: Verdict, dead_lettered: int, rejected: int) -> Verdict:
    """``verdict`` with the dead-letter count: a wrong count makes it incorrect."""
    summary = f"{verdict.summary}, {dead_lettered}/{rejected} invalid events dead-lettered"
    return Verdict(verdict.correct and dead_lettered == rejected, summary, verdict.checked)
