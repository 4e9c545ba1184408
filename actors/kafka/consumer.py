"""A source actor's Kafka consumer: manually assigned partitions, one reader per partition.

No consumer-group protocol: the Supervisor decides which actor owns which partition (ARCHITECTURE.md section 3), so
there are no rebalances. Auto-commit is off and reads are ``read_committed``; offsets are committed explicitly
(:meth:`KafkaSourceSession.commit`) under the pipeline's group id, so standard lag tools see them. A compressed
batch that cannot be decompressed within the schema's cap, or at all, becomes one refused record (a dead
letter) and the partition reads on (:mod:`actors.kafka.batch_guard`).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from actors.kafka.batch_guard import BatchGuard
from actors.kafka.clients import start_or_stop
from pipelines.config.kafka import KafkaConnectionConfig, KafkaSourceConfig, client_options
from pipelines.io.kafka_records import raw_batch_from_records
from pipelines.io.records import RawBatch

__all__ = ["KafkaPartitionReader", "KafkaSourceSession"]

_NO_LIMIT = 1 << 62


class KafkaPartitionReader:
    """One assigned partition, read in offset order (see :mod:`pipelines.io.sources` for the contract)."""

    def __init__(
        self, consumer: AIOKafkaConsumer, guard: BatchGuard, tp: TopicPartition, position: int, limit: int | None
    ) -> None:
        self.partition = tp.partition
        self.position = position
        self._consumer = consumer
        self._guard = guard
        self.tp = tp
        self._limit = _NO_LIMIT if limit is None else position + limit
        self._end = position
        self._readable_end: int | None = None  # unknown until a fetch response carries it

    async def fetch(self, max_records: int) -> RawBatch | None:
        wanted = min(max_records, self._limit - self.position)
        if wanted <= 0:
            return None
        fetched = await self._consumer.getmany(self.tp, timeout_ms=0, max_records=wanted)
        unreadable = self._guard.take(self.tp)
        highwater = self._consumer.highwater(self.tp)
        if highwater is not None:
            self._end = max(self._end, highwater)
        self._note_readable_end()
        # The consumer's position, not the last record's offset + 1: transaction markers and compacted gaps
        # take offsets without records, and a reader waiting for them would never be exhausted.
        start = self.position
        records = [r for r in fetched.get(self.tp, []) if start <= r.offset < self._limit]
        self.position = max(self.position, min(await self._consumer.position(self.tp), self._limit))
        self._end = max(self._end, self.position)
        if not records and not unreadable:
            return None
        raw = raw_batch_from_records(self.tp.topic, self.partition, records, unreadable, (start, self._limit))
        return raw if len(raw) else None

    def end_offset(self) -> int:
        return self._end

    def backlog(self) -> int | None:
        """Records up to the last stable offset (read_committed reads no further) not yet read; None before the
        first fetch response or end-offset lookup told where the partition ends."""
        if self._readable_end is None:
            return None
        return max(0, min(self._readable_end, self._limit) - self.position)

    def _note_readable_end(self) -> None:
        """The offset reads can reach now: the last stable offset (open transactions hold it back), or the high
        watermark where the broker reports none (read_uncommitted reports -1)."""
        stable = self._consumer.last_stable_offset(self.tp)
        end = stable if stable is not None and stable >= 0 else self._consumer.highwater(self.tp)
        if end is not None:
            self._readable_end = max(int(end), self.position)

    async def refresh_end_offset(self) -> int:
        ends = await self._consumer.end_offsets([self.tp])
        self._end = max(self._end, int(ends[self.tp]))
        return self._end

    async def freeze(self) -> None:
        self._limit = min(self._limit, max(await self.refresh_end_offset(), self.position))

    @property
    def exhausted(self) -> bool:
        return self.position >= self._limit

    @property
    def limit_end(self) -> int | None:
        return None if self._limit >= _NO_LIMIT else self._limit

    async def close(self) -> None:
        return None


class KafkaSourceSession:
    """The consumer shared by a source actor's partition readers."""

    def __init__(
        self,
        source: KafkaSourceConfig,
        connection: KafkaConnectionConfig,
        group_id: str,
        client_id: str,
        max_decompressed_batch_bytes: int | None,
    ) -> None:
        self._source = source
        self._guard = BatchGuard(max_decompressed_batch_bytes)
        self._consumer = AIOKafkaConsumer(
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset=source.fallback,
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=32 << 20,
            **client_options(connection),
        )
        self._readers: dict[int, KafkaPartitionReader] = {}
        self._started = False

    async def open(
        self, partitions: list[int], limits: dict[int, int | None], positions: dict[int, int] | None = None
    ) -> list[KafkaPartitionReader]:
        """Assign ``partitions`` (added to those already owned) and position each at ``positions`` (restored
        from a checkpoint) or else by the start policy."""
        if not self._started:
            await start_or_stop(self._consumer)
            self._started = True
        new = [TopicPartition(self._source.topic, partition) for partition in partitions]
        self._guard.watch(new)
        self._consumer.assign([*(reader.tp for reader in self._readers.values()), *new])
        for reader in self._readers.values():  # assign() replaces the assignment and forgets positions
            self._consumer.seek(reader.tp, reader.position)
        restored = positions or {}
        starts = await self._start_positions([tp for tp in new if tp.partition not in restored])
        starts.update({tp: restored[tp.partition] for tp in new if tp.partition in restored})
        for tp in new:
            self._consumer.seek(tp, starts[tp])
            reader = KafkaPartitionReader(self._consumer, self._guard, tp, starts[tp], limits.get(tp.partition))
            await reader.refresh_end_offset()
            self._readers[tp.partition] = reader
        return [self._readers[tp.partition] for tp in new]

    async def release(self, partitions: list[int]) -> None:
        """Stop reading ``partitions`` (they moved to another actor); the others keep their positions."""
        released = [reader.tp for partition in partitions if (reader := self._readers.pop(partition, None))]
        self._guard.forget(released)
        for tp in released:
            self._guard.take(tp)  # whoever reads them next reads those batches again
        self._consumer.assign([reader.tp for reader in self._readers.values()])
        for reader in self._readers.values():  # assign() replaces the assignment and forgets positions
            self._consumer.seek(reader.tp, reader.position)

    async def _start_positions(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        beginning = await self._consumer.beginning_offsets(tps)
        end = await self._consumer.end_offsets(tps)
        start = self._source.start
        if start == "earliest":
            return {tp: int(beginning[tp]) for tp in tps}
        if start == "latest":
            return {tp: int(end[tp]) for tp in tps}
        if start == "timestamp":
            found = await self._consumer.offsets_for_times(dict.fromkeys(tps, self._source.start_timestamp_ms))
            return {tp: int(found[tp].offset) if found.get(tp) else int(end[tp]) for tp in tps}
        fallback = beginning if self._source.fallback == "earliest" else end
        positions = {}
        for tp in tps:
            committed = await self._consumer.committed(tp)
            positions[tp] = int(fallback[tp]) if committed is None else max(int(committed), int(beginning[tp]))
        return positions

    async def commit(self) -> dict[int, int]:
        """Commit every reader's position (the next offset to read); return what was committed."""
        offsets: dict[Any, Any] = {
            reader.tp: OffsetAndMetadata(reader.position, "") for reader in self._readers.values()
        }
        if offsets:
            await self._consumer.commit(offsets)
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    async def close(self) -> None:
        self._guard.forget([reader.tp for reader in self._readers.values()])
        if self._started:
            await self._consumer.stop()
