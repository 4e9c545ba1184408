"""Opening a pipeline's outputs in an actor: file and console sinks from pipelines, Kafka ones from here, each
wrapped for the pipeline's delivery guarantee (:mod:`actors.epoch_outputs`)."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from actors.epoch_outputs import FlushingOutput, Output, StagedFileOutput, TransactionalKafkaOutput
from actors.kafka.producer_sink import KafkaDeadLetterSink, KafkaSink
from actors.telemetry import Telemetry
from pipelines.config.kafka import KafkaConnectionConfig, KafkaDeadLetterConfig, KafkaSinkConfig
from pipelines.config.pipeline import ConsoleSinkConfig, DeadLetterConfig, PipelineConfig, SinkConfig
from pipelines.io.kafka_acls import transactional_id_prefix
from pipelines.io.sinks import open_sink
from pipelines.state.checkpoint_store import CheckpointStore

__all__ = [
    "ActorOutputs",
    "open_actor_outputs",
    "output_lineage",
    "transactional_id",
    "writes_kafka_transactions",
]


def _connection(config: PipelineConfig) -> KafkaConnectionConfig:
    if config.kafka is None:  # the config validator guarantees it; this keeps the types honest
        raise ValueError("a Kafka output needs the pipeline's kafka section")
    return config.kafka


def transactional_id(config: PipelineConfig, slot: str) -> str:
    """Stable across runs and restarts, so a restarted slot fences the producer it replaces."""
    return f"{transactional_id_prefix(config.name)}{slot}"


def _transactional(config: PipelineConfig, output: SinkConfig | DeadLetterConfig | KafkaDeadLetterConfig) -> bool:
    """A Kafka output of an exactly-once pipeline: written in transactions, each with its commit marker."""
    return config.delivery == "exactly_once" and isinstance(output, KafkaSinkConfig | KafkaDeadLetterConfig)


def writes_kafka_transactions(config: PipelineConfig) -> bool:
    """Whether any output of ``config`` is written in Kafka transactions (so recovery reads commit markers)."""
    return any(_transactional(config, output) for output in [*config.sinks, config.dead_letter])


def _open(config: PipelineConfig, output: SinkConfig | DeadLetterConfig | KafkaDeadLetterConfig, writer: str,
          slot: str, telemetry: Telemetry, lineage: str) -> Output:  # fmt: skip
    exactly_once = config.delivery == "exactly_once"
    txn = transactional_id(config, slot) if _transactional(config, output) else None
    if isinstance(output, KafkaSinkConfig):
        sink = KafkaSink(output, _connection(config), f"{config.name}-{writer}", telemetry, txn)
        return TransactionalKafkaOutput(sink, slot, config.name, lineage) if txn else FlushingOutput(sink)
    if isinstance(output, KafkaDeadLetterConfig):
        dead = KafkaDeadLetterSink(
            output.topic, _connection(config), f"{config.name}-{writer}", config.name, txn, output.max_record_bytes
        )
        return TransactionalKafkaOutput(dead, slot, config.name, lineage) if txn else FlushingOutput(dead)
    if exactly_once and not isinstance(output, ConsoleSinkConfig):
        return StagedFileOutput(output.path, writer, lambda directory, name: open_sink(output.model_copy(
            update={"path": directory}), name))  # fmt: skip
    return FlushingOutput(open_sink(output, writer))


@dataclass(frozen=True)
class ActorOutputs:
    results: list[Output]  # none in an actor whose rows go on to another stage
    dead_letter: Output


def open_actor_outputs(
    config: PipelineConfig,
    writer: str,
    slot: str,
    telemetry: Telemetry,
    lineage: str,
    *,
    results: bool,
    dead_letter_suffix: str = "",
) -> ActorOutputs:
    """An actor's result sinks (``results``: its rows end here) and its dead-letter output, opened side by side.

    ``writer`` names this actor's files (unique per actor incarnation); ``slot`` is its stable place in the
    topology (e.g. ``aggregate-0``), which names its Kafka transactions; ``lineage`` is the checkpoint location's
    (exactly-once commit markers carry it); ``dead_letter_suffix`` sets the dead letters' writer and slot apart
    (``-late``: an aggregate's late events). Each Kafka producer's start is a few round trips to the brokers and,
    exactly once, waits for its producer id (the broker first aborts the open transaction of the dead actor it
    replaces), so a recovery waits for the slowest output rather than for all of them in turn.
    """
    openers = [
        partial(_open, config, sink, writer, f"{slot}/sink-{index}", telemetry, lineage)
        for index, sink in enumerate(config.sinks if results else [])
    ]
    dead_writer = f"{writer}{dead_letter_suffix}"
    if isinstance(config.dead_letter, KafkaDeadLetterConfig):
        dead_writer += "-dlq"
    dead_slot = f"{slot}{dead_letter_suffix}/dead-letter"
    openers.append(partial(_open, config, config.dead_letter, dead_writer, dead_slot, telemetry, lineage))
    if len(openers) == 1:
        return ActorOutputs([], openers[0]())
    with ThreadPoolExecutor(len(openers), thread_name_prefix="open-output") as pool:
        opening = [pool.submit(opener) for opener in openers]
    errors = [error for future in opening if (error := future.exception()) is not None]
    outputs = [future.result() for future in opening if future.exception() is None]
    if errors:  # close those that opened (their producers' threads) before the actor fails
        for output in outputs:
            with contextlib.suppress(Exception):
                output.close()
        raise errors[0]
    return ActorOutputs(outputs[:-1], outputs[-1])


def output_lineage(config: PipelineConfig, store: CheckpointStore | None) -> str:
    """The lineage exactly-once outputs name their epochs with ("" when no output needs one)."""
    return store.lineage() if store is not None and config.delivery == "exactly_once" else ""
