"""When a source's partition may stop holding the watermark back (ARCHITECTURE.md section 3).

A partition is *idle* once it has had nothing left to read, and no valid event, for ``idle_timeout_ms``. A
partition with a backlog, or whose end is not known yet, is never idle however long it waits for its turn:
one source actor reading many partitions of a pre-filled topic visits each only every so often, and a replay
must give the same windows as live processing. Flink's ``WatermarkStrategy.withIdleness`` goes by the time since
the last event alone, so a backlogged split that waits longer than the timeout lets the watermark pass it and
its events arrive late; here the reader's backlog (Kafka: records up to the last stable offset; files: rows
left; generator: events its clock has released) decides.

Pure: time comes from the injected clock, and the backlog is passed in by the caller at each decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["PartitionIdleness"]


class PartitionIdleness:
    """Idleness of the partitions one source actor owns."""

    def __init__(self, idle_timeout_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle_s = idle_timeout_ms / 1000
        self._clock = clock
        self._last_event_at: dict[int, float] = {}
        self._backlog_seen_at: dict[int, float] = {}

    def opened(self, partition: int) -> None:
        """A partition this actor starts to read: busy until shown otherwise."""
        now = self._clock()
        self._last_event_at[partition] = self._backlog_seen_at[partition] = now

    def released(self, partition: int) -> None:
        self._last_event_at.pop(partition, None)
        self._backlog_seen_at.pop(partition, None)

    def saw_events(self, partition: int) -> None:
        """Valid events of ``partition`` were just read."""
        self._last_event_at[partition] = self._clock()

    def is_idle(self, partition: int, backlog: int | None) -> bool:
        """Whether ``partition`` may stop holding the watermark, given what is left to read in it now
        (``None``: not known yet, which counts as a backlog)."""
        now = self._clock()
        if backlog != 0:
            self._backlog_seen_at[partition] = now
        busy_at = max(self._last_event_at[partition], self._backlog_seen_at[partition])
        return now - busy_at >= self._idle_s
