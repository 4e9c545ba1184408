"""The control plane's timing goes by the clock it is given: epochs and autoscaler ticks are due tick by tick
under a :class:`~pipelines.eventtime.clock.ManualClock`, with no sleep and whatever the machine's speed."""

from __future__ import annotations

import pytest

from actors.metrics import PipelineMetrics
from cluster.control.autoscaler import Autoscaler
from cluster.control.epochs import EpochRunner
from pipelines.config.autoscale import AutoscaleConfig
from pipelines.eventtime.clock import ManualClock
from pipelines.examples.orders import orders_pipeline


def test_an_epoch_is_due_once_the_injected_clock_passes_the_interval() -> None:
    config = orders_pipeline(checkpoint__uri="/tmp/unused", checkpoint__interval_ms=2_000)
    clock = ManualClock()
    epochs = EpochRunner(config, None, PipelineMetrics(config.name), clock)

    assert not epochs.due()
    clock.advance(1.5)
    assert not epochs.due()
    clock.advance(0.5)
    assert epochs.due()
    epochs.restarted(None)
    assert not epochs.due(), "a restart starts the interval again"


def test_an_autoscaler_tick_is_due_by_the_injected_clock() -> None:
    clock = ManualClock()
    autoscaler = Autoscaler(AutoscaleConfig(interval_s=5.0), "orders", 128, clock.now_s(), clock)

    assert not autoscaler.due()
    clock.advance(5.0)
    assert autoscaler.due()


def test_a_manual_clock_never_goes_back() -> None:
    clock = ManualClock(now_ms=1_000)
    clock.advance(0.25)
    assert (clock.monotonic(), clock.now_ms(), clock.now_s()) == (0.25, 1_250, 1.25)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_an_autoscaler_keeps_the_newest_ticks_of_its_timeline() -> None:
    clock = ManualClock()
    autoscaler = Autoscaler(AutoscaleConfig(interval_s=5.0), "orders", 128, clock.now_s(), clock, timeline_points=3)
    for _ in range(5):
        clock.advance(5.0)
        autoscaler.tick([], [], nodes=1)

    assert [point.at_s for point in autoscaler.timeline] == [15.0, 20.0, 25.0]
