"""Which actor owns which partitions, and how owners change on a rescale: pure functions, tested without Ray. Key
groups are assigned by :func:`pipelines.state.keygroups.assign_key_groups`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["assign_partitions", "moved_items", "rebalance"]


def assign_partitions(partitions: int | Sequence[int], actors: int) -> list[list[int]]:
    """Spread partitions (``0..n-1``, or the pipeline partitions given) over actors round-robin; no actor gets
    more than one partition more than another.

    Actors beyond the partition count would own nothing, so callers cap ``actors`` at ``partitions``.
    """
    if actors < 1:
        raise ValueError("at least one actor is needed")
    ids = _ids(partitions)
    owned: list[list[int]] = [[] for _ in range(min(actors, len(ids)))]
    for position, partition in enumerate(ids):
        owned[position % len(owned)].append(partition)
    return owned


def _ids(partitions: int | Sequence[int]) -> list[int]:
    return list(range(partitions)) if isinstance(partitions, int) else list(partitions)


def rebalance(previous: list[list[int]], actors: int) -> list[list[int]]:
    """Sticky reassignment to ``actors`` owners: every item stays with its owner unless that owner is gone or
    holds more than its balanced share; only the excess moves, to the owners below their share.

    Owners ``0..actors-1`` keep their index (owner ``i`` of ``previous`` is owner ``i`` of the result); sizes
    differ by at most one, as with :func:`assign_partitions` and
    :func:`~pipelines.state.keygroups.assign_key_groups`.
    """
    items = sorted(item for owned in previous for item in owned)
    if actors < 1:
        raise ValueError("at least one actor is needed")
    actors = min(actors, len(items)) or 1
    base, extra = divmod(len(items), actors)
    targets = [base + (1 if index < extra else 0) for index in range(actors)]
    kept = [list(previous[index][: targets[index]]) if index < len(previous) else [] for index in range(actors)]
    placed = {item for owned in kept for item in owned}
    loose = [item for item in items if item not in placed]
    for index in range(actors):
        while len(kept[index]) < targets[index]:
            kept[index].append(loose.pop(0))
    return [sorted(owned) for owned in kept]


def moved_items(previous: list[list[int]], current: list[list[int]]) -> int:
    """How many items changed owner (items of an owner that no longer exists count as moved)."""
    before = {item: owner for owner, owned in enumerate(previous) for item in owned}
    return sum(1 for owner, owned in enumerate(current) for item in owned if before.get(item) != owner)
