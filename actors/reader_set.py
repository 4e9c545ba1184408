"""The partitions a source actor owns, opened for reading whatever their inputs are (generator, files, Kafka).

Partitions are pipeline partitions (:mod:`pipelines.stages.topology`): with several inputs, each reader is opened on
its own input's partition and reports the pipeline partition, in ``partition`` and in the batches it reads.
"""

from __future__ import annotations

from actors.kafka.consumer import KafkaSourceSession
from pipelines.config.kafka import KafkaSourceConfig
from pipelines.config.pipeline import GeneratorSourceConfig, NamedInput, PipelineConfig
from pipelines.io.sources import PartitionReader, open_reader
from pipelines.stages.topology import InputPartitionReader, input_of, local_partition, pipeline_partition

__all__ = ["ReaderSet"]


class ReaderSet:
    """Opens readers for assigned pipeline partitions; commits their positions where the source keeps offsets
    (Kafka inputs: one consumer per input, all under the pipeline's group id)."""

    def __init__(self, config: PipelineConfig, client_id: str, started_at_s: float, start_time_ms: int) -> None:
        self._inputs = config.all_inputs
        self._labelled = len(self._inputs) > 1  # a single input's partitions are its pipeline partitions
        self._started_at_s = started_at_s
        self._start_time_ms = start_time_ms
        self._kafka: dict[int, KafkaSourceSession] = {}
        for spec in self._inputs:
            if isinstance(spec.source, KafkaSourceConfig):
                assert config.kafka is not None  # the config validator guarantees it
                self._kafka[spec.index] = KafkaSourceSession(
                    spec.source, config.kafka, config.group_id, f"{client_id}-{spec.index}" if self._labelled
                    else client_id, spec.schema.max_decompressed_batch_bytes,
                )  # fmt: skip
        self.readers: list[PartitionReader] = []

    @property
    def commits_offsets(self) -> bool:
        """Whether some input keeps offsets (Kafka)."""
        return bool(self._kafka)

    def input_of(self, partition: int) -> NamedInput:
        """The input that pipeline partition ``partition`` belongs to."""
        return self._inputs[input_of(partition)]

    async def open(
        self, partitions: list[int], limits: dict[int, int | None], positions: dict[int, int]
    ) -> list[PartitionReader]:
        """Open ``partitions`` at ``positions`` (restored from a checkpoint; others start by the input's policy:
        offset 0, or the Kafka start setting). ``limits`` count from where each partition starts."""
        opened: list[PartitionReader] = []
        for spec in self._inputs:
            mine = [p for p in partitions if input_of(p) == spec.index]
            if not mine:
                continue
            local = {local_partition(p): p for p in mine}
            local_limits = {lp: limits.get(p) for lp, p in local.items()}
            local_positions = {lp: positions[p] for lp, p in local.items() if p in positions}
            readers = await self._open_input(spec, sorted(local), local_limits, local_positions)
            opened += [InputPartitionReader(r, spec) if self._labelled else r for r in readers]
        self.readers.extend(opened)
        return opened

    async def _open_input(
        self, spec: NamedInput, partitions: list[int], limits: dict[int, int | None], positions: dict[int, int]
    ) -> list[PartitionReader]:
        session = self._kafka.get(spec.index)
        if session is not None:
            return list(await session.open(partitions, limits, positions))
        start_time_ms = self._start_time_ms
        if isinstance(spec.source, GeneratorSourceConfig) and spec.source.start_time_ms is not None:
            start_time_ms = spec.source.start_time_ms  # an input may fix its own (the run's is the first input's)
        return [
            open_reader(spec.source, p, positions.get(p, 0), limits.get(p), self._started_at_s, start_time_ms)
            for p in partitions
        ]

    async def release(self, partitions: list[int]) -> None:
        """Close the readers of ``partitions`` (a rescale moved them). ``readers`` becomes a new list, so a loop
        iterating the old one is not disturbed (it must skip partitions no longer owned)."""
        gone = set(partitions)
        for reader in self.readers:
            if reader.partition in gone:
                await reader.close()
        self.readers = [reader for reader in self.readers if reader.partition not in gone]
        for index, session in self._kafka.items():
            leaving = [local_partition(p) for p in partitions if input_of(p) == index]
            if leaving:
                await session.release(leaving)

    async def commit(self) -> dict[int, int]:
        """Commit the readers' positions (Kafka: under the pipeline's group id), by pipeline partition; other
        inputs keep no offsets."""
        committed: dict[int, int] = {}
        for index, session in self._kafka.items():
            offsets = await session.commit()
            committed.update({pipeline_partition(index, p): offset for p, offset in offsets.items()})
        return committed

    async def close(self) -> None:
        for reader in self.readers:
            await reader.close()
        for session in self._kafka.values():
            await session.close()
