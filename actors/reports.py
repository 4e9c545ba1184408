"""Small, picklable progress reports that actors return to the Supervisor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AggregateProgress", "SourceProgress"]


@dataclass(frozen=True)
class SourceProgress:
    """Counters of one SourceActor; ``positions`` and ``end_offsets`` are per partition, for lag."""

    actor_id: str
    events_in: int
    events_out: int
    dead_lettered: int
    positions: dict[int, int]
    end_offsets: dict[int, int]
    done: bool
    committed: dict[int, int] = field(default_factory=dict)

    @property
    def lag_records(self) -> int:
        return sum(max(0, self.end_offsets[p] - self.positions[p]) for p in self.positions)


@dataclass(frozen=True)
class AggregateProgress:
    """Counters of one AggregateActor, and the top rows of its latest closed window."""

    actor_id: str
    events_in: int
    windows_emitted: int
    late_events: int
    watermark_ms: int
    done: bool
    preview: list[dict[str, Any]] = field(default_factory=list)
