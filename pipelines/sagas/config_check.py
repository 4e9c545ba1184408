"""What a saga stage's config must agree with once its definition is loaded (at compile time, before any actor
starts): the columns it reads, the topics its steps name, and the sinks that write its rows.

Each mismatch here would not fail at run time: it would make every saga time out (a reply column that does not
exist), send lifecycle events to a participant as commands (a topic named twice), or write commands to the
default topic (a sink that does not route them). So each is a :class:`~pipelines.errors.ConfigError` naming the
field and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.config.kafka import KafkaSinkConfig, KafkaSourceConfig
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.saga import SagaConfig
from pipelines.errors import ConfigError
from pipelines.sagas.definition import Saga

__all__ = ["check_saga_stage"]


def check_saga_stage(config: PipelineConfig, keyed: SagaConfig, saga: Saga, columns: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for the first disagreement of ``keyed`` (the stage's config, whose rows have
    ``columns``) with ``saga`` (its definition) and ``config`` (the pipeline: inputs and sinks)."""
    for field, column in (("keyed.command_id_column", keyed.command_id_column),
                          ("keyed.reason_column", keyed.reason_column)):  # fmt: skip
        if column not in columns:
            raise ConfigError(f"{field}: unknown column {column!r}; replies need it; available: {list(columns)}")
    unknown = [column for column in keyed.reply_columns if column not in columns]
    if unknown:
        raise ConfigError(f"keyed.reply_columns: unknown column(s) {unknown}; available: {list(columns)}")
    named = sorted({step.command.topic for step in saga.steps})
    stray = sorted(set(keyed.topics) - set(named))
    if stray:
        raise ConfigError(f"keyed.topics: {stray} name no topic of saga {saga.name!r}'s steps; they name {named}")
    written = {keyed.topics.get(topic, topic) for topic in named}
    own = {"events_topic": keyed.events_topic, "replies_topic": keyed.replies_topic, "stuck_topic": keyed.stuck_topic}
    clash = {field: topic for field, topic in own.items() if topic in written}
    if clash:
        raise ConfigError(f"keyed: {clash} is also a topic the saga sends commands to; name a topic of its own")
    for index, sink in enumerate(config.sinks):
        if not isinstance(sink, KafkaSinkConfig):
            continue
        missing = sorted((written | {keyed.events_topic, keyed.stuck_topic}) - set(sink.topics))
        if sink.topic_column != "topic" or missing:
            raise ConfigError(
                f"sinks.{index}: a saga's rows name their topic in the column 'topic'; set topic_column: topic and "
                f"list every topic it writes in topics, or its rows go to {sink.topic!r} marked unrouted "
                f"(missing: {missing})"
            )
    read = {topic for spec in config.all_inputs if isinstance(spec.source, KafkaSourceConfig)
            for topic in (spec.source.topics or [spec.source.topic])}  # fmt: skip
    if read and keyed.replies_topic not in read:
        raise ConfigError(
            f"keyed.replies_topic: participants reply on {keyed.replies_topic!r}, which no input reads "
            f"({sorted(read)}); add an input for it, or name the topic an input reads"
        )
