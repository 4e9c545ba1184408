"""Opening a pipeline's outputs in an actor: file and console sinks from pipelines, Kafka ones from here."""

from __future__ import annotations

from actors.kafka.producer_sink import KafkaDeadLetterSink, KafkaSink
from actors.telemetry import Telemetry
from pipelines.config import PipelineConfig, SinkConfig
from pipelines.kafka_config import KafkaConnectionConfig, KafkaDeadLetterConfig, KafkaSinkConfig
from pipelines.sinks import Sink, open_sink

__all__ = ["open_dead_letter", "open_result_sinks"]


def _connection(config: PipelineConfig) -> KafkaConnectionConfig:
    if config.kafka is None:  # the config validator guarantees it; this keeps the types honest
        raise ValueError("a Kafka output needs the pipeline's kafka section")
    return config.kafka


def _open(config: PipelineConfig, sink: SinkConfig, writer: str, telemetry: Telemetry) -> Sink:
    if isinstance(sink, KafkaSinkConfig):
        return KafkaSink(sink, _connection(config), f"{config.name}-{writer}", telemetry)
    return open_sink(sink, writer)


def open_result_sinks(config: PipelineConfig, writer: str, telemetry: Telemetry) -> list[Sink]:
    return [_open(config, sink, writer, telemetry) for sink in config.sinks]


def open_dead_letter(config: PipelineConfig, writer: str) -> Sink:
    dead_letter = config.dead_letter
    if isinstance(dead_letter, KafkaDeadLetterConfig):
        return KafkaDeadLetterSink(dead_letter.topic, _connection(config), f"{config.name}-{writer}-dlq", config.name)
    return open_sink(dead_letter, writer)
