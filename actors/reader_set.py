"""The partitions a source actor owns, opened for reading whatever the source is (generator, files, Kafka)."""

from __future__ import annotations

from actors.kafka.consumer import KafkaSourceSession
from pipelines.config import PipelineConfig
from pipelines.kafka_config import KafkaSourceConfig
from pipelines.sources import PartitionReader, open_reader

__all__ = ["ReaderSet"]


class ReaderSet:
    """Opens readers for assigned partitions; commits their positions where the source keeps offsets."""

    def __init__(self, config: PipelineConfig, client_id: str, started_at_s: float, start_time_ms: int) -> None:
        self._config = config
        self._started_at_s = started_at_s
        self._start_time_ms = start_time_ms
        self._kafka: KafkaSourceSession | None = None
        source = config.source
        if isinstance(source, KafkaSourceConfig):
            assert config.kafka is not None  # the config validator guarantees it
            self._kafka = KafkaSourceSession(
                source, config.kafka, config.group_id, client_id, config.schema_.max_decompressed_batch_bytes
            )
        self.readers: list[PartitionReader] = []

    @property
    def commits_offsets(self) -> bool:
        return self._kafka is not None

    async def open(
        self, partitions: list[int], limits: dict[int, int | None], positions: dict[int, int]
    ) -> list[PartitionReader]:
        """Open ``partitions`` at ``positions`` (restored from a checkpoint; others start by the source's
        policy: offset 0, or the Kafka start setting). ``limits`` count from where each partition starts."""
        if self._kafka is not None:
            opened: list[PartitionReader] = list(await self._kafka.open(partitions, limits, positions))
        else:
            opened = [
                open_reader(
                    self._config.source, p, positions.get(p, 0), limits.get(p), self._started_at_s, self._start_time_ms
                )
                for p in partitions
            ]
        self.readers.extend(opened)
        return opened

    async def release(self, partitions: list[int]) -> None:
        """Close the readers of ``partitions`` (a rescale moved them). ``readers`` becomes a new list, so a loop
        iterating the old one is not disturbed (it must skip partitions no longer owned)."""
        gone = set(partitions)
        for reader in self.readers:
            if reader.partition in gone:
                await reader.close()
        self.readers = [reader for reader in self.readers if reader.partition not in gone]
        if self._kafka is not None:
            await self._kafka.release(partitions)

    async def commit(self) -> dict[int, int]:
        """Commit the readers' positions (Kafka: under the pipeline's group id); others keep no offsets."""
        return await self._kafka.commit() if self._kafka is not None else {}

    async def close(self) -> None:
        for reader in self.readers:
            await reader.close()
        if self._kafka is not None:
            await self._kafka.close()
