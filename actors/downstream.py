"""How a source stage hands batches to the aggregate stage, without knowing it is Ray underneath."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

__all__ = ["Downstream"]


class Downstream(Protocol):
    """The aggregate actors as seen by one sender.

    Contract: batches sent by one sender to one owner are processed in the order sent. ``send`` returns once
    the batch is handed over; it waits (backpressure) when too many batches are still unprocessed, and raises
    the owner's error if an earlier batch failed. ``finish`` waits until every batch sent was processed and
    tells every owner that this sender has no more input. ``trace_context`` is the sender's batch span
    (a W3C traceparent), so the owner's span for the batch becomes its child.
    """

    @property
    def owners(self) -> int: ...

    async def send(
        self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> None: ...

    async def drain(self) -> None:
        """Wait until every batch sent so far was processed (a checkpoint barrier)."""

    async def finish(self, sender: int) -> None: ...
