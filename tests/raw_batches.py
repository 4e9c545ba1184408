"""Raw fetches for decoder tests: payloads as one partition read them, without keys, timestamps or traces."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from pipelines.io.records import RawBatch

__all__ = ["payload_batch"]


def payload_batch(
    payloads: Sequence[bytes | None], topic: str = "orders", partition: int = 0, first_offset: int = 0
) -> RawBatch:
    """``payloads`` at offsets ``first_offset``, ``first_offset + 1``, ... of ``topic``'s ``partition``."""
    count = len(payloads)
    return RawBatch(
        topic=topic,
        partition=partition,
        offsets=pa.array(range(first_offset, first_offset + count), pa.int64()),
        payloads=pa.array(payloads, pa.binary()),
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )
