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
    busy_s: float = 0.0  # time spent handling batches since the actor started (for busy ratios)

    @property
    def lag_records(self) -> int:
        return sum(max(0, self.end_offsets[p] - self.positions[p]) for p in self.positions)


@dataclass(frozen=True)
class AggregateProgress:
    """Counters of one AggregateActor, and the top rows of its latest closed window.

    ``windows_emitted`` counts every result row written to the sinks (window results, an upsert's changelog
    rows, dedup's survivors, a process function's rows); an actor of a keyed stage that feeds another counts
    none (its rows reach no sink). ``dropped_intended`` counts rows the keyed operator
    dropped on purpose: an upsert's stale versions and dedup's duplicates (not dead-lettered).
    """

    actor_id: str
    events_in: int
    windows_emitted: int
    late_events: int
    watermark_ms: int
    done: bool
    preview: list[dict[str, Any]] = field(default_factory=list)
    dropped_intended: int = 0
    busy_s: float = 0.0  # time spent processing batches since the actor started (for busy ratios)
    stage: int = 0  # its keyed stage (``stages``: 0 the first)
