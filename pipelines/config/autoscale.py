"""The autoscaling section of a pipeline config (the policy itself is :mod:`cluster.control.autoscale_policy`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipelines.config.base import ConfigModel

__all__ = ["AutoscaleConfig"]


class AutoscaleConfig(ConfigModel):
    """Bounds, targets and timings of the autoscaling policy (see the module docstring for each field)."""

    min_source_actors: int = Field(default=1, ge=1, description="fewest SourceActors")
    max_source_actors: int = Field(default=8, ge=1, description="most SourceActors (partitions cap it too)")
    min_aggregate_actors: int = Field(default=1, ge=1, description="fewest AggregateActors")
    max_aggregate_actors: int = Field(default=8, ge=1, description="most AggregateActors (key groups cap it too)")
    target_drain_s: float = Field(default=60.0, gt=0, description="drain a backlog within this many seconds")
    target_source_busy_ratio: float = Field(default=0.8, gt=0, le=1, description="sources sized to be this busy")
    target_aggregate_busy_ratio: float = Field(default=0.7, gt=0, le=1, description="aggregates sized this busy")
    lag_threshold_records: int = Field(
        default=10_000, ge=1, description="target lag per source actor until capacity is measured (KEDA)"
    )
    activation_lag_records: int = Field(default=1_000, ge=0, description="at or below: lag adds no actors")
    tolerance: float = Field(default=0.1, ge=0, lt=1, description="ignore recommendations this close (ratio)")
    scale_up_reaction_s: float = Field(default=30.0, ge=0, description="a need must last this long to scale up")
    scale_down_stabilization_s: float = Field(
        default=300.0, ge=0, description="scale down to the highest recommendation of this window"
    )
    cooldown_s: float = Field(default=60.0, ge=0, description="minimum time between rescales of one kind")
    interval_s: float = Field(default=5.0, gt=0, description="time between two ticks of the policy (KEDA polls 30 s)")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> AutoscaleConfig:
        for kind in ("source", "aggregate"):
            low, high = getattr(self, f"min_{kind}_actors"), getattr(self, f"max_{kind}_actors")
            if low > high:
                raise ValueError(f"min_{kind}_actors ({low}) must not exceed max_{kind}_actors ({high})")
        return self
