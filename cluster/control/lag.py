"""The lag model: how far behind the pipeline is, how fast input arrives, how hard each actor works.

:func:`observe` is a pure function over successive samples, in the style of Ray Serve's autoscaling policy: the
caller (the Supervisor's reconcile loop) passes in the samples of this tick, the :class:`LagState` returned by the
previous call and the time, and gets back :class:`Observations` and the state to pass next time. Nothing is kept on
a module or an object, and time comes only from ``now_s``, so tests drive it tick by tick on a fake clock.

What is measured, per partition and per actor:

* ``lag_records`` = log end offset - processed offset (the next offset the pipeline would process), never negative.
* ``lag_s`` = ``now_s`` - event time of the oldest unprocessed record, when the caller knows that event time;
  otherwise estimated as ``lag_records / input_rate_per_s`` (how long the log took to grow by the backlog at the
  current input rate); 0 with no lag; None when there is lag and no rate to estimate from.
* ``input_rate_per_s`` = growth of the log end offset between two samples / seconds between them.
* per actor: ``throughput_per_s`` (records processed per second), ``busy_ratio`` (busy seconds per second, 0..1)
  and ``capacity_per_s`` (records per busy second: what the actor would do if it were never idle).

Rates need two samples, so the first call, a counter that went backwards (an actor restarted, a topic was
recreated) or a clock that did not advance yields None for that rate rather than a wrong number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rich.table import Table

if TYPE_CHECKING:  # only types: importing the actors package would pull in the whole runtime
    from actors.reports import AggregateProgress, SourceProgress

__all__ = [
    "ActorKind",
    "ActorLoad",
    "ActorSample",
    "LagSamples",
    "LagState",
    "Observations",
    "PartitionLag",
    "PartitionSample",
    "observe",
    "render_actor_table",
    "render_lag_table",
    "samples_from_progress",
]

ActorKind = Literal["source", "aggregate"]
_PartitionKey = tuple[str, int]


@dataclass(frozen=True)
class PartitionSample:
    """One partition at one instant: its log end offset and the next offset the pipeline would process.

    ``oldest_unprocessed_event_time_s`` is the event time (epoch seconds) of the record at ``processed_offset``
    when the caller knows it; None makes :func:`observe` estimate the time lag from the input rate.
    """

    topic: str
    partition: int
    end_offset: int
    processed_offset: int
    oldest_unprocessed_event_time_s: float | None = None


@dataclass(frozen=True)
class ActorSample:
    """Cumulative counters of one actor: records processed and seconds spent busy (None: not reported);
    ``stage``: an aggregate's keyed stage (each stage runs as many aggregates)."""

    actor_id: str
    kind: ActorKind
    records_total: int
    busy_s_total: float | None = None
    stage: int = 0


@dataclass(frozen=True)
class LagSamples:
    """Everything sampled in one tick. ``key_groups`` is the pipeline's key-group count (0: no aggregate stage)."""

    partitions: tuple[PartitionSample, ...]
    actors: tuple[ActorSample, ...]
    key_groups: int = 0


@dataclass(frozen=True)
class PartitionLag:
    """The lag of one partition; ``input_rate_per_s`` and ``lag_s`` are None when they cannot be known yet."""

    topic: str
    partition: int
    end_offset: int
    processed_offset: int
    lag_records: int
    lag_s: float | None
    input_rate_per_s: float | None


@dataclass(frozen=True)
class ActorLoad:
    """How hard one actor worked since the previous sample; None where a rate needs a second sample."""

    actor_id: str
    kind: ActorKind
    throughput_per_s: float | None
    busy_ratio: float | None
    capacity_per_s: float | None
    stage: int = 0


