"""How long each phase of a (re)start took: the Supervisor logs it with every recovery, so an operator sees where
a slow recovery spent its time (actors starting, fencing producers, reading commit markers) without a profiler."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["PhaseTimes"]


class PhaseTimes:
    """Seconds per named phase, each measured from the end of the one before (the first from the creation)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last = now()
        self.phases: dict[str, float] = {}

    def done(self, phase: str) -> None:
        """``phase`` ends now (a phase named twice adds up)."""
        now = self._now()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now

    @property
    def total_s(self) -> float:
        return sum(self.phases.values())

    def __str__(self) -> str:
        return ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in self.phases.items())
