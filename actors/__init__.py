"""Where pipelines run: plain actor classes that the cluster package turns into Ray actors."""

from actors.aggregate_actor import AggregateActor
from actors.reports import AggregateProgress, SourceProgress
from actors.source_actor import SourceActor
from pipelines.stages.source_stage import Downstream

__all__ = ["AggregateActor", "AggregateProgress", "Downstream", "SourceActor", "SourceProgress"]
