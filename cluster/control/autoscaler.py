"""The Supervisor's autoscaling loop state: lag observations in, desired actor counts out, and a timeline.

The pieces are pure (:func:`cluster.control.lag.observe`, :func:`cluster.control.autoscale_policy.decide`); this
object only carries their state from tick to tick and records what happened, for the live view and the demo's
plot: the newest :data:`TIMELINE_POINTS` ticks (a day at the default 5 s interval), so that a run of weeks does
not grow its Supervisor by a point a tick.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from actors.reports import AggregateProgress, SourceProgress
from cluster.control.autoscale_policy import Desired, PolicyState, decide
from cluster.control.lag import LagState, Observations, observe, samples_from_progress
from cluster.control.layout import Moves
from pipelines.config.autoscale import AutoscaleConfig
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock

__all__ = ["TIMELINE_POINTS", "AutoscalePoint", "Autoscaler", "Rescale", "RescaleUnderWay"]

TIMELINE_POINTS = 17_280


@dataclass(frozen=True)
class AutoscalePoint:
    """One tick: what was observed and decided, ``at_s`` seconds after the run started."""

    at_s: float
    input_rate_per_s: float | None
    lag_records: int
    lag_s: float | None
    source_actors: int
    aggregate_actors: int
    desired_sources: int
    desired_aggregates: int
    nodes: int
    reason: str


@dataclass(frozen=True)
class Rescale:
    """One rescale at a checkpoint boundary: counts before and after, what moved, how long it took."""

    at_s: float
    sources: tuple[int, int]
    aggregates: tuple[int, int]
    moved_partitions: int
    moved_key_groups: int  # moved_*: as dealt at the new counts (through a recovery every actor restarted)
    duration_s: float  # from the decision to the topology running at the new counts (a recovery's time included)
    through_recovery: bool = False  # an actor failed during it: the recovery started the topology at the new counts


@dataclass
class RescaleUnderWay:
    """A rescale from its decision to its end. An actor that fails in between (at the rescale's barrier, or while
    actors are regrouped or replaced) leaves it here: the recovery that follows starts the topology at
    ``counts`` and records it, so a rescale decided is carried out and recorded once whatever recoverable
    failure interrupts it. A run that fails for good instead, and is run again, resumes at the config's counts."""

    counts: tuple[int, int]  # sources, aggregates per keyed stage: wanted
    before: tuple[int, int]  # as running when it was decided
    started_s: float  # monotonic
    moves: Moves | None = None  # once the layout was dealt at ``counts``

    def done(self, at_s: float, after: tuple[int, int], ended_s: float, through_recovery: bool) -> Rescale:
        """The record of this rescale, ended at ``ended_s`` (monotonic) with ``after`` actors running."""
        assert self.moves is not None, "the layout is dealt at the new counts before a rescale ends"
        return Rescale(
            at_s=at_s,
            sources=(self.before[0], after[0]),
            aggregates=(self.before[1], after[1]),
            moved_partitions=self.moves.partitions,
            moved_key_groups=self.moves.key_groups,
            duration_s=ended_s - self.started_s,
            through_recovery=through_recovery,
        )


class Autoscaler:
    def __init__(
        self,
        config: AutoscaleConfig,
        topic: str,
        key_groups: int,
        run_started_s: float,
        clock: Clock = SYSTEM_CLOCK,
        timeline_points: int = TIMELINE_POINTS,
    ) -> None:
        self.config = config
        self._clock = clock
        self._topic = topic
        self._key_groups = key_groups
        self._run_started_s = run_started_s
        self._lag: LagState | None = None
        self._policy: PolicyState | None = None
        self._last_tick = self._clock.monotonic()
        self.timeline: deque[AutoscalePoint] = deque(maxlen=timeline_points)  # the newest ticks
        self.rescales: list[Rescale] = []

    def due(self) -> bool:
        return self._clock.monotonic() - self._last_tick >= self.config.interval_s

    def tick(
        self, sources: list[SourceProgress], aggregates: list[AggregateProgress], nodes: int
    ) -> tuple[Desired, Observations]:
        """Observe the actors' reports and decide; ``nodes``: alive Ray nodes, for the record."""
        self._last_tick = self._clock.monotonic()
        now_s = self._clock.now_s()
        samples = samples_from_progress(self._topic, sources, aggregates, self._key_groups)
        observations, self._lag = observe(samples, self._lag, now_s)
        desired, self._policy = decide(observations, self._policy, self.config, now_s)
        self.timeline.append(
            AutoscalePoint(
                at_s=now_s - self._run_started_s,
                input_rate_per_s=observations.input_rate_per_s,
                lag_records=observations.lag_records,
                lag_s=observations.max_lag_s,
                source_actors=len(sources),
                aggregate_actors=observations.actor_count("aggregate"),  # per keyed stage
                desired_sources=desired.source_actors,
                desired_aggregates=desired.aggregate_actors,
                nodes=nodes,
                reason=desired.reason,
            )
        )
        return desired, observations

    def record(self, rescale: Rescale) -> None:
        self.rescales.append(rescale)
