"""What the Supervisor does to the keyed stages' actors at a start or a rescale, computed from plain state.

:func:`keyed_stage_plan` takes the wiring wanted (:class:`~pipelines.stages.wiring.StageWiring`: the stages'
graph, each stage's key groups per actor, the source count) and how many actors each stage runs now (none at a
start), and returns, stage by stage in the order to carry out, which actors stay (regrouped in place), which go
and which are made, each with its slot, key groups, sender count and where its results go. The order is the
last stage first: an actor is made or regrouped only once the actors it sends to exist. The Supervisor carries a
plan out against Ray (or the in-process actors of the tests); unit tests check plans without either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.stages.wiring import NextLink, StageWiring

__all__ = ["ActorPlacement", "StagePlan", "aggregate_slot", "keyed_stage_plan"]


def aggregate_slot(stage: int, index: int) -> str:
    """The stable name of actor ``index`` of keyed stage ``stage`` (its transactions' and checkpoint files'):
    ``aggregate-<index>`` in the first stage, as a single-stage pipeline always named them."""
    return f"aggregate-{index}" if stage == 0 else f"stage{stage}-aggregate-{index}"


@dataclass(frozen=True)
class ActorPlacement:
    """One actor of a keyed stage after the change: its slot, key groups, senders, and where its results go
    (None: the last stage, to the sinks)."""

    stage: int
    index: int
    slot: str
    key_groups: list[int]
    senders: int
    next_link: NextLink | None


@dataclass(frozen=True)
class StagePlan:
    """One keyed stage's change: the first ``kept`` of its current actors stay (regrouped to their placement),
    the actors at ``removed`` indices go, and ``placements[kept:]`` are made."""

    stage: int
    kept: int
    removed: tuple[int, ...]
    placements: tuple[ActorPlacement, ...]

    @property
    def regrouped(self) -> tuple[ActorPlacement, ...]:
        return self.placements[: self.kept]

    @property
    def added(self) -> tuple[ActorPlacement, ...]:
        return self.placements[self.kept :]


def keyed_stage_plan(wiring: StageWiring, current: Sequence[int]) -> list[StagePlan]:
    """The change from ``current`` actors per stage to ``wiring``'s, the last stage first (see the module
    docstring)."""
    if len(current) != len(wiring.groups):
        raise ValueError(f"{len(current)} current stage sizes for {len(wiring.groups)} keyed stages")
    plans = []
    for stage in reversed(range(len(wiring.groups))):
        groups = wiring.groups[stage]
        senders = wiring.senders(stage)
        placements = tuple(
            ActorPlacement(stage, index, aggregate_slot(stage, index), owned, senders, wiring.next_link(stage, index))
            for index, owned in enumerate(groups)
        )
        kept = min(current[stage], len(groups))
        plans.append(StagePlan(stage, kept, tuple(range(kept, current[stage])), placements))
    return plans