@dataclass(frozen=True)
class Observations:
    """The lag monitor's output for one tick: per-partition lag, per-actor load and the topology's limits."""

    at_s: float
    partitions: tuple[PartitionLag, ...]
    actors: tuple[ActorLoad, ...]
    key_groups: int = 0

    @property
    def lag_records(self) -> int:
        """Total records behind over all partitions."""
        return sum(partition.lag_records for partition in self.partitions)

    @property
    def max_lag_s(self) -> float | None:
        """The worst known time lag; None when no partition's time lag is known."""
        known = [partition.lag_s for partition in self.partitions if partition.lag_s is not None]
        return max(known, default=None)

    @property
    def input_rate_per_s(self) -> float | None:
        """Records/s arriving over all partitions whose rate is known; None when none is."""
        known = [partition.input_rate_per_s for partition in self.partitions if partition.input_rate_per_s is not None]
        return sum(known) if known else None

    @property
    def partition_count(self) -> int:
        return len(self.partitions)

    def actor_count(self, kind: ActorKind) -> int:
        """How many actors of ``kind`` reported this tick (aggregates: of one keyed stage, as each stage runs as
        many)."""
        return sum(1 for actor in self.actors if actor.kind == kind and actor.stage == 0)

    def capacity_per_actor_per_s(self, kind: ActorKind) -> float | None:
        """Records one actor of ``kind`` processes per busy second, pooled over the actors that measured it.

        Pooled (total records / total busy seconds) rather than averaged, so an almost idle actor's noisy ratio
        weighs little. None when no actor of ``kind`` was busy with a known busy time.
        """
        measured = [
            actor
            for actor in self.actors
            if actor.kind == kind and actor.throughput_per_s is not None and actor.busy_ratio
        ]
        busy = sum(actor.busy_ratio or 0.0 for actor in measured)
        return sum(actor.throughput_per_s or 0.0 for actor in measured) / busy if busy > 0 else None

    def total_busy_ratio(self, kind: ActorKind) -> float | None:
        """Sum of the busy ratios of the actors of ``kind`` (2.4: 2.4 actors' worth of work); None if unknown.
        With several keyed stages, the aggregates' is the busiest stage's: every stage runs as many actors, so
        that stage decides how many."""
        totals: dict[int, float] = {}
        for actor in self.actors:
            if actor.kind == kind and actor.busy_ratio is not None:
                totals[actor.stage] = totals.get(actor.stage, 0.0) + actor.busy_ratio
        return max(totals.values()) if totals else None


@dataclass(frozen=True)
class LagState:
    """What :func:`observe` needs from the previous tick: when it was, and the counters it saw then."""

    at_s: float
    end_offsets: Mapping[_PartitionKey, int] = field(default_factory=dict)
    actor_counters: Mapping[str, tuple[int, float | None]] = field(default_factory=dict)


def observe(samples: LagSamples, previous_state: LagState | None, now_s: float) -> tuple[Observations, LagState]:
    """Turn this tick's samples into observations, using the previous state for rates.

    Pure: the same arguments always give the same result, and neither argument is changed. Pass the returned
    state to the next call; pass None on the first call (rates are then None).
    """
    elapsed_s = now_s - previous_state.at_s if previous_state is not None else 0.0
    previous_ends = previous_state.end_offsets if previous_state is not None else {}
    previous_counters = previous_state.actor_counters if previous_state is not None else {}
    partitions = tuple(
        _partition_lag(sample, previous_ends.get((sample.topic, sample.partition)), elapsed_s, now_s)
        for sample in samples.partitions
    )
    actors = tuple(_actor_load(sample, previous_counters.get(sample.actor_id), elapsed_s) for sample in samples.actors)
    state = LagState(
        at_s=now_s,
        end_offsets={(sample.topic, sample.partition): sample.end_offset for sample in samples.partitions},
        actor_counters={sample.actor_id: (sample.records_total, sample.busy_s_total) for sample in samples.actors},
    )
    return Observations(at_s=now_s, partitions=partitions, actors=actors, key_groups=samples.key_groups), state


def _rate(current: float, previous: float | None, elapsed_s: float) -> float | None:
    """Growth per second; None without a previous value, a positive interval or a counter that only grows."""
    if previous is None or elapsed_s <= 0 or current < previous:
        return None
    return (current - previous) / elapsed_s


