"""Fault injection for the chaos suite: SIGKILL of actor processes of the session's Ray cluster, torn files."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.integration.ray_cluster import LocalRayCluster

ACTOR_KINDS = ("SourceActor", "AggregateActor")


def actor_processes(cluster: LocalRayCluster, kinds: tuple[str, ...]) -> list[psutil.Process]:
    """Live worker processes of this cluster (descendants of its ``ray start``) running one of ``kinds``."""
    found = []
    for process in psutil.Process(cluster.process.pid).children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(title.startswith(f"ray::{kind}") for kind in kinds):
            found.append(process)
    return found


@dataclass(eq=False)  # a Thread must stay hashable
class Killer(threading.Thread):
    """Kills a random process of ``kinds`` every ``interval_s`` (after ``first_after_s``), ``kills`` times."""

    cluster: LocalRayCluster
    kinds: tuple[str, ...] = ACTOR_KINDS
    kills: int = 3
    first_after_s: float = 2.0
    interval_s: float = 3.0
    seed: int = 7
    start_when: Callable[[], bool] | None = None  # also wait for this before the first kill
    killed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="chaos-killer", daemon=True)
        self._stop_event = threading.Event()

    def run(self) -> None:
        rng = random.Random(self.seed)
        if self._stop_event.wait(self.first_after_s):
            return
        while self.start_when is not None and not self.start_when():
            if self._stop_event.wait(0.05):
                return
        while len(self.killed) < self.kills:
            victims = actor_processes(self.cluster, self.kinds)
            if victims:
                victim = rng.choice(victims)
                try:
                    title = " ".join(victim.cmdline())
                    victim.kill()  # SIGKILL: no cleanup, no flush
                    self.killed.append(title)
                except psutil.NoSuchProcess:
                    continue
                if self._stop_event.wait(self.interval_s):
                    return
            elif self._stop_event.wait(0.1):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def __enter__(self) -> Killer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def leave_torn_state_file(checkpoints: Path, timeout_s: float = 30) -> Path:
    """Wait for a complete checkpoint with a non-empty state file, and leave half of that file in a newer epoch
    directory without metadata: what a crash in the middle of writing the next snapshot leaves behind."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        complete = sorted(path.parent for path in checkpoints.rglob("_checkpoint.json"))
        states = [state for state in sorted(complete[-1].glob("state-*.arrow")) if state.stat().st_size > 4096] if (
            complete) else []  # fmt: skip
        if states:
            data = states[0].read_bytes()
            epoch = int(complete[-1].name.removeprefix("epoch-"))
            # far ahead, so the running Supervisor never writes that epoch itself
            torn_dir = complete[-1].parent / f"epoch-{epoch + 1000:06d}"
            torn_dir.mkdir(exist_ok=True)
            torn = torn_dir / states[0].name
            torn.write_bytes(data[: len(data) // 2])
            return torn
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint with state appeared under {checkpoints} in {timeout_s} s")


def newest_complete_epoch(checkpoints: Path) -> int:
    """The highest epoch with metadata under a checkpoint directory (0 before the first)."""
    return max((int(path.parent.name.removeprefix("epoch-")) for path in checkpoints.rglob("_checkpoint.json")),
               default=0)  # fmt: skip
