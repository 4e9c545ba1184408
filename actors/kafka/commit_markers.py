"""Commit markers of exactly-once Kafka sinks (ARCHITECTURE.md section 4).

Each transaction of a sink slot also writes a marker ``(lineage, slot, epoch)`` to ``<pipeline>.eventray-commits``
(one partition, compacted, key = lineage and slot). A read_committed reader sees a marker only if its transaction
committed, so after a crash the newest marker of the slot in the checkpoint location's lineage says whether that
slot's last epoch reached Kafka. The lineage (:meth:`~pipelines.state.checkpoint_store.CheckpointStore.ensure_lineage`)
matters because epoch numbers start again in a new checkpoint location: without it, the marker of an earlier
location's epoch 40 would pass for this one's epoch 3 and suppress a redo that is needed (lost output). Within a
lineage a slot's markers are written in epoch order, so the one compaction keeps per key is the newest.
Markers written before lineages existed (no lineage) belong to no lineage and count for none.
"""

from __future__ import annotations

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipelines.config.kafka import KafkaConnectionConfig, client_options
from pipelines.io.kafka_acls import commit_marker_topic

__all__ = ["CommitMarker", "commit_marker_topic", "read_committed_markers"]


class CommitMarker(msgspec.Struct, frozen=True):
    slot: str
    epoch: int
    lineage: str = ""

    def key(self) -> bytes:
        return f"{self.lineage}/{self.slot}".encode() if self.lineage else self.slot.encode()

    def value(self) -> bytes:
        return msgspec.json.encode(self)


async def read_committed_markers(connection: KafkaConnectionConfig, pipeline: str, lineage: str) -> dict[str, int]:
    """The newest committed epoch per slot in ``lineage`` (slots that never committed in it are absent)."""
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, isolation_level="read_committed", **client_options(connection)
    )
    await consumer.start()
    try:
        tp = TopicPartition(commit_marker_topic(pipeline), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = int((await consumer.end_offsets([tp]))[tp])
        newest: dict[str, int] = {}
        # With read_committed, the end offset is the last stable offset: an open transaction's marker is not
        # read (callers fence the slot's earlier producer first, so that transaction can no longer commit).
        empty_polls = 0
        while await consumer.position(tp) < end and empty_polls < 5:
            fetched = await consumer.getmany(tp, timeout_ms=1_000)
            empty_polls = 0 if fetched else empty_polls + 1
            for record in fetched.get(tp, []):
                if record.value is None:
                    continue
                marker = msgspec.json.decode(record.value, type=CommitMarker)
                if marker.lineage != lineage:
                    continue  # another checkpoint location's epochs (or a marker from before lineages)
                newest[marker.slot] = max(newest.get(marker.slot, -1), marker.epoch)
        return newest
    finally:
        await consumer.stop()
