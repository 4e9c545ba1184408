"""What the benchmark driver hands a system's subprocess (:class:`RunSpec`) and what it reports back
(:class:`ChildReport`), as JSON files, so each system runs alone in its own process tree.

Times are wall-clock epoch seconds (``time.time()``), comparable between the driver and the child.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ChildReport", "RunSpec"]


@dataclass(frozen=True)
class RunSpec:
    """One run of one system on one workload.

    ``events``: input events (all of the topic, or of the generator for W3). ``order_events``: how many of them
    are valid ``OrderCreated`` events (on W1D's dirty feed the invalid ones do not count; systems that cannot
    see the end of a topic stop once they have processed these).
    ``rate_per_s``: None for a drain of a pre-filled topic; a number for a latency run, where the driver
    produces while the system runs and ``duration_s`` bounds the run.
    """

    system: str
    workload: str
    events: int
    order_events: int
    work_dir: str
    bootstrap: str | None = None
    input_topic: str | None = None
    output_topic: str | None = None
    source_actors: int = 2
    aggregate_actors: int = 1
    rate_per_s: float | None = None
    duration_s: float | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @property
    def ready_marker(self) -> Path:
        """The file a system touches once it can consume (a latency run starts producing then)."""
        return Path(self.work_dir) / "ready"

    def signal_ready(self) -> None:
        self.ready_marker.touch()

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class ChildReport:
    """What a system measured about itself.

    ``ready_s``: when start-up was over and reading could begin (the consumer's partitions assigned and
    positioned; for W3 the generator opened): the drain is timed from here, not from the first record
    received, because a consumer's first fetch can already hold most of a small topic. ``first_event_s``: when
    the first input record reached the system's code (for information). ``done_s``: when the last input event
    was processed and every output was flushed (acknowledged by the broker, or written). ``events_in``: input
    events the system read. ``outputs``: records it emitted.
    """

    system: str
    workload: str
    events_in: int = 0
    outputs: int = 0
    started_s: float = 0.0
    ready_s: float = 0.0
    first_event_s: float = 0.0
    done_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ChildReport:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def drain_s(self) -> float:
        return max(self.done_s - self.ready_s, 1e-9)
