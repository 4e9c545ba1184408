"""The one clock the stages read: the actors, the Supervisor and tests pass it in (ARCHITECTURE.md section 3).

Stages never call ``time`` themselves: a stage given a :class:`ManualClock` runs the same in a unit test, tick by
tick, as it does in an actor given :data:`SYSTEM_CLOCK`.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """``monotonic`` for durations and timeouts (seconds, never goes back); ``now_ms`` and ``now_s`` for the wall
    clock (epoch milliseconds or seconds: processing-time timers, generator rates, report times)."""

    def monotonic(self) -> float: ...

    def now_ms(self) -> int: ...

    def now_s(self) -> float: ...


class SystemClock:
    """The process's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def now_s(self) -> float:
        return time.time()


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told: ``advance(seconds)`` moves every reading by the same time, the wall
    clock from ``now_ms`` (``now_ms()`` rounds the whole time elapsed to milliseconds, so small steps add up)."""

    def __init__(self, now_ms: int = 1_767_225_600_000) -> None:
        self._elapsed_s = 0.0
        self._start_ms = now_ms

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self._elapsed_s += seconds

    def monotonic(self) -> float:
        return self._elapsed_s

    def now_ms(self) -> int:
        return self._start_ms + round(self._elapsed_s * 1000)

    def now_s(self) -> float:
        return self._start_ms / 1000 + self._elapsed_s
