"""CPU time and memory of a process tree, sampled from outside (psutil), so every system is measured alike.

The tree is the system's subprocess and all its descendants (for eventray: the driver, Ray's GCS, raylet,
agents and every worker); each process's CPU time (user + system) is remembered from its last sample, so a
process that exits keeps counting. Memory: the sum over the tree of RSS (shared pages counted once per process,
which overstates Ray's shared object store) and of PSS (shared pages split between the processes that map them).
The broker, shared by every system, is sampled on its own.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

import psutil

__all__ = ["PeakActorRss", "TreeSample", "TreeSampler", "actor_processes", "rss_bytes"]

_MIB = 1 << 20


@dataclass(frozen=True)
class TreeSample:
    at_s: float
    cpu_s: float
    rss_mib: float
    pss_mib: float
    processes: int
    broker_cpu_s: float


@dataclass
class TreeSampler:
    """Samples the tree under ``root_pid`` every ``interval_s`` on a thread until :meth:`stop`."""

    root_pid: int
    broker_pid: int | None = None
    interval_s: float = 0.2
    samples: list[TreeSample] = field(default_factory=list)
    _cpu_by_process: dict[tuple[int, float], float] = field(default_factory=dict)
    _processes: dict[tuple[int, float], psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        tree = []
        for process in found:
            try:
                key = (process.pid, process.create_time())
            except psutil.Error:
                continue
            # keep one Process object per process: psutil caches what it needs on it
            tree.append(self._processes.setdefault(key, process))
        return tree

    def sample(self) -> None:
        rss = pss = 0
        alive = 0
        for process in self._tree():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
                    memory = process.memory_full_info()
            except psutil.Error:
                continue
            alive += 1
            self._cpu_by_process[key] = times.user + times.system
            rss += memory.rss
            pss += getattr(memory, "pss", memory.rss)
        self.samples.append(
            TreeSample(
                at_s=time.time(),
                cpu_s=sum(self._cpu_by_process.values()),
                rss_mib=rss / _MIB,
                pss_mib=pss / _MIB,
                processes=alive,
                broker_cpu_s=self._broker_cpu(),
            )
        )

    def _broker_cpu(self) -> float:
        if self.broker_pid is None:
            return 0.0
        try:
            times = psutil.Process(self.broker_pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def cpu_between(self, start_s: float, end_s: float) -> tuple[float, float]:
        """CPU seconds of the tree and of the broker between two wall-clock times (linear between samples)."""
        return (
            self._at(end_s, "cpu_s") - self._at(start_s, "cpu_s"),
            self._at(end_s, "broker_cpu_s") - self._at(start_s, "broker_cpu_s"),
        )

    def _at(self, when_s: float, attribute: str) -> float:
        times = [sample.at_s for sample in self.samples]
        index = bisect.bisect_left(times, when_s)
        if index == 0:
            return float(getattr(self.samples[0], attribute)) if self.samples else 0.0
        if index >= len(self.samples):
            return float(getattr(self.samples[-1], attribute))
        before, after = self.samples[index - 1], self.samples[index]
        share = (when_s - before.at_s) / max(after.at_s - before.at_s, 1e-9)
        low, high = float(getattr(before, attribute)), float(getattr(after, attribute))
        return low + share * (high - low)

    @property
    def total_cpu_s(self) -> float:
        return self.samples[-1].cpu_s if self.samples else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return max((sample.rss_mib for sample in self.samples), default=0.0)

    @property
    def peak_pss_mib(self) -> float:
        return max((sample.pss_mib for sample in self.samples), default=0.0)


def actor_processes(*titles: str) -> list[psutil.Process]:
    """Live processes under this one (an embedded Ray's workers) whose title starts with one of ``titles``
    (``ray::SourceActor``; ``ray::`` for every Ray worker)."""
    return [process for process in psutil.Process().children(recursive=True) if _title(process).startswith(titles)]


def rss_bytes(process: psutil.Process) -> int:
    """The process's RSS; 0 once it is gone."""
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


class PeakActorRss:
    """The largest summed RSS of eventray's source and aggregate actor processes under this process (an embedded
    Ray), sampled every 0.5 s on a thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            actors = actor_processes("ray::SourceActor", "ray::AggregateActor")
            self.peak_mib = max(self.peak_mib, sum(rss_bytes(process) for process in actors) / _MIB)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=5)
        return round(self.peak_mib, 1)


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""  # gone meanwhile
