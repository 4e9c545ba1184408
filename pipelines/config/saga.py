"""Config of saga stages: an orchestrated saga (``type: saga``) and a choreography monitor (``type: saga_monitor``).

Same style as :mod:`pipelines.config.state`: units in field names, unknown keys rejected, and a validation error
names the field and what is allowed. The saga's steps are Python (:mod:`pipelines.sagas.definition`), named by
``saga``; the config says where its rows go.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.config.base import ConfigModel
from pipelines.config.query import QueryConfig
from pipelines.config.state import IMPORT_PATH, WatermarkSettings
from pipelines.sagas.contract import OUTPUT_COLUMNS

__all__ = ["Expectation", "SagaConfig", "SagaMonitorConfig"]


class SagaConfig(WatermarkSettings):
    """An orchestrated saga: each row is a start or a participant's reply to the saga its ``key`` names; the one
    owner of the key decides what follows (:mod:`pipelines.sagas.machine`) and emits commands, lifecycle events
    and, for a parked saga, a dead-letter row, told apart by the ``topic`` column (:mod:`pipelines.sagas.contract`).
    Timeouts and retry backoffs are processing-time timers in the stage's state: they survive a restore and fire
    at the first tick after they are due. State transitions and the rows they emit commit in one checkpoint
    epoch (``delivery: exactly_once``), so no outbox is needed.
    """

    type: Literal["saga"] = "saga"
    key: str = Field(default="saga_id", min_length=1, description="column naming the saga a row belongs to")
    saga: str = Field(pattern=IMPORT_PATH, description="import path of a Saga, or of a factory returning one")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the factory, e.g. {timeout_ms: 5000}"
    )
    type_column: str = Field(default="message_type", min_length=1, description="column of the start or reply type")
    command_id_column: str = Field(default="command_id", min_length=1, description="column of the command replied to")
    reason_column: str = Field(default="reason", min_length=1, description="column of a failure reply's reason")
    reply_columns: list[str] = Field(
        default_factory=list, description="columns of a reply merged into the saga's data, e.g. [payment_id]"
    )
    events_topic: str = Field(default="saga-events", min_length=1, description="topic of the lifecycle events")
    replies_topic: str = Field(default="saga-replies", min_length=1, description="reply_to of every command")
    stuck_topic: str = Field(default="saga-stuck", min_length=1, description="topic of parked sagas (dead letters)")
    topics: dict[str, str] = Field(
        default_factory=dict, description="a step command's topic (as the saga names it) -> the topic written to"
    )
    query: QueryConfig | None = Field(default=None, description="serve each saga's state as a view (CQRS)")

    @model_validator(mode="after")
    def _columns_and_topics_differ(self) -> SagaConfig:
        columns = [self.key, self.type_column, self.command_id_column, self.reason_column]
        if len(set(columns)) < len(columns):
            raise ValueError(f"key, type_column, command_id_column and reason_column are {columns}: name four columns")
        _key_is_no_output_column(self.key)
        topics = [self.events_topic, self.replies_topic, self.stuck_topic]
        if len(set(topics)) < len(topics):
            raise ValueError(
                f"events_topic, replies_topic and stuck_topic are {topics}: name a topic of its own for each"
            )
        return self


def _key_is_no_output_column(key: str) -> None:
    if key in OUTPUT_COLUMNS:
        raise ValueError(f"key {key!r} is a column of what the stage emits {OUTPUT_COLUMNS}: rename it, e.g. saga_id")


class Expectation(ConfigModel):
    """After an event of type ``after``, one of ``then`` must follow for the same correlation id within
    ``within_ms`` of event time."""

    after: str = Field(min_length=1, description="the event type that starts the wait, e.g. OrderPlaced")
    then: list[str] = Field(min_length=1, description="event types any one of which ends the wait")
    within_ms: int = Field(gt=0, description="event time allowed between the two")


class SagaMonitorConfig(WatermarkSettings):
    """A choreography monitor: follows a correlation id (``key``) across event types and emits ``SagaStuck``
    (in the saga output schema, to ``events_topic``) when an expected event has not arrived once the watermark
    passes its deadline. Event time, so a replay or a backfill flags the same sagas as live processing did."""

    type: Literal["saga_monitor"] = "saga_monitor"
    key: str = Field(min_length=1, description="the correlation id column, e.g. order_id")
    type_column: str = Field(default="event_type", min_length=1, description="column of the event type")
    name: str = Field(default="choreography", min_length=1, description="the saga column of what it emits")
    expect: list[Expectation] = Field(min_length=1, description="what must follow what, and by when")
    events_topic: str = Field(default="saga-events", min_length=1, description="topic of the SagaStuck rows")

    @model_validator(mode="after")
    def _key_is_its_own(self) -> SagaMonitorConfig:
        _key_is_no_output_column(self.key)
        if self.key == self.type_column:
            raise ValueError(f"key and type_column are both {self.key!r}: name the correlation id and the type")
        return self
