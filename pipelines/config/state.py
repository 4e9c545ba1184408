"""Config of the keyed-state operators beyond windows: upsert tables, dedup, keyed process functions.

Same style as :mod:`pipelines.config.pipeline`: units in field names, unknown keys rejected, values frozen, and a
validation error names the field and what is allowed. ``PipelineConfig.keyed`` holds one of them, told apart by
``type``; each carries the watermark settings the source actors compute watermarks from (the same fields, with
the same defaults, as ``AggregateConfig``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.config.base import ConfigModel
from pipelines.config.query import QueryConfig

__all__ = [
    "IMPORT_PATH",
    "DedupConfig",
    "EventSourcedConfig",
    "JoinConfig",
    "KeyedProcessConfig",
    "UpsertConfig",
    "WatermarkSettings",
]

IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class WatermarkSettings(ConfigModel):
    """How far event time may run backwards, and when a quiet partition stops holding the watermark back."""

    max_out_of_order_ms: int = Field(default=1_000, ge=0, description="watermark = max event time - this")
    idle_timeout_ms: int = Field(
        default=5_000,
        ge=1,
        description=(
            "a partition with nothing left to read and no valid event this long stops holding the watermark; "
            "one with a backlog never does"
        ),
    )


class UpsertConfig(WatermarkSettings):
    """The latest row per key (e.g. current inventory per SKU); the newest ``_timestamp`` wins.

    With ``delete_column``, a row whose value there is true removes its key: the key's changelog row is a
    tombstone, and the tombstone is kept ``tombstone_retention_ms`` of event time (like Kafka's
    ``delete.retention.ms``) so that an older version arriving later cannot bring the key back.
    """

    type: Literal["upsert"] = "upsert"
    key: str = Field(min_length=1, description="column whose value identifies a row")
    delete_column: str | None = Field(
        default=None, min_length=1, description="boolean column; true removes the key (null counts as false)"
    )
    tombstone_retention_ms: int = Field(
        default=86_400_000, ge=0, description="event time a delete is remembered after its _timestamp"
    )
    query: QueryConfig | None = Field(default=None, description="serve this stage's state as a view (CQRS)")

    @model_validator(mode="after")
    def _delete_column_is_not_the_key(self) -> UpsertConfig:
        if self.delete_column == self.key:
            raise ValueError(f"delete_column {self.delete_column!r} must differ from key (a boolean column)")
        return self


class DedupConfig(WatermarkSettings):
    """Drop events whose id was seen within ``ttl_ms`` of event time (idempotent consumers)."""

    type: Literal["dedup"] = "dedup"
    id_column: str = Field(min_length=1, description="column that identifies an event, e.g. event_id")
    ttl_ms: int = Field(gt=0, description="an id is forgotten once the watermark passes its last sighting + this")


class KeyedProcessConfig(WatermarkSettings):
    """A user process function run per key with value state and timers.

    ``function`` is an import path ``module:attr`` naming a callable (usually the class) that returns a fresh
    function object when called with ``options`` as keyword arguments (none by default); it is imported when the
    operator is built, not when the config is read.
    """

    type: Literal["process"] = "process"
    key: str = Field(min_length=1, description="column whose value selects the state and timers")
    function: str = Field(pattern=IMPORT_PATH, description="import path 'package.module:ClassName'")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments the function is made with, e.g. {failure_rate: 0.1}"
    )
    query: QueryConfig | None = Field(default=None, description="serve this stage's state as a view (CQRS)")


class EventSourcedConfig(WatermarkSettings):
    """Event-sourced aggregates: each row is a command to the aggregate its ``key`` names; the owner of the key
    decides it against the aggregate's state and version, and emits the events it decided and a reply.

    ``aggregate`` is an import path ``module:attr`` naming a zero-argument callable (usually the class) whose
    object has ``initial()``, ``decide(state, command, time_ms)`` (returns a list of event dicts, each with an
    ``event_type``, or :class:`~pipelines.state.event_sourced.Rejected`) and ``evolve(state, event)``. A command
    whose ``expected_version_column`` is set and differs from the aggregate's version is rejected with the
    version it has (optimistic concurrency); a command id seen within ``command_ttl_ms`` of event time gets the
    reply it got the first time, and no events (idempotent commands). Results: one row per event, to
    ``events_topic``, and one reply per command, to ``replies_topic``, told apart by the ``topic`` column (a Kafka
    sink routes them with ``topic_column: topic``); with ``snapshot_every``, the aggregate's state (JSON, with the
    class's ``state_version``) to ``snapshots_topic`` each time its version passes a multiple of it, so a replay
    starts from the nearest snapshot (a compacted topic keeps the newest per aggregate).
    """

    type: Literal["event_sourced"] = "event_sourced"
    key: str = Field(default="aggregate_id", min_length=1, description="column naming the aggregate a command is to")
    aggregate: str = Field(pattern=IMPORT_PATH, description="import path 'package.module:ClassName'")
    command_id_column: str = Field(default="command_id", min_length=1, description="column identifying a command")
    expected_version_column: str | None = Field(
        default="expected_version", description="column of the version a command expects (null: any); None: none"
    )
    events_topic: str = Field(default="events", min_length=1, description="the topic column of event rows")
    replies_topic: str = Field(default="replies", min_length=1, description="the topic column of reply rows")
    command_ttl_ms: int = Field(
        default=7 * 86_400_000, gt=0, description="a command id is remembered this long after the command's time"
    )
    snapshot_every: int | None = Field(
        default=None, gt=0, description="emit the aggregate's state each time its version passes a multiple of this"
    )
    snapshots_topic: str = Field(default="snapshots", min_length=1, description="the topic column of snapshot rows")
    query: QueryConfig | None = Field(default=None, description="serve this stage's state as a view (CQRS)")

    @model_validator(mode="after")
    def _columns_differ(self) -> EventSourcedConfig:
        named = {"key": self.key, "command_id_column": self.command_id_column}
        if self.expected_version_column is not None:
            named["expected_version_column"] = self.expected_version_column
        if len(set(named.values())) < len(named):
            raise ValueError(f"{named} name the same column twice: each names a column of its own")
        topics = [self.events_topic, self.replies_topic, self.snapshots_topic]
        if len(set(topics)) < len(topics):
            raise ValueError(
                f"events_topic, replies_topic and snapshots_topic are {topics}: name a topic of its own for each"
            )
        return self


class JoinConfig(WatermarkSettings):
    """Two streams joined by ``key``: each row of ``left`` meets rows of ``right`` (an input or an earlier stage
    the join takes, by name; both shuffle by ``key`` to one owner, so nothing needs to be co-partitioned).

    ``mode``:

    - ``temporal`` (as-of, stream-table): each left row meets the version of its key that was valid at the
      left row's event time: the right row with the newest ``_timestamp`` at or before it;
    - ``interval``: each left row meets every right row with
      ``left._timestamp + lower_ms <= right._timestamp <= left._timestamp + upper_ms``;
    - ``window``: each left row meets every right row in the same tumbling window of ``size_ms`` (its results
      carry ``window_start_ms`` and ``window_end_ms``).

    ``how``: ``left`` keeps a left row that meets nothing, its right columns null; ``inner`` leaves it out.
    ``emit``: ``watermark`` (the default) emits a left row once the watermark over both sides has passed what
    its result depends on, so the output is the same whatever the partition counts, consumer speeds or a replay;
    ``eager`` (temporal only) emits a left row as it arrives, with the newest version known then (a KStream-KTable
    join): lower latency, and a result that depends on which side was read first.
    """

    type: Literal["join"] = "join"
    key: str = Field(min_length=1, description="column both sides are joined on (each side names it so)")
    left: str = Field(min_length=1, description="the input or earlier stage whose rows are enriched (the stream)")
    right: str = Field(min_length=1, description="the input or earlier stage whose rows are looked up (the table)")
    mode: Literal["temporal", "interval", "window"] = Field(
        default="temporal", description="temporal (as-of), interval or window"
    )
    how: Literal["left", "inner"] = Field(
        default="left", description="left: a row that meets nothing is kept, right columns null; inner: left out"
    )
    emit: Literal["watermark", "eager"] = Field(
        default="watermark", description="watermark: deterministic; eager: at arrival, temporal only"
    )
    lower_ms: int | None = Field(default=None, description="interval: right._timestamp >= left._timestamp + this")
    upper_ms: int | None = Field(default=None, description="interval: right._timestamp <= left._timestamp + this")
    size_ms: int | None = Field(default=None, gt=0, description="window: the tumbling window both rows fall in")

    @model_validator(mode="after")
    def _fits_its_mode(self) -> JoinConfig:
        if self.left == self.right:
            raise ValueError(f"left and right are both {self.left!r}: a join takes two different inputs or stages")
        if self.emit == "eager" and self.mode != "temporal":
            raise ValueError(f"emit: eager is for mode temporal; a join of mode {self.mode} emits on the watermark")
        if self.mode == "interval":
            if self.lower_ms is None or self.upper_ms is None:
                raise ValueError("mode interval needs lower_ms and upper_ms (e.g. lower_ms: 0, upper_ms: 60000)")
            if self.lower_ms > self.upper_ms:
                raise ValueError(f"lower_ms ({self.lower_ms}) exceeds upper_ms ({self.upper_ms}): no row could meet")
        elif self.lower_ms is not None or self.upper_ms is not None:
            raise ValueError("lower_ms and upper_ms are for mode interval; remove them, or set mode: interval")
        if self.mode == "window" and self.size_ms is None:
            raise ValueError("mode window needs size_ms, the tumbling window both rows fall in (e.g. size_ms: 60000)")
        if self.mode != "window" and self.size_ms is not None:
            raise ValueError("size_ms is for mode window; remove it, or set mode: window")
        return self
