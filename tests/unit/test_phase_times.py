"""A recovery's phase times: each phase from the end of the one before, a repeated phase adds up."""

from __future__ import annotations

from cluster.control.phase_times import PhaseTimes


def test_phases_are_measured_back_to_back_and_add_up() -> None:
    ticks = iter([9.0, 10.0, 10.5, 12.0, 12.25])
    phases = PhaseTimes(lambda: next(ticks))

    phases.done("checkpoint read")  # 9.0 -> 10.0
    phases.done("actors started")  # -> 10.5
    phases.done("producers fenced")  # -> 12.0
    phases.done("actors started")  # -> 12.25, added to the first

    assert phases.phases == {"checkpoint read": 1.0, "actors started": 0.75, "producers fenced": 1.5}
    assert phases.total_s == 3.25
    assert str(phases) == "checkpoint read 1.00 s, actors started 0.75 s, producers fenced 1.50 s"


def test_without_a_start_the_first_phase_starts_at_creation() -> None:
    ticks = iter([5.0, 7.0])
    phases = PhaseTimes(lambda: next(ticks))

    phases.done("epoch begun")

    assert phases.phases == {"epoch begun": 2.0}
