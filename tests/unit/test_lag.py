"""The lag model, tick by tick on a fake clock: lag in records and seconds, input rate, actor load."""

from __future__ import annotations

import pickle

import pytest
from rich.console import Console

from actors.reports import AggregateProgress, SourceProgress
from cluster.control.lag import (
    ActorSample,
    LagSamples,
    LagState,
    Observations,
    PartitionSample,
    observe,
    render_actor_table,
    render_lag_table,
    samples_from_progress,
)


def _samples(*partitions: PartitionSample, actors: tuple[ActorSample, ...] = ()) -> LagSamples:
    return LagSamples(partitions=partitions, actors=actors, key_groups=8)


def _text(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_lag_records_is_log_end_minus_processed_offset_and_never_negative() -> None:
    observations, _ = observe(
        _samples(PartitionSample("orders", 0, 1_000, 400), PartitionSample("orders", 1, 50, 60)), None, 10.0
    )
    assert [lag.lag_records for lag in observations.partitions] == [600, 0]
    assert observations.lag_records == 600


def test_the_first_tick_has_no_rates_and_no_estimated_time_lag() -> None:
    observations, state = observe(_samples(PartitionSample("orders", 0, 1_000, 400)), None, 10.0)
    (lag,) = observations.partitions
    assert lag.input_rate_per_s is None
    assert lag.lag_s is None
    assert observations.input_rate_per_s is None
    assert state == LagState(at_s=10.0, end_offsets={("orders", 0): 1_000}, actor_counters={})


def test_input_rate_comes_from_successive_log_end_samples_and_estimates_the_time_lag() -> None:
    _, state = observe(_samples(PartitionSample("orders", 0, 1_000, 1_000)), None, 10.0)
    observations, state = observe(_samples(PartitionSample("orders", 0, 3_000, 2_000)), state, 15.0)
    (lag,) = observations.partitions
    assert lag.input_rate_per_s == pytest.approx(400.0)
    assert lag.lag_records == 1_000
    assert lag.lag_s == pytest.approx(2.5)  # 1,000 records at 400/s
    observations, _ = observe(_samples(PartitionSample("orders", 0, 3_000, 3_000)), state, 20.0)
    assert observations.partitions[0].input_rate_per_s == 0.0
    assert observations.partitions[0].lag_s == 0.0


def test_the_event_time_of_the_oldest_unprocessed_record_wins_over_the_estimate() -> None:
    _, state = observe(_samples(PartitionSample("orders", 0, 0, 0)), None, 100.0)
    sample = PartitionSample("orders", 0, 1_000, 500, oldest_unprocessed_event_time_s=88.0)
    observations, _ = observe(_samples(sample), state, 110.0)
    assert observations.partitions[0].lag_s == pytest.approx(22.0)
    future = PartitionSample("orders", 0, 1_000, 500, oldest_unprocessed_event_time_s=120.0)
    assert observe(_samples(future), state, 110.0)[0].partitions[0].lag_s == 0.0


def test_rates_are_unknown_when_a_counter_goes_back_or_the_clock_does_not_advance() -> None:
    actor = ActorSample("source-0", "source", 5_000, 4.0)
    _, state = observe(_samples(PartitionSample("orders", 0, 1_000, 900), actors=(actor,)), None, 10.0)
    recreated = PartitionSample("orders", 0, 10, 0)
    restarted = ActorSample("source-0", "source", 100, 0.5)
    observations, _ = observe(_samples(recreated, actors=(restarted,)), state, 15.0)
    assert observations.partitions[0].input_rate_per_s is None
    assert observations.actors[0].throughput_per_s is None
    same_time, _ = observe(_samples(PartitionSample("orders", 0, 2_000, 900), actors=(actor,)), state, 10.0)
    assert same_time.partitions[0].input_rate_per_s is None
    assert same_time.actors[0].busy_ratio is None


def test_actor_throughput_busy_ratio_and_capacity_come_from_counter_deltas() -> None:
    first = (ActorSample("source-0", "source", 1_000, 1.0), ActorSample("agg-0", "aggregate", 0, None))
    _, state = observe(_samples(actors=first), None, 0.0)
    second = (ActorSample("source-0", "source", 6_000, 3.5), ActorSample("agg-0", "aggregate", 4_000, None))
    observations, _ = observe(_samples(actors=second), state, 10.0)
    source, aggregate = observations.actors
    assert source.throughput_per_s == pytest.approx(500.0)
    assert source.busy_ratio == pytest.approx(0.25)
    assert source.capacity_per_s == pytest.approx(2_000.0)
    assert aggregate.throughput_per_s == pytest.approx(400.0)
    assert aggregate.busy_ratio is None
    assert aggregate.capacity_per_s is None


def test_busy_time_measured_on_the_actor_clock_is_capped_at_fully_busy() -> None:
    _, state = observe(_samples(actors=(ActorSample("a", "aggregate", 0, 0.0),)), None, 0.0)
    observations, _ = observe(_samples(actors=(ActorSample("a", "aggregate", 100, 10.2),)), state, 10.0)
    assert observations.actors[0].busy_ratio == 1.0


def test_capacity_is_pooled_over_busy_actors_and_busy_ratios_add_up() -> None:
    first = tuple(ActorSample(f"s{i}", "source", 0, 0.0) for i in range(3))
    _, state = observe(_samples(actors=first), None, 0.0)
    second = (
        ActorSample("s0", "source", 8_000, 8.0),  # 1,000 records per busy second
        ActorSample("s1", "source", 2_000, 1.0),  # 2,000 per busy second, but busy only 10 %
        ActorSample("s2", "source", 0, 0.0),  # idle: says nothing about capacity
    )
    observations, _ = observe(_samples(actors=second), state, 10.0)
    assert observations.capacity_per_actor_per_s("source") == pytest.approx(10_000 / 9.0)
    assert observations.total_busy_ratio("source") == pytest.approx(0.9)
    assert observations.capacity_per_actor_per_s("aggregate") is None
    assert observations.total_busy_ratio("aggregate") is None
    assert observations.actor_count("source") == 3


def test_totals_over_partitions() -> None:
    _, state = observe(_samples(PartitionSample("t", 0, 0, 0), PartitionSample("t", 1, 0, 0)), None, 0.0)
    ticks = _samples(PartitionSample("t", 0, 1_000, 500), PartitionSample("t", 1, 3_000, 0))
    observations, _ = observe(ticks, state, 10.0)
    assert observations.input_rate_per_s == pytest.approx(400.0)
    assert observations.lag_records == 3_500
    assert observations.max_lag_s == pytest.approx(10.0)  # 3,000 records at 300/s
    assert observations.partition_count == 2
    assert observations.key_groups == 8


def test_observe_is_pure_and_its_state_pickles() -> None:
    samples = _samples(PartitionSample("t", 0, 100, 50), actors=(ActorSample("s0", "source", 10, 0.1),))
    _, state = observe(samples, None, 0.0)
    later = _samples(PartitionSample("t", 0, 300, 250), actors=(ActorSample("s0", "source", 210, 0.6),))
    before = pickle.dumps(state)
    assert observe(later, state, 5.0) == observe(later, state, 5.0)
    assert pickle.dumps(state) == before
    assert pickle.loads(pickle.dumps(observe(later, state, 5.0))) == observe(later, state, 5.0)


def test_samples_from_progress_reports() -> None:
    source = SourceProgress(
        actor_id="source-0",
        events_in=700,
        events_out=690,
        dead_lettered=10,
        positions={1: 300, 0: 400},
        end_offsets={0: 1_000, 1: 300},
        done=False,
        busy_s=2.5,
    )
    aggregate = AggregateProgress(
        "agg-0", events_in=690, windows_emitted=3, late_events=0, watermark_ms=0, done=False, busy_s=1.0
    )
    samples = samples_from_progress("orders", [source], [aggregate], key_groups=16)
    assert samples.partitions == (PartitionSample("orders", 0, 1_000, 400), PartitionSample("orders", 1, 300, 300))
    assert samples.actors == (
        ActorSample("source-0", "source", 700, 2.5),
        ActorSample("agg-0", "aggregate", 690, 1.0),
    ), "busy seconds come with each report, for busy ratios"
    observations, _ = observe(samples, None, 1.0)
    assert observations.lag_records == source.lag_records == 600
    assert observations.key_groups == 16


def test_render_lag_table_shows_one_row_per_partition_and_totals() -> None:
    _, state = observe(_samples(PartitionSample("orders", 1, 0, 0), PartitionSample("orders", 0, 0, 0)), None, 0.0)
    ticks = _samples(
        PartitionSample("orders", 1, 2_000, 2_000),
        PartitionSample("orders", 0, 12_000, 2_000),
        actors=(ActorSample("source-0", "source", 0, 0.0),),
    )
    observations, _ = observe(ticks, state, 10.0)
    table = render_lag_table(observations)
    assert table.row_count == 2
    text = _text(table)
    assert "lag (records)" in text
    assert "10,000" in text
    assert "total lag 10,000 records" in text
    assert "1 source and 0 aggregate actors" in text


def test_render_lag_table_shows_unknown_values_as_dashes() -> None:
    observations = Observations(at_s=0.0, partitions=(), actors=())
    assert "total lag 0 records, worst - s; input - records/s" in _text(render_lag_table(observations))


def test_render_actor_table() -> None:
    _, state = observe(_samples(actors=(ActorSample("source-0", "source", 0, 0.0),)), None, 0.0)
    observations, _ = observe(_samples(actors=(ActorSample("source-0", "source", 5_000, 2.5),)), state, 10.0)
    table = render_actor_table(observations)
    assert table.row_count == 1
    text = _text(table)
    assert "25%" in text
    assert "2,000" in text
