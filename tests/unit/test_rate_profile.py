"""The generator's burst profile: arrivals integrate the rate, and arrival times invert them."""

from __future__ import annotations

import numpy as np

from pipelines.config.pipeline import BurstConfig, GeneratorSourceConfig
from pipelines.io.generator import event_times
from pipelines.io.rate_profile import RateProfile


def test_arrivals_follow_the_base_rate_then_the_burst_then_the_base_rate() -> None:
    profile = RateProfile(100.0, [BurstConfig(start_s=10, duration_s=5, factor=4)])

    assert profile.arrived(10) == 1_000
    assert profile.arrived(15) == 1_000 + 5 * 400
    assert profile.arrived(20) == 3_000 + 5 * 100
    assert profile.rate_at(12) == 400 and profile.rate_at(16) == 100


def test_arrival_times_invert_arrivals() -> None:
    profile = RateProfile(100.0, [BurstConfig(start_s=10, duration_s=5, factor=4), BurstConfig(start_s=30,
                                  duration_s=1, factor=0.5)])  # fmt: skip
    seconds = np.array([0.0, 3.3, 10.0, 12.5, 15.0, 29.0, 30.5, 40.0])

    counts = np.array([profile.arrived(t) for t in seconds])

    assert np.allclose(profile.arrival_s(counts), seconds)


def test_generator_event_times_track_arrival_during_a_burst() -> None:
    config = GeneratorSourceConfig(partitions=2, rate_per_s=200, max_out_of_order_ms=0,
                                   bursts=[BurstConfig(start_s=1, duration_s=1, factor=10)])  # fmt: skip
    # per partition: 100/s for 1 s (offsets 0..99), then 1000/s for 1 s (100..1099), then 100/s
    times = event_times(config, 0, np.array([0, 100, 600, 1100, 1200]), start_ms=0)

    assert times.tolist() == [0, 1_000, 1_500, 2_000, 3_000]
