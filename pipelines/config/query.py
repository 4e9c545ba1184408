"""Config of queryable state (CQRS read side): a keyed stage's ``query:`` and the pipeline's ``serve:``.

A keyed stage with ``query`` serves its state as the view it names: ``GET /views/{view}/{key}`` on the query
router of ``serve`` answers from the actor that owns the key's group (:mod:`cluster.cqrs.router`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import ConfigModel

__all__ = ["Consistency", "PositionConfig", "QueryConfig", "ServeConfig"]

Consistency = Literal["latest", "committed"]


class PositionConfig(ConfigModel):
    """Where a row says which write it carries, for read-your-writes: the aggregate and its version (the event
    envelope of an event-sourced stage). A query with ``min_position=<aggregate>@<version>`` is answered once
    the owner has applied that version of that aggregate."""

    aggregate_column: str = Field(default="aggregate_id", min_length=1, description="column naming the aggregate")
    version_column: str = Field(default="version", min_length=1, description="int64 column of the event's version")


def _both_modes() -> list[Consistency]:
    return ["latest", "committed"]


class QueryConfig(ConfigModel):
    """The stage's state as a view: its key is the stage's key, its value what the operator holds for the key
    (a process function's value, an upsert table's row, an aggregate's state)."""

    view: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="the view's name in /views/{view}/{key}")
    consistency: list[Consistency] = Field(
        default_factory=_both_modes,
        min_length=1,
        description="what a query may ask for, the first the default: latest (what the owner applied) or "
        "committed (the last complete checkpoint: never what a crash could roll back)",
    )
    position: PositionConfig | None = Field(
        default=None, description="the columns read-your-writes positions are taken from; null: no min_position"
    )

    @model_validator(mode="after")
    def _consistency_once(self) -> QueryConfig:
        if len(set(self.consistency)) < len(self.consistency):
            raise ValueError(f"consistency {self.consistency} names a mode twice: list each once")
        return self


class ServeConfig(ConfigModel):
    """The query router's HTTP endpoint, started when a keyed stage has ``query``."""

    host: str = Field(default="127.0.0.1", min_length=1, description="address the router listens on")
    port: int = Field(default=8095, ge=0, le=65535, description="0: any free port (the run's log names it)")
    retry_bound_s: float = Field(
        default=10.0,
        gt=0,
        description="how long the router retries a query during a move or a recovery "
        "before it answers 503 with Retry-After",
    )
    position_wait_s: float = Field(
        default=5.0, gt=0, description="how long an owner waits for a min_position before it says how far it is"
    )
    rebuild_of: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the pipeline whose query router serves these views, standing by until `eventray cqrs "
        "rebuild` switches them over (the rebuild sets it; null: the pipeline's own router)",
    )
