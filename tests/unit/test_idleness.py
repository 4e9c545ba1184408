"""PartitionIdleness on a clock moved by hand (in binary-exact steps): a partition with a backlog is never idle."""

from __future__ import annotations

from pipelines.eventtime.idleness import PartitionIdleness


class ManualClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def idleness(timeout_ms: int = 250) -> tuple[PartitionIdleness, ManualClock]:
    clock = ManualClock()
    tracker = PartitionIdleness(timeout_ms, clock)
    tracker.opened(0)
    return tracker, clock


def test_a_caught_up_partition_becomes_idle_after_the_timeout() -> None:
    tracker, clock = idleness()
    assert not tracker.is_idle(0, backlog=0)
    clock.now_s += 0.125
    assert not tracker.is_idle(0, backlog=0)
    clock.now_s += 0.125
    assert tracker.is_idle(0, backlog=0)


def test_a_partition_with_a_backlog_is_never_idle_however_long_it_waits() -> None:
    tracker, clock = idleness()
    for _ in range(100):
        clock.now_s += 10
        assert not tracker.is_idle(0, backlog=5_000)


def test_an_unknown_end_counts_as_a_backlog() -> None:
    tracker, clock = idleness()
    clock.now_s += 60
    assert not tracker.is_idle(0, backlog=None)
    clock.now_s += 0.125
    assert not tracker.is_idle(0, backlog=0), "caught up only 125 ms ago"


def test_the_timeout_counts_from_when_the_backlog_was_last_seen() -> None:
    tracker, clock = idleness()
    clock.now_s += 5
    assert not tracker.is_idle(0, backlog=1)
    clock.now_s += 0.125
    assert not tracker.is_idle(0, backlog=0)
    clock.now_s += 0.125
    assert tracker.is_idle(0, backlog=0)


def test_an_event_makes_an_idle_partition_active_again() -> None:
    tracker, clock = idleness()
    clock.now_s += 1
    assert tracker.is_idle(0, backlog=0)
    tracker.saw_events(0)
    assert not tracker.is_idle(0, backlog=0)
    clock.now_s += 0.25
    assert tracker.is_idle(0, backlog=0)


def test_a_released_partition_is_forgotten_and_a_reopened_one_starts_busy() -> None:
    tracker, clock = idleness()
    clock.now_s += 1
    tracker.released(0)
    tracker.opened(0)
    assert not tracker.is_idle(0, backlog=0)
