"""Commit markers of exactly-once Kafka sinks (ARCHITECTURE.md section 4).

Each transaction of a sink slot also writes a marker ``(lineage, slot, epoch)`` to ``<pipeline>.eventray-commits``
(one partition, compacted, key = lineage and slot). A read_committed reader sees a marker only if its transaction
committed, so after a crash the newest marker of the slot in the checkpoint location's lineage says whether that
slot's last epoch reached Kafka. The lineage (:meth:`~pipelines.state.checkpoint_store.CheckpointStore.ensure_lineage`)
matters because epoch numbers start again in a new checkpoint location: without it, the marker of an earlier
location's epoch 40 would pass for this one's epoch 3 and suppress a redo that is needed (lost output). Within a
lineage a slot's markers are written in epoch order, so the one compaction keeps per key is the newest.
Markers written before lineages existed (no lineage) belong to no lineage and count for none.

The Supervisor reads the markers once per recovery, after fencing every slot, with one :class:`CommitMarkerLog`
per run: each read starts where the last one ended, so a recovery late in a long run reads what was written since
the previous one, not the topic from its start. Taking the newest epoch per slot over every read gives the same
verdict as reading the whole topic, whatever the log cleaner removed in between: it only removes a marker once a
newer one of the same key follows it.
"""

from __future__ import annotations

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from actors.kafka.clients import started_consumer
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.io.kafka_acls import commit_marker_topic

__all__ = ["CommitMarker", "CommitMarkerLog", "commit_marker_topic"]

_POLL_MS = 100
_IDLE_POLLS = 50  # polls in a row that do not advance (5 s) before a read gives up short of the end offset


class CommitMarker(msgspec.Struct, frozen=True):
    slot: str
    epoch: int
    lineage: str = ""

    def key(self) -> bytes:
        return f"{self.lineage}/{self.slot}".encode() if self.lineage else self.slot.encode()

    def value(self) -> bytes:
        return msgspec.json.encode(self)


class CommitMarkerLog:
    """The newest committed epoch per slot of one lineage, read incrementally from the marker topic."""

    def __init__(self, pipeline: str, lineage: str) -> None:
        self.topic = commit_marker_topic(pipeline)
        self.lineage = lineage
        self.position = 0  # the next offset to read
        self.records_read = 0
        self._newest: dict[str, int] = {}

    async def committed(self, connection: KafkaConnectionConfig) -> dict[str, int]:
        """Read the markers written since the last call; return the newest committed epoch per slot (slots that
        never committed in this lineage are absent).

        Every slot's earlier producer must have been fenced first: with read_committed, the end offset is the
        last stable offset, and an open transaction's marker is not read (it can no longer commit once fenced).
        """
        options = {"enable_auto_commit": False, "isolation_level": "read_committed", "fetch_max_wait_ms": _POLL_MS}
        async with started_consumer(connection, **options) as consumer:
            tp = TopicPartition(self.topic, 0)
            end = int((await consumer.end_offsets([tp]))[tp])
            if end < self.position:  # the log lost its tail (an unclean leader election): read it all again
                self.position, self._newest = 0, {}
            beginning = int((await consumer.beginning_offsets([tp]))[tp])
            # assigned and positioned with no await in between: an assigned partition without a position is
            # reset to the log's end by the fetcher, whose fetch there then holds up the one we want
            consumer.assign([tp])
            consumer.seek(tp, max(self.position, beginning))
            await self._read_to(consumer, tp, end)
            return dict(self._newest)

    async def _read_to(self, consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> None:
        """Read up to ``end``; raise if the reads stop advancing short of it. Short polls: a transaction's last
        record is its commit (a control record, never returned), so the last poll before ``end`` returns nothing
        and a long one would wait out its whole timeout."""
        idle_polls = 0
        while (position := await consumer.position(tp)) < end and idle_polls < _IDLE_POLLS:
            fetched = await consumer.getmany(tp, timeout_ms=_POLL_MS)
            for record in fetched.get(tp, []):
                self.records_read += 1
                if record.value is not None:
                    self._take(msgspec.json.decode(record.value, type=CommitMarker))
            idle_polls = idle_polls + 1 if await consumer.position(tp) == position else 0
        self.position = await consumer.position(tp)
        if self.position < end:  # a short verdict would redo committed epochs (duplicates): retry the recovery
            raise KafkaTimeoutError(f"{self.topic}: commit markers read up to offset {self.position} of {end}")

    def _take(self, marker: CommitMarker) -> None:
        if marker.lineage != self.lineage:
            return  # another checkpoint location's epochs (or a marker from before lineages)
        self._newest[marker.slot] = max(self._newest.get(marker.slot, -1), marker.epoch)
