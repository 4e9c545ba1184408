"""Which actor owns which partitions and key groups: pure functions, tested without Ray."""

from __future__ import annotations

__all__ = ["assign_key_groups", "assign_partitions", "owner_of_group", "partition_limits"]


def assign_partitions(partitions: int, actors: int) -> list[list[int]]:
    """Spread partitions over actors round-robin; no actor gets more than one partition more than another.

    Actors beyond the partition count would own nothing, so callers cap ``actors`` at ``partitions``.
    """
    if actors < 1:
        raise ValueError("at least one actor is needed")
    owned: list[list[int]] = [[] for _ in range(min(actors, partitions))]
    for partition in range(partitions):
        owned[partition % len(owned)].append(partition)
    return owned


def assign_key_groups(max_key_groups: int, actors: int) -> list[list[int]]:
    """Contiguous ranges of key groups per actor, sizes differing by at most one."""
    if not 1 <= actors <= max_key_groups:
        raise ValueError(f"actors must be between 1 and max_key_groups ({max_key_groups}), got {actors}")
    base, extra = divmod(max_key_groups, actors)
    ranges: list[list[int]] = []
    start = 0
    for index in range(actors):
        size = base + (1 if index < extra else 0)
        ranges.append(list(range(start, start + size)))
        start += size
    return ranges


def owner_of_group(assignment: list[list[int]], max_key_groups: int) -> list[int]:
    """Invert an assignment: entry ``g`` is the index of the actor owning key group ``g``."""
    owners = [-1] * max_key_groups
    for actor, groups in enumerate(assignment):
        for group in groups:
            owners[group] = actor
    if -1 in owners:
        raise ValueError(f"key group {owners.index(-1)} has no owner")
    return owners


def partition_limits(partitions: int, max_events: int | None) -> dict[int, int | None]:
    """Split a total event budget over partitions (the first ones take the remainder); None: unbounded."""
    if max_events is None:
        return dict.fromkeys(range(partitions))
    base, extra = divmod(max_events, partitions)
    return {partition: base + (1 if partition < extra else 0) for partition in range(partitions)}