def _partition_lag(sample: PartitionSample, previous_end: int | None, elapsed_s: float, now_s: float) -> PartitionLag:
    lag_records = max(0, sample.end_offset - sample.processed_offset)
    input_rate = _rate(sample.end_offset, previous_end, elapsed_s)
    return PartitionLag(
        topic=sample.topic,
        partition=sample.partition,
        end_offset=sample.end_offset,
        processed_offset=sample.processed_offset,
        lag_records=lag_records,
        lag_s=_lag_s(lag_records, sample.oldest_unprocessed_event_time_s, input_rate, now_s),
        input_rate_per_s=input_rate,
    )


def _lag_s(lag_records: int, oldest_event_time_s: float | None, input_rate: float | None, now_s: float) -> float | None:
    if lag_records == 0:
        return 0.0
    if oldest_event_time_s is not None:
        return max(0.0, now_s - oldest_event_time_s)
    if input_rate:
        return lag_records / input_rate
    return None


def _actor_load(sample: ActorSample, previous: tuple[int, float | None] | None, elapsed_s: float) -> ActorLoad:
    previous_records, previous_busy = previous if previous is not None else (None, None)
    throughput = _rate(sample.records_total, previous_records, elapsed_s)
    busy_ratio = None
    if sample.busy_s_total is not None and throughput is not None:
        busy_per_s = _rate(sample.busy_s_total, previous_busy, elapsed_s)
        # Busy time is measured on the actor's clock and sampled on ours, so it can exceed the interval a little.
        busy_ratio = None if busy_per_s is None else min(1.0, busy_per_s)
    capacity = throughput / busy_ratio if throughput is not None and busy_ratio else None
    return ActorLoad(
        actor_id=sample.actor_id,
        kind=sample.kind,
        throughput_per_s=throughput,
        busy_ratio=busy_ratio,
        capacity_per_s=capacity,
        stage=sample.stage,
    )


def samples_from_progress(
    topic: str,
    sources: Sequence[SourceProgress],
    aggregates: Sequence[AggregateProgress],
    key_groups: int,
) -> LagSamples:
    """Samples from the progress reports actors already return (positions, end offsets, event counters).

    Those reports carry no event times, so time lag is estimated from the input rate; busy ratios come from the
    busy seconds each actor reports.
    """
    partitions = tuple(
        PartitionSample(topic, partition, report.end_offsets.get(partition, position), position)
        for report in sources
        for partition, position in sorted(report.positions.items())
    )
    actors = tuple(ActorSample(report.actor_id, "source", report.events_in, report.busy_s) for report in sources)
    actors += tuple(
        ActorSample(report.actor_id, "aggregate", report.events_in, report.busy_s, report.stage)
        for report in aggregates
    )
    return LagSamples(partitions=partitions, actors=actors, key_groups=key_groups)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_lag_table(observations: Observations) -> Table:
    """The table ``eventray lag`` prints: one row per partition, totals in the caption."""
    table = Table(title=f"lag at {observations.at_s:,.1f} s")
    for column in ("topic", "partition", "end offset", "processed", "lag (records)", "lag (s)", "input (records/s)"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for row in sorted(observations.partitions, key=lambda lag: (lag.topic, lag.partition)):
        table.add_row(
            row.topic,
            str(row.partition),
            f"{row.end_offset:,}",
            f"{row.processed_offset:,}",
            f"{row.lag_records:,}",
            _number(row.lag_s, 1),
            _number(row.input_rate_per_s),
        )
    table.caption = (
        f"total lag {observations.lag_records:,} records, worst {_number(observations.max_lag_s, 1)} s; "
        f"input {_number(observations.input_rate_per_s)} records/s; "
        f"{observations.actor_count('source')} source and {observations.actor_count('aggregate')} aggregate actors"
    )
    return table


def render_actor_table(observations: Observations) -> Table:
    """One row per actor: throughput, busy ratio and capacity (records per busy second)."""
    table = Table(title="actors")
    for column in ("actor", "kind", "throughput (records/s)", "busy", "capacity (records/s)"):
        table.add_column(column, justify="left" if column in ("actor", "kind") else "right")
    for actor in sorted(observations.actors, key=lambda load: (load.kind, load.actor_id)):
        busy = "-" if actor.busy_ratio is None else f"{actor.busy_ratio:.0%}"
        table.add_row(actor.actor_id, actor.kind, _number(actor.throughput_per_s), busy, _number(actor.capacity_per_s))
    return table
