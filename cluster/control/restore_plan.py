"""Where each partition of a new topology starts: from a checkpoint, or from the source's start policy.

Pure functions, so the Supervisor's restore logic is tested without actors.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.state.checkpoint_store import Checkpoint, SourceSnapshot

__all__ = ["SourceStart", "plan_source_starts"]


@dataclass(frozen=True)
class SourceStart:
    """One source actor's partitions: the restored snapshot (None on a fresh start) and each partition's
    limit, counted from where it starts."""

    restored: SourceSnapshot | None
    limits: dict[int, int | None]


def plan_source_starts(
    owned: list[list[int]],
    fresh_limits: dict[int, int | None],
    checkpoint: Checkpoint | None,
    actor_ids: list[str],
) -> list[SourceStart]:
    """``owned[i]``: the partitions of source ``i``; ``fresh_limits``: the run's limits from offset 0 (or from
    the committed offset, Kafka). Restored partitions keep their recorded end (``limit_ends``), so a bounded run
    resumed after a crash still stops where it would have."""
    if checkpoint is None:
        return [SourceStart(None, {p: fresh_limits.get(p) for p in partitions}) for partitions in owned]
    positions = checkpoint.positions
    event_times = checkpoint.max_event_time_ms
    limit_ends = {p: end for source in checkpoint.sources for p, end in source.limit_ends.items()}
    starts = []
    for actor_id, partitions in zip(actor_ids, owned, strict=True):
        restored = SourceSnapshot(
            actor_id=actor_id,
            positions={p: positions[p] for p in partitions if p in positions},
            max_event_time_ms={p: event_times[p] for p in partitions if p in event_times},
            limit_ends={p: limit_ends[p] for p in partitions if p in limit_ends},
        )
        limits: dict[int, int | None] = {}
        for p in partitions:
            if p in limit_ends:
                limits[p] = max(0, limit_ends[p] - positions.get(p, 0))
            elif p in positions:
                limits[p] = None  # an unbounded partition stays unbounded
            else:
                limits[p] = fresh_limits.get(p)  # a partition the checkpoint did not know yet
        starts.append(SourceStart(restored, limits))
    return starts
