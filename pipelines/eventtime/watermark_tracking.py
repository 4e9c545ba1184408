"""The two places a watermark is computed, as pure objects with an injected clock (ARCHITECTURE.md section 3).

:class:`PartitionWatermarks` is a source's side: the newest event time of each partition it reads, and from
them the watermark it sends. :class:`WatermarkValve` is a keyed stage's side (Flink's status watermark valve):
the watermarks its senders sent, and from them the one its operator advances to.

Contract of both: nothing blocks, nothing raises for any input the actors pass, and neither ever moves a
watermark backwards for a partition or a sender (an older watermark received late is ignored).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from pipelines.eventtime.idleness import PartitionIdleness
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK

__all__ = ["PartitionWatermarks", "WatermarkValve"]


class PartitionWatermarks:
    """The watermark of one source actor: the minimum over its open partitions of (newest valid event time -
    ``max_out_of_order_ms``).

    An exhausted partition no longer holds it back, nor does an idle one (nothing left to read and no valid
    event for ``idle_timeout_ms``: :mod:`pipelines.eventtime.idleness`); a partition with a backlog never is idle. When
    every open partition is idle the source is idle (None: the stage leaves it out of its minimum); when every
    partition is exhausted, the watermark is the newest event time of all less the disorder bound.
    """

    def __init__(self, max_out_of_order_ms: int, idle_timeout_ms: int, clock: Callable[[], float] = time.monotonic):
        self._disorder = max_out_of_order_ms
        self._idleness = PartitionIdleness(idle_timeout_ms, clock)
        self._newest: dict[int, int] = {}

    def opened(self, partition: int, newest_ms: int = NO_WATERMARK) -> None:
        """A partition starts to be read here, with the newest event time a checkpoint recorded for it."""
        self._newest[partition] = newest_ms
        self._idleness.opened(partition)

    def released(self, partition: int) -> None:
        """A partition moved to another actor."""
        self._newest.pop(partition, None)
        self._idleness.released(partition)

    def saw(self, partition: int, newest_ms: int) -> None:
        """Valid events of ``partition`` up to event time ``newest_ms`` were just read."""
        self._newest[partition] = max(self._newest[partition], newest_ms)
        self._idleness.saw_events(partition)

    def newest(self, partition: int) -> int | None:
        """The newest event time read from ``partition``; None before any."""
        newest = self._newest.get(partition, NO_WATERMARK)
        return None if newest == NO_WATERMARK else newest

    def event_times(self) -> dict[int, int]:
        """The newest event time of each partition that has one (what a checkpoint records)."""
        return {partition: newest for partition, newest in self._newest.items() if newest != NO_WATERMARK}

    def watermark(self, open_partitions: Mapping[int, int | None]) -> int | None:
        """The watermark, given the partitions not yet exhausted with their backlog now (None: not known)."""
        if not open_partitions:
            return max(self._newest.values(), default=NO_WATERMARK) - self._disorder
        active = [
            self._newest[partition]
            for partition, backlog in open_partitions.items()
            if not self._idleness.is_idle(partition, backlog)
        ]
        if not active:
            return None
        lowest = min(active)
        return NO_WATERMARK if lowest == NO_WATERMARK else lowest - self._disorder


class WatermarkValve:
    """The watermark of a keyed stage: the minimum over its active senders of what each sent.

    A sender that sends None is idle and left out until it sends a watermark again; when every sender is idle,
    the maximum they reached (nothing is pending anywhere, so everything up to there is complete). A finished
    sender is at the end of time; the valve is done when every sender is.
    """

    def __init__(self, senders: int) -> None:
        self._watermarks = [NO_WATERMARK] * senders
        self._idle: set[int] = set()

    def advance(self, sender: int, watermark_ms: int | None) -> None:
        """``sender`` sent ``watermark_ms`` (None: it is idle)."""
        if watermark_ms is None:
            self._idle.add(sender)
        else:
            self._idle.discard(sender)
            self._watermarks[sender] = max(self._watermarks[sender], watermark_ms)

    def finish(self, sender: int) -> None:
        """``sender`` has no more input."""
        self._watermarks[sender] = END_OF_TIME_MS
        self._idle.discard(sender)

    @property
    def current(self) -> int | None:
        """The stage's watermark now; None while no sender has sent one and some are idle."""
        active = [w for sender, w in enumerate(self._watermarks) if sender not in self._idle]
        if active:
            return min(active)
        reached = [w for w in self._watermarks if w != NO_WATERMARK]
        return max(reached) if reached else None

    @property
    def done(self) -> bool:
        return all(watermark == END_OF_TIME_MS for watermark in self._watermarks)
