"""The source's and the keyed stage's watermarks as pure objects, driven tick by tick with a fake clock."""

from __future__ import annotations

from pipelines.eventtime.watermark_tracking import PartitionWatermarks, WatermarkValve
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_source_watermark_is_the_slowest_busy_partition_less_the_disorder() -> None:
    clock = Clock()
    marks = PartitionWatermarks(max_out_of_order_ms=100, idle_timeout_ms=1_000, clock=clock)
    marks.opened(0)
    marks.opened(1, newest_ms=5_000)  # restored from a checkpoint
    assert marks.watermark({0: 10, 1: 10}) == NO_WATERMARK, "a partition without events holds it at the start"
    marks.saw(0, 7_000)
    marks.saw(0, 6_000)  # an older event never moves a partition back
    assert marks.newest(0) == 7_000 and marks.event_times() == {0: 7_000, 1: 5_000}
    assert marks.watermark({0: 10, 1: 10}) == 4_900
    clock.now = 5.0  # partition 1 has had a backlog all along: never idle, however long it waits
    assert marks.watermark({0: 0, 1: 10}) == 4_900
    clock.now = 5.5
    assert marks.watermark({0: 0, 1: 0}) == 4_900, "caught up only now: idle after idle_timeout_ms"
    clock.now = 6.6
    assert marks.watermark({0: 0, 1: 0}) is None, "every partition idle: the source is idle"
    marks.saw(1, 8_000)
    assert marks.watermark({0: 0, 1: 0}) == 7_900, "partition 1 is busy again, partition 0 still idle"
    assert marks.watermark({}) == 7_900, "all exhausted: the newest of all less the disorder"
    marks.released(1)
    assert marks.newest(1) is None and marks.watermark({0: None}) == 6_900


def test_the_valve_takes_the_minimum_of_active_senders_and_the_maximum_when_all_are_idle() -> None:
    valve = WatermarkValve(senders=3)
    assert valve.current == NO_WATERMARK and not valve.done
    valve.advance(0, 1_000)
    valve.advance(1, 3_000)
    valve.advance(1, 2_000)  # late, older: ignored
    assert valve.current == NO_WATERMARK, "sender 2 has sent nothing yet"
    valve.advance(2, None)
    assert valve.current == 1_000, "an idle sender is left out"
    valve.advance(0, None)
    valve.advance(1, None)
    assert valve.current == 3_000, "all idle: the most any reached"
    valve.advance(2, 500)
    assert valve.current == 500, "an idle sender that sends again is back in the minimum"
    for sender in range(3):
        valve.finish(sender)
    assert valve.done and valve.current == END_OF_TIME_MS
