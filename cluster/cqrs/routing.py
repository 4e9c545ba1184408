"""Which actor owns a view's key: the key-group -> owner table of each queryable keyed stage, as the Supervisor
pushes it to the query router at every assignment change (a start, a recovery, a rescale). A router holds the
table of each pipeline publishing to it: the one serving a view, and a rebuild of it standing by."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.state.keygroups import key_group_of

__all__ = ["StageOwners", "ViewTable"]


@dataclass(frozen=True)
class StageOwners:
    """The actors of one keyed stage and the index of the actor owning each key group."""

    actors: tuple[Any, ...]  # Ray actor handles (or fakes), by index in the stage
    owner_of_group: tuple[int, ...]

    def owner_index(self, key: str) -> int:
        """The index of the actor owning ``key``: the key group is the shuffle's (crc32 of the key's text)."""
        return self.owner_of_group[key_group_of(key, len(self.owner_of_group))]

    def split(self, keys: Sequence[str]) -> dict[int, list[int]]:
        """The positions in ``keys`` of each owner's keys, by owner index (owners without keys left out)."""
        positions: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            positions.setdefault(self.owner_index(key), []).append(position)
        return positions


@dataclass(frozen=True)
class ViewTable:
    """The owners of every view a pipeline serves, from one assignment (``generation`` counts the assignments
    that pipeline pushed)."""

    generation: int
    views: dict[str, StageOwners]
    pipeline: str
