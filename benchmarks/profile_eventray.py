"""Profile eventray's hot path on W1 with py-spy: ``python -m benchmarks.profile_eventray [--events N]``.

Pre-fills a topic (own dev broker, or ``KAFKA_BOOTSTRAP``), runs eventray's W1 in a subprocess, attaches
``py-spy record`` to each Supervisor, SourceActor and AggregateActor process as soon as it appears (``py-spy
record --subprocesses`` on the driver does not follow Ray's workers, whose parent is the raylet), and prints, per
actor, the share of its busy samples (waiting in the event loop or Ray's main loop left out) spent under each
function, inclusive, and in each function itself. Raw profiles stay in the work dir it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks.driver import REPO_DIR, child_environment, create_output_topic
from benchmarks.protocol import RunSpec
from benchmarks.run import dev_broker
from benchmarks.workloads import expected_output, prefill_topic
from cluster.control.ray_auth import prepare_ray_auth

__all__ = ["busy_shares", "main"]

_ACTORS = ("Supervisor", "SourceActor", "AggregateActor")
_WAITING = {"Worker.main_loop", "Condition.wait", "EpollSelector.select", "Event.wait", "_wait_for_tstate_lock", ""}
_FRAME = re.compile(r"(.*) \((.*):\d+\)")
_OURS = ("actors/", "pipelines/", "cluster/", "aiokafka/", "pyarrow/", "ray/actor", "cloudpickle")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame.strip()
    function, path = match.groups()
    return f"{re.sub(r'^.*site-packages/', '', path)}::{function}"


def busy_shares(raw: Path) -> tuple[int, int, Counter[str], Counter[str]]:
    """(all samples, busy samples, inclusive counts, self counts) of a py-spy ``--format raw`` file."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = busy = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [_short(frame) for frame in stack.split(";")]
        count = int(count_text)
        total += count
        if frames[-1].rpartition("::")[2] in _WAITING:
            continue
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, busy, inclusive, own


def _print_profile(raw: Path, top: int) -> None:
    total, busy, inclusive, own = busy_shares(raw)
    print(f"\n== {raw.stem}: {total} samples, {busy} busy ({100 * busy / max(total, 1):.0f} %)")
    print("  inclusive, share of busy samples:")
    shown = [(frame, count) for frame, count in inclusive.most_common() if frame.startswith(_OURS)][:top]
    for frame, count in shown:
        print(f"    {100 * count / max(busy, 1):5.1f} %  {frame}")
    print("  self:")
    for frame, count in own.most_common(top // 2):
        print(f"    {100 * count / max(busy, 1):5.1f} %  {frame}")


def _spy_on_actors(child: subprocess.Popen[bytes], work: Path, py_spy: str) -> list[Path]:
    """Attach py-spy to each actor process of ``child``'s tree as it appears; return the raw profile paths."""
    spies: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
    root = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            processes = root.children(recursive=True)
        except psutil.Error:
            break
        for process in processes:
            try:
                title = " ".join(process.cmdline())
            except psutil.Error:
                continue
            actor = next((name for name in _ACTORS if f"ray::{name}" in title), None)
            if actor is None or process.pid in spies:
                continue
            raw = work / f"{actor}-{process.pid}.raw"
            command = [py_spy, "record", "-p", str(process.pid), "--rate", "100", "-f", "raw", "-o", str(raw)]
            spies[process.pid] = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw)
        time.sleep(0.2)
    for spy, _ in spies.values():
        _finish_spy(spy)
    return [raw for _, raw in spies.values() if raw.exists()]


def _finish_spy(spy: subprocess.Popen[bytes]) -> None:
    """py-spy ends with its process; if it lingers (a process it follows lives on), SIGINT makes it write."""
    try:
        spy.wait(timeout=10)
    except subprocess.TimeoutExpired:
        spy.send_signal(2)
        spy.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_eventray", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--source-actors", type=int, default=2)
    parser.add_argument("--top", type=int, default=30)
    options = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    prepare_ray_auth(os.environ, embedded=True)
    work = Path(tempfile.mkdtemp(prefix="eventray-profile-"))
    with dev_broker(work) as (bootstrap, _, description):
        print(f"broker: {description}; work dir {work}", flush=True)
        topic = f"profile-input-{options.events}-{os.getpid()}"
        asyncio.run(prefill_topic(bootstrap, topic, options.events))
        spec = RunSpec(
            system="eventray", workload="W1", events=options.events,
            order_events=expected_output(options.events).order_events, work_dir=str(work / "run"),
            bootstrap=bootstrap, input_topic=topic, output_topic=f"{topic}-out", source_actors=options.source_actors,
        )  # fmt: skip
        Path(spec.work_dir).mkdir(parents=True)
        create_output_topic(bootstrap, topic + "-out")
        spec.save(work / "spec.json")
        command = [sys.executable, "-m", "benchmarks.child", str(work / "spec.json"), str(work / "report.json")]
        with (work / "child.log").open("wb") as log:
            child = subprocess.Popen(command, env=child_environment(), stdout=log, stderr=log, cwd=REPO_DIR)
            raws = _spy_on_actors(child, work, py_spy)
    print((work / "report.json").read_text(encoding="utf-8"))
    for raw in sorted(raws):
        _print_profile(raw, options.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
