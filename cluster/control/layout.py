"""Where a run's work is: plain state the Supervisor keeps across restores, rescales and discovered partitions.

Source actors are known by their sender index and own pipeline partitions; aggregate actors by their index in a
keyed stage and own key groups (every keyed stage deals them alike). Each change is sticky: a partition or a key
group stays with its owner's index unless the new counts make it move (:func:`cluster.control.assignment.rebalance`),
so a rescale moves only what it must and a restore keeps the layout it restores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cluster.control.assignment import assign_partitions, moved_items, rebalance
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.stage_graph import StageGraph
from pipelines.stages.wiring import StageWiring
from pipelines.state.keygroups import assign_key_groups, owner_of_group

__all__ = ["Layout", "Moves"]


@dataclass(frozen=True)
class Moves:
    """What a rescale moved: partitions to other sources, key groups to other aggregates."""

    partitions: int
    key_groups: int


@dataclass
class Layout:
    """The partitions, who reads them, who owns which key groups, and the actor counts wanted (see the module
    docstring). ``keyed``: the pipeline has keyed stages (else there are no key groups)."""

    max_key_groups: int
    keyed: bool
    source_count: int
    aggregate_count: int
    partitions: list[int] = field(default_factory=list)
    owned: list[list[int]] = field(default_factory=list)  # partitions per source actor (index = sender index)
    groups: list[list[int]] = field(default_factory=list)  # key groups per aggregate index

    @classmethod
    def of(cls, config: PipelineConfig) -> Layout:
        """The layout of ``config`` before it is placed: its first keyed stage's actor count is the one here."""
        runtime = config.runtime
        keyed = config.keyed_stage is not None
        first = config.stage_actors[0] if keyed else runtime.aggregate_actors
        return cls(runtime.max_key_groups, keyed, runtime.source_actors, first)

    def groups_of(self, actors: int) -> list[list[int]]:
        """The key groups of a keyed stage of ``actors`` actors: the first stage's dealing when it has as many
        (rescaled with it), else a dealing of its own (a stage sized apart is never rescaled)."""
        return self.groups if actors == self.aggregate_count else assign_key_groups(self.max_key_groups, actors)

    def place(self, partitions: list[int]) -> None:
        """A topology (re)starts reading ``partitions``: deal them to the sources and the key groups to the
        aggregates, each kept where it was when it was dealt before (the same partitions)."""
        same = bool(self.owned) and sorted(p for owned in self.owned for p in owned) == sorted(partitions)
        self.owned = (
            rebalance(self.owned, self.source_count) if same else assign_partitions(partitions, self.source_count)
        )
        self.partitions = list(partitions)
        if self.keyed:
            groups = self.groups
            self.groups = rebalance(groups, self.aggregate_count) if groups else self._fresh_groups()

    def rescale(self, source_count: int, aggregate_count: int) -> Moves:
        """Deal the same partitions and key groups to ``source_count`` sources and ``aggregate_count`` aggregates
        (per keyed stage), moving only what must move."""
        before_owned, before_groups = [list(p) for p in self.owned], [list(g) for g in self.groups]
        self.owned = rebalance(self.owned, source_count)
        if self.keyed:
            self.groups = rebalance(self.groups, aggregate_count)
        self.source_count, self.aggregate_count = source_count, aggregate_count
        moved_groups = moved_items(before_groups, self.groups) if self.keyed else 0
        return Moves(moved_items(before_owned, self.owned), moved_groups)

    def add_partitions(self, partitions: list[int], running: list[int]) -> list[tuple[int, int]]:
        """Partitions found since the start, each to the running source (sender index) owning the fewest; return
        the new ones with their owner, in order (none when no source runs)."""
        known = set(self.partitions)
        added: list[tuple[int, int]] = []
        for partition in partitions:
            if partition in known or not running:
                continue
            owner = min(running, key=lambda index: len(self.owned[index]))
            self.owned[owner].append(partition)
            self.partitions.append(partition)
            known.add(partition)
            added.append((partition, owner))
        return added

    def wiring(self, graph: StageGraph, sizes: Sequence[int]) -> StageWiring:
        """The keyed stages of ``sizes`` actors each, connected by ``graph``, over this layout's sources."""
        groups = tuple(self.groups_of(size) for size in sizes)
        return StageWiring(graph, groups, len(self.owned), self.max_key_groups)

    @property
    def owner_of_group(self) -> list[int] | None:
        """The aggregate index that owns each key group (None without keyed stages)."""
        return owner_of_group(self.groups, self.max_key_groups) if self.keyed else None

    def _fresh_groups(self) -> list[list[int]]:
        return assign_key_groups(self.max_key_groups, self.aggregate_count)
