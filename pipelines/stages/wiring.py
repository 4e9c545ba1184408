"""How the actors (or in-process runners) of a pipeline's keyed stages connect, for one dealing of key groups.

:class:`~pipelines.config.stage_graph.StageGraph` says which stage takes what; :class:`StageWiring` adds how many
actors each stage runs and which key groups each owns, and answers what an actor needs at start or after a
rescale: how many senders feed its stage, where its results go (:class:`NextLink`), and where the sources send
each input's rows (:meth:`StageWiring.source_routes`). Pure: the Supervisor and :func:`pipelines.testing.run_stages`
use it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config.stage_graph import StageGraph
from pipelines.state.keygroups import owner_of_group

__all__ = ["NextLink", "StageWiring"]


@dataclass(frozen=True)
class NextLink:
    """Where the results of one actor of a keyed stage go: the next stage, the owner of each of its key groups
    (by index in that stage), and the actor's sender number there."""

    stage: int
    owner_of_group: list[int]
    sender: int


@dataclass(frozen=True)
class StageWiring:
    """How the keyed stages of a layout connect (:class:`~pipelines.config.stage_graph.StageGraph`): each stage's
    key groups per actor, how many senders feed it, where each actor's results go, and where the sources send."""

    graph: StageGraph
    groups: tuple[list[list[int]], ...]  # per stage: the key groups of each of its actors
    sources: int
    max_key_groups: int

    @property
    def sizes(self) -> list[int]:
        return [len(groups) for groups in self.groups]

    def senders(self, stage: int) -> int:
        return self.graph.senders(stage, self.sources, self.sizes)

    def next_link(self, stage: int, index: int) -> NextLink | None:
        """Where actor ``index`` of ``stage`` sends its results (None: the last stage, to the sinks)."""
        following = self.graph.next_stage[stage]
        if following is None:
            return None
        first = self.graph.first_sender(following, stage, self.sources, self.sizes)
        return NextLink(following, owner_of_group(self.groups[following], self.max_key_groups), first + index)

    def source_routes(self) -> dict[int, list[int]]:
        """For each stage the inputs feed, the owner of each key group among the sources' downstream: the actors
        of those stages, stage by stage (:data:`~pipelines.stages.source_stage.Routes`)."""
        routes: dict[int, list[int]] = {}
        offset = 0
        for stage in self.graph.input_stages:
            routes[stage] = [offset + owner for owner in owner_of_group(self.groups[stage], self.max_key_groups)]
            offset += len(self.groups[stage])
        return routes
