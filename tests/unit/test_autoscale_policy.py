"""The autoscaling policy, tick by tick on a fake clock, closed loop against a fake pipeline; no sleeps, no Ray.

Also checks configs/fake_cluster.yaml, the Ray autoscaler config for the fake multi-node provider, without
starting Ray.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import cluster.control.autoscale_policy as policy_module
from cluster.control.autoscale_policy import AutoscaleConfig, Desired, PolicyState, decide
from cluster.control.lag import (
    ActorKind,
    ActorLoad,
    ActorSample,
    LagSamples,
    LagState,
    Observations,
    PartitionLag,
    PartitionSample,
    observe,
)

TICK_S = 5.0


@dataclass
class FakePipeline:
    """Records arrive evenly over partitions; each source actor reads at most ``source_capacity_per_s``.

    Actors report cumulative records and busy seconds, as real ones would; the autoscaler's decision is applied
    at once (the rescale itself is not what these tests are about).
    """

    partitions: int = 16
    key_groups: int = 32
    sources: int = 2
    aggregates: int = 1
    source_capacity_per_s: float = 2_000.0
    aggregate_capacity_per_s: float = 4_000.0
    end: list[int] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)
    counters: dict[str, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.end = [0] * self.partitions
        self.processed = [0] * self.partitions

    def step(self, dt_s: float, input_rate_per_s: float) -> None:
        arrivals = round(max(0.0, input_rate_per_s) * dt_s / self.partitions)
        budget = int(self.sources * self.source_capacity_per_s * dt_s) // self.partitions
        done = 0
        for partition in range(self.partitions):
            self.end[partition] += arrivals
            took = min(budget, self.end[partition] - self.processed[partition])
            self.processed[partition] += took
            done += took
        self._count("source", self.sources, done, self.source_capacity_per_s, dt_s)
        self._count("aggregate", self.aggregates, done, self.aggregate_capacity_per_s, dt_s)

    def _count(self, kind: ActorKind, actors: int, records: int, capacity_per_s: float, dt_s: float) -> None:
        for index in range(actors):
            share = records // actors
            old_records, old_busy = self.counters.get(f"{kind}-{index}", (0, 0.0))
            busy = min(dt_s, share / capacity_per_s)
            self.counters[f"{kind}-{index}"] = (old_records + share, old_busy + busy)

    def samples(self) -> LagSamples:
        partitions = tuple(PartitionSample("orders", p, self.end[p], self.processed[p]) for p in range(self.partitions))
        kinds: tuple[tuple[ActorKind, int], ...] = (("source", self.sources), ("aggregate", self.aggregates))
        actors = tuple(
            ActorSample(f"{kind}-{index}", kind, *self.counters.get(f"{kind}-{index}", (0, 0.0)))
            for kind, count in kinds
            for index in range(count)
        )
        return LagSamples(partitions=partitions, actors=actors, key_groups=self.key_groups)


@dataclass(frozen=True)
class Tick:
    at_s: float
    desired: Desired
    lag_records: int


def run(
    pipeline: FakePipeline, config: AutoscaleConfig, rate: Callable[[float], float], duration_s: float
) -> list[Tick]:
    """Drive pipeline -> observe -> decide -> apply every TICK_S seconds of fake time."""
    lag_state: LagState | None = None
    policy_state: PolicyState | None = None
    ticks: list[Tick] = []
    for index in range(1, int(duration_s / TICK_S) + 1):
        now_s = index * TICK_S
        pipeline.step(TICK_S, rate(now_s))
        observations, lag_state = observe(pipeline.samples(), lag_state, now_s)
        desired, policy_state = decide(observations, policy_state, config, now_s)
        pipeline.sources, pipeline.aggregates = desired.source_actors, desired.aggregate_actors
        ticks.append(Tick(now_s, desired, observations.lag_records))
    return ticks


def changes(ticks: list[Tick], kind: str) -> list[tuple[float, int, int]]:
    """``(at_s, before, after)`` for every tick where the desired count of ``kind`` changed."""
    counts = [getattr(tick.desired, f"{kind}_actors") for tick in ticks]
    return [(ticks[i].at_s, counts[i - 1], counts[i]) for i in range(1, len(ticks)) if counts[i] != counts[i - 1]]


def burst(start_s: float, end_s: float, base: float, peak: float) -> Callable[[float], float]:
    return lambda now_s: peak if start_s < now_s <= end_s else base


# --- closed loop ------------------------------------------------------------------------------------------------


def test_a_burst_scales_sources_up_within_the_reaction_time_and_in_one_step() -> None:
    config = AutoscaleConfig(scale_up_reaction_s=30)
    ticks = run(FakePipeline(), config, burst(600, 1_200, base=2_000, peak=10_000), duration_s=1_200)
    ups = changes(ticks, "source")
    assert ups, "the burst never scaled sources up"
    at_s, before, after = ups[0]
    # One tick to see the new rate, then the reaction window.
    assert 600 < at_s <= 600 + TICK_S + config.scale_up_reaction_s
    assert before == 2
    assert after >= math.ceil(10_000 / (2_000 * config.target_source_busy_ratio))  # straight to the need
    assert ticks[-1].lag_records < 10_000  # and the backlog drained


def test_scale_up_with_no_reaction_window_happens_on_the_first_tick_that_sees_the_burst() -> None:
    config = AutoscaleConfig(scale_up_reaction_s=0)
    ticks = run(FakePipeline(), config, burst(600, 1_200, base=2_000, peak=10_000), duration_s=700)
    assert changes(ticks, "source")[0][0] == 600 + TICK_S


def test_a_short_spike_within_the_reaction_window_does_not_scale() -> None:
    config = AutoscaleConfig(scale_up_reaction_s=60)
    ticks = run(FakePipeline(), config, burst(600, 620, base=2_000, peak=10_000), duration_s=1_200)
    assert changes(ticks, "source") == []


def test_scale_down_only_after_the_stabilisation_window() -> None:
    config = AutoscaleConfig(scale_up_reaction_s=15, scale_down_stabilization_s=300, cooldown_s=30)
    ticks = run(FakePipeline(), config, burst(600, 900, base=2_000, peak=10_000), duration_s=2_400)
    source_changes = changes(ticks, "source")
    downs = [change for change in source_changes if change[2] < change[1]]
    assert downs, "sources never scaled back down"
    assert all(at_s >= 900 + config.scale_down_stabilization_s for at_s, _, _ in downs)
    assert source_changes[-1][2] == 2  # back where it started
    assert len(downs) == 1  # straight down to the highest recommendation of the window, no staircase of flaps


def test_steady_noisy_load_never_flaps_over_an_hour() -> None:
    noise = random.Random(20_240_601)
    config = AutoscaleConfig()
    pipeline = FakePipeline(sources=4, aggregates=3)
    ticks = run(pipeline, config, lambda _: noise.gauss(6_000, 600), duration_s=3_600)
    assert len(ticks) == 720
    assert changes(ticks, "source") == []
    assert changes(ticks, "aggregate") == []


def test_a_wrongly_sized_start_under_noise_settles_once_and_stays() -> None:
    noise = random.Random(7)
    config = AutoscaleConfig()
    pipeline = FakePipeline(sources=8, aggregates=8)
    ticks = run(pipeline, config, lambda _: noise.gauss(6_000, 600), duration_s=3_600)
    for kind in ("source", "aggregate"):
        kind_changes = changes(ticks, kind)
        assert len(kind_changes) == 1, kind_changes
        (at_s, before, after) = kind_changes[0]
        assert before == 8
        assert after < 8
        assert at_s >= config.scale_down_stabilization_s


def test_cooldown_spaces_rescales_of_each_kind() -> None:
    config = AutoscaleConfig(scale_up_reaction_s=0, cooldown_s=120)

    def rising(now_s: float) -> float:
        return 2_000 if now_s <= 600 else 2_000 + 20 * (now_s - 600)  # keeps outgrowing each rescale

    ticks = run(
        FakePipeline(partitions=64, key_groups=64),
        config.model_copy(update={"max_source_actors": 64}),
        rising,
        duration_s=1_500,
    )
    source_changes = changes(ticks, "source")
    assert len(source_changes) >= 3
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(source_changes)]
    assert min(gaps) >= config.cooldown_s


def test_zero_input_scales_down_to_the_minimum_after_stabilisation_and_no_further() -> None:
    config = AutoscaleConfig(min_source_actors=2, min_aggregate_actors=1)
    ticks = run(FakePipeline(sources=6, aggregates=4), config, lambda _: 0.0, duration_s=1_200)
    first_decision_s = TICK_S
    assert changes(ticks, "source") == [(first_decision_s + config.scale_down_stabilization_s, 6, 2)]
    # The first tick measures no busy ratio yet, so it recommends holding: the window starts one tick later.
    first_busy_ratio_s = 2 * TICK_S
    assert changes(ticks, "aggregate") == [(first_busy_ratio_s + config.scale_down_stabilization_s, 4, 1)]
    assert "steady at 2" in ticks[-1].desired.reason


# --- single decisions on hand-made observations ---------------------------------------------------------------


def observations(
    *,
    partitions: int = 16,
    key_groups: int = 32,
    lag_records: int = 0,
    input_rate_per_s: float = 0.0,
    sources: int = 2,
    source_capacity_per_s: float | None = 2_000.0,
    aggregates: int = 1,
    aggregate_busy_ratio: float | None = 0.5,
    source_busy_ratio: float = 0.5,
) -> Observations:
    """Lag and rate spread evenly over partitions; each source ``source_busy_ratio`` busy at the given capacity."""
    lags = tuple(
        PartitionLag(
            "orders",
            p,
            0,
            0,
            lag_records // partitions + (p < lag_records % partitions),
            None,
            input_rate_per_s / partitions,
        )
        for p in range(partitions)
    )
    source_loads = tuple(
        ActorLoad(
            f"source-{i}",
            "source",
            None if source_capacity_per_s is None else source_capacity_per_s * source_busy_ratio,
            None if source_capacity_per_s is None else source_busy_ratio,
            source_capacity_per_s,
        )
        for i in range(sources)
    )
    aggregate_loads = tuple(
        ActorLoad(f"aggregate-{i}", "aggregate", 1_000.0, aggregate_busy_ratio, None) for i in range(aggregates)
    )
    return Observations(at_s=0.0, partitions=lags, actors=source_loads + aggregate_loads, key_groups=key_groups)


# No windows, no cooldown, no activation threshold: a single decide() shows the raw recommendation.
FAST = AutoscaleConfig(scale_up_reaction_s=0, cooldown_s=0, scale_down_stabilization_s=0, activation_lag_records=0)


def test_sources_are_sized_to_drain_the_backlog_within_the_target_time() -> None:
    # (4,000/s + 240,000 records / 60 s) / (2,000/s * 0.8) = 5 actors
    obs = observations(lag_records=240_000, input_rate_per_s=4_000)
    desired, _ = decide(obs, None, FAST, 0.0)
    assert desired.source_actors == 5
    assert "input 4,000/s, lag 240,000 records, capacity 2,000/s per actor" in desired.reason


def test_without_measured_capacity_the_keda_formula_sizes_sources() -> None:
    obs = observations(lag_records=35_000, source_capacity_per_s=None)
    desired, _ = decide(obs, None, FAST, 0.0)
    assert desired.source_actors == 4  # ceil(35,000 / lag_threshold_records 10,000)
    assert "until capacity is measured" in desired.reason


def test_aggregates_are_sized_by_busy_ratio() -> None:
    obs = observations(aggregates=2, aggregate_busy_ratio=0.95)  # 1.9 actors' worth at 70 % each: 3
    assert decide(obs, None, FAST, 0.0)[0].aggregate_actors == 3
    unmeasured = observations(aggregates=2, aggregate_busy_ratio=None)
    desired, _ = decide(unmeasured, None, FAST, 0.0)
    assert desired.aggregate_actors == 2
    assert "busy ratio not measured" in desired.reason


def test_lag_at_or_below_the_activation_threshold_adds_no_actors() -> None:
    config = FAST.model_copy(
        update={"activation_lag_records": 1_000, "lag_threshold_records": 100, "max_source_actors": 16}
    )
    below = observations(lag_records=1_000, source_capacity_per_s=None)
    desired, _ = decide(below, None, config, 0.0)
    assert desired.source_actors == 1  # as if there were no lag: the minimum
    assert "lag at or below activation 1,000 ignored" in desired.reason
    above = observations(lag_records=1_100, source_capacity_per_s=None)
    assert decide(above, None, config, 0.0)[0].source_actors == 11  # ceil(1,100 / 100)


def test_below_the_activation_threshold_the_input_rate_still_sizes_sources() -> None:
    config = FAST.model_copy(update={"activation_lag_records": 1_000})
    obs = observations(lag_records=900, input_rate_per_s=4_800)  # 4,800 / (2,000 * 0.8) = 3
    assert decide(obs, None, config, 0.0)[0].source_actors == 3
    with_backlog = observations(lag_records=96_000, input_rate_per_s=4_800)  # + 96,000 / 60 s: 4
    assert decide(with_backlog, None, config, 0.0)[0].source_actors == 4


def test_a_burst_below_the_activation_lag_in_a_closed_loop_only_follows_the_rate() -> None:
    config = AutoscaleConfig(activation_lag_records=10**9, scale_up_reaction_s=0)
    ticks = run(FakePipeline(), config, burst(600, 1_200, base=2_000, peak=10_000), duration_s=700)
    # The rate alone asks for ceil(10,000 / 1,600) = 7; a counted backlog would have asked for more.
    assert changes(ticks, "source")[0][1:] == (2, 7)


def test_recommendations_within_tolerance_keep_the_current_count() -> None:
    per_actor = 2_000 * 0.8  # capacity at the target busy ratio
    within = observations(sources=4, input_rate_per_s=4.3 * per_actor)  # 4.3 / 4 = 1.075: within 10 %
    assert decide(within, None, FAST, 0.0)[0].source_actors == 4
    assert decide(within, None, FAST.model_copy(update={"tolerance": 0.0}), 0.0)[0].source_actors == 5
    beyond = observations(sources=4, input_rate_per_s=2.9 * per_actor)  # 2.9 / 4 = 0.725
    assert decide(beyond, None, FAST, 0.0)[0].source_actors == 3


def test_sources_are_capped_by_partitions_and_aggregates_by_key_groups() -> None:
    config = FAST.model_copy(update={"max_source_actors": 100, "max_aggregate_actors": 100})
    obs = observations(partitions=4, key_groups=3, lag_records=10_000_000, aggregates=2, aggregate_busy_ratio=1.0)
    desired, _ = decide(obs, None, config, 0.0)
    assert (desired.source_actors, desired.aggregate_actors) == (4, 3)


def test_min_and_max_bound_both_kinds() -> None:
    config = FAST.model_copy(
        update={"min_source_actors": 2, "max_source_actors": 3, "min_aggregate_actors": 2, "max_aggregate_actors": 4}
    )
    busy = observations(lag_records=10_000_000, aggregates=4, aggregate_busy_ratio=1.0)
    assert decide(busy, None, config, 0.0)[0].source_actors == 3
    assert decide(busy, None, config, 0.0)[0].aggregate_actors == 4
    idle = observations(sources=3, aggregates=4, aggregate_busy_ratio=0.0)
    desired, _ = decide(idle, None, config, 0.0)
    assert (desired.source_actors, desired.aggregate_actors) == (2, 2)


def test_partitions_cap_the_minimum_too() -> None:
    config = FAST.model_copy(update={"min_source_actors": 4, "max_source_actors": 8})
    assert decide(observations(partitions=2, sources=2), None, config, 0.0)[0].source_actors == 2


def test_a_count_outside_the_bounds_is_corrected_at_once_even_in_cooldown() -> None:
    config = AutoscaleConfig(cooldown_s=600)
    obs = observations(input_rate_per_s=4_000, lag_records=10_000_000, sources=2)
    _, state = decide(obs, None, config.model_copy(update={"scale_up_reaction_s": 0}), 0.0)
    assert state.source_actors == 8
    fewer_partitions = observations(partitions=4, sources=8)
    desired, state = decide(fewer_partitions, state, config, 10.0)
    assert desired.source_actors == 4
    assert "outside [1, 4]" in desired.reason


def test_no_scale_down_before_the_policy_has_watched_a_whole_window() -> None:
    config = AutoscaleConfig(scale_down_stabilization_s=300, cooldown_s=0)
    idle = observations(sources=6)
    state = None
    for now_s in range(0, 300, 30):
        desired, state = decide(idle, state, config, float(now_s))
        assert desired.source_actors == 6
        assert "watching before any scale-down" in desired.reason
    desired, _ = decide(idle, state, config, 300.0)
    assert desired.source_actors == 1


def test_no_actors_and_no_key_groups_means_no_aggregate_stage() -> None:
    desired, _ = decide(observations(key_groups=0, aggregates=0, aggregate_busy_ratio=None), None, FAST, 0.0)
    assert desired.aggregate_actors == 0


def test_decide_is_pure_and_its_state_is_bounded_and_picklable() -> None:
    config = AutoscaleConfig()
    obs = observations(input_rate_per_s=3_000)
    state = None
    for now_s in range(0, 3_600, 5):
        _, state = decide(obs, state, config, float(now_s))
    assert state is not None
    before = pickle.dumps(state)
    assert decide(obs, state, config, 3_600.0) == decide(obs, state, config, 3_600.0)
    assert pickle.dumps(state) == before
    assert pickle.loads(before) == state
    horizon_s = max(config.scale_up_reaction_s, config.scale_down_stabilization_s)
    assert len(state.history) <= horizon_s / 5 + 1


def test_the_first_decision_takes_the_observed_counts_as_current() -> None:
    _, state = decide(observations(sources=3, aggregates=2, input_rate_per_s=3 * 1_600), None, AutoscaleConfig(), 42.0)
    assert replace(state, history=(), source_capacity_per_s=None) == PolicyState(
        source_actors=3, aggregate_actors=2, started_s=42.0
    )
    assert state.source_capacity_per_s is not None, "the capacity measured is carried to the next tick"


def test_a_capacity_measured_without_a_backlog_does_not_replace_one_measured_with_a_backlog() -> None:
    busy = observations(sources=1, source_capacity_per_s=300_000, source_busy_ratio=0.9, lag_records=500_000)
    _, state = decide(busy, None, AutoscaleConfig(), 0.0)
    under_load = state.source_capacity_per_s
    # small batches at low load: per-batch costs make records per busy second look ten times lower
    idle = observations(sources=1, source_capacity_per_s=28_000, source_busy_ratio=0.7, lag_records=300)

    _, state = decide(idle, state, AutoscaleConfig(), 5.0)

    assert under_load == 300_000 and state.source_capacity_per_s == under_load


# --- config ---------------------------------------------------------------------------------------------------


def test_config_rejects_min_above_max_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match=r"min_source_actors \(5\) must not exceed max_source_actors \(2\)"):
        AutoscaleConfig(min_source_actors=5, max_source_actors=2)
    with pytest.raises(ValidationError, match="min_aggregate_actors"):
        AutoscaleConfig(min_aggregate_actors=3, max_aggregate_actors=1)


@pytest.mark.parametrize(
    "bad",
    [
        {"target_drain_s": 0},
        {"target_source_busy_ratio": 1.5},
        {"tolerance": 1.0},
        {"cooldown_s": -1},
        {"min_source_actors": 0},
        {"lag_treshold_records": 10},  # misspelt: unknown keys are rejected
    ],
)
def test_config_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AutoscaleConfig(**bad)


def test_every_config_field_and_keda_parameter_is_documented_in_the_module_docstring() -> None:
    doc = policy_module.__doc__ or ""
    for name in AutoscaleConfig.model_fields:
        assert f"``{name}``" in doc, name
    for keda in ("lagThreshold", "activationLagThreshold", "pollingInterval", "cooldownPeriod", "stabilizationWindow"):
        assert keda in doc, keda


# --- configs/fake_cluster.yaml ----------------------------------------------------------------------------------

FAKE_CLUSTER = Path(__file__).resolve().parents[2] / "configs" / "fake_cluster.yaml"


def _fake_cluster() -> dict[str, Any]:
    data = yaml.safe_load(FAKE_CLUSTER.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_fake_cluster_config_has_what_the_fake_multinode_provider_needs() -> None:
    config = _fake_cluster()
    assert config["provider"]["type"] == "fake_multinode"
    assert config["provider"]["use_node_id_as_ip"] is True
    assert config["provider"]["disable_node_updaters"] is True
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    head, worker = nodes["ray.head.default"], nodes["ray.worker.eventray"]
    assert head["max_workers"] == 0
    assert "eventray_slot" not in head["resources"]
    assert worker["resources"]["eventray_slot"] == 2
    assert worker["resources"]["CPU"] == 1
    assert (worker["min_workers"], worker["max_workers"]) == (0, 3)
    assert config["max_workers"] == 3
    assert sum(node.get("min_workers", 0) for node in nodes.values()) <= config["max_workers"]
    assert 0 < config["idle_timeout_minutes"] <= 1
    for node in nodes.values():
        assert node["node_config"] == {}
        assert all(isinstance(value, int) and value >= 0 for value in node["resources"].values())
    # Ray's validate_config refuses a config without it (a sign of an older autoscaler's defaults).
    assert "cluster_synced_files" in config


def test_fake_cluster_config_documents_how_to_start_it() -> None:
    header = FAKE_CLUSTER.read_text(encoding="utf-8").split("cluster_name:")[0]
    assert "RAY_FAKE_CLUSTER=1 MALLOC_ARENA_MAX=2 ray start --head" in header
    assert "--autoscaling-config=configs/fake_cluster.yaml" in header


def test_fake_cluster_config_matches_rays_own_schema() -> None:
    """Validated against the ray-schema.json of the installed Ray, found without importing (or starting) Ray."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed")
    schema_path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.validate(_fake_cluster(), schema)


def test_a_tick_before_any_source_reported_its_partitions_keeps_the_sources_within_the_configured_bounds() -> None:
    # an empty topic at the first tick: no partition reported yet; the sources were scaled to 0 before, and the
    # layout refused ("at least one actor is needed"), failing the pipeline
    config = FAST.model_copy(
        update={"min_source_actors": 1, "max_source_actors": 1, "min_aggregate_actors": 3, "max_aggregate_actors": 3}
    )
    desired, _ = decide(observations(partitions=0, sources=1, aggregates=2), None, config, 0.0)
    assert (desired.source_actors, desired.aggregate_actors) == (1, 3)
