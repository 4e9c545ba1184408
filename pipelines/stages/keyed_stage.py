"""The keyed operator a pipeline config describes: windows, an upsert table, dedup, a process function, a join
or event-sourced aggregates.

This is the one place that maps ``PipelineConfig.aggregate`` / ``PipelineConfig.keyed`` to a
:class:`~pipelines.state.keyed_operator.KeyedOperator`, so the AggregateActor (and the compile-time dry run) build
every operator the same way. What each operator emits to the sinks:

* windows: window results when the watermark closes them (see :mod:`pipelines.windows.tumbling`);
* upsert: the changelog, at once: per batch, the new version of each key it changed (a tombstone for a
  delete). Stale versions (older than the stored one) are counted as intended drops, not dead-lettered;
* dedup: the first occurrence of each id, at once. Duplicates are counted as intended drops, not
  dead-lettered (dropping them is the point);
* process: whatever the user's function returns from ``process`` and ``on_timer``;
* join: left rows with the right side's columns (a window join's with the window), once the watermark decides
  them (see
  :mod:`pipelines.state.temporal_join`, :mod:`pipelines.state.interval_join`);
* event_sourced: per command, the events it decided, then its reply, at once (see
  :mod:`pipelines.state.event_sourced`);
* saga: per start, reply or deadline, the commands and lifecycle events it decided (see
  :mod:`pipelines.sagas.process`); saga_monitor: ``SagaStuck`` when an expected event is late
  (:mod:`pipelines.sagas.monitor`).
"""

from __future__ import annotations

from pipelines.config.pipeline import PipelineConfig
from pipelines.config.saga import SagaConfig, SagaMonitorConfig
from pipelines.config.state import DedupConfig, EventSourcedConfig, JoinConfig, KeyedProcessConfig, UpsertConfig
from pipelines.sagas.monitor import ChoreographyMonitor
from pipelines.sagas.process import SagaProcess
from pipelines.state.dedup import Dedup
from pipelines.state.event_sourced import EventSourced
from pipelines.state.interval_join import IntervalJoin
from pipelines.state.joins import JoinColumns
from pipelines.state.keyed_operator import KeyedOperator
from pipelines.state.process_function import KeyedProcess
from pipelines.state.temporal_join import TemporalJoin
from pipelines.state.upsert_table import UpsertTable
from pipelines.windows.tumbling import open_windows

__all__ = ["open_keyed_operator"]


def open_keyed_operator(
    config: PipelineConfig, carry_trace: bool, join_columns: JoinColumns | None = None
) -> KeyedOperator:
    """A fresh operator for ``config``'s keyed stage; ``carry_trace`` matters to windows only (the other
    operators emit input rows, or user rows, with whatever columns they have); ``join_columns``, the columns of a
    join's results, worked out by :func:`~pipelines.stages.plan.compile_pipeline`, to joins only.

    Raises ``ValueError`` for a pipeline without a keyed stage or a join without its columns, and
    :class:`~pipelines.errors.ConfigError` when a process function cannot be imported.
    """
    if config.aggregate is not None:
        return open_windows(config.aggregate, carry_trace=carry_trace)
    keyed = config.keyed
    if keyed is None:
        raise ValueError(f"pipeline {config.name!r} has no keyed stage (neither aggregate nor keyed is set)")
    if isinstance(keyed, UpsertConfig):
        return UpsertTable(keyed)
    if isinstance(keyed, DedupConfig):
        return Dedup(keyed)
    if isinstance(keyed, JoinConfig):
        if join_columns is None:
            raise ValueError(f"pipeline {config.name!r}: a join needs the columns of its results (join_columns)")
        return TemporalJoin(keyed, join_columns) if keyed.mode == "temporal" else IntervalJoin(keyed, join_columns)
    if isinstance(keyed, EventSourcedConfig):
        return EventSourced.from_config(keyed)
    return _keyed_process(keyed)


def _keyed_process(keyed: KeyedProcessConfig | SagaConfig | SagaMonitorConfig) -> KeyedProcess:
    """A process function: the user's, a saga's, or a choreography monitor."""
    if isinstance(keyed, SagaConfig):
        process = SagaProcess(keyed)  # its state names steps by position: another list of steps reads it otherwise
        steps = ",".join(step.name for step in process.saga.steps)
        return KeyedProcess(keyed.key, process, facts={"saga": keyed.saga, "steps": steps})
    if isinstance(keyed, SagaMonitorConfig):
        return KeyedProcess(keyed.key, ChoreographyMonitor(keyed))
    return KeyedProcess.from_config(keyed)
