"""Rebuilding a view without a gap: ``eventray cqrs rebuild CONFIG VIEW``.

The rebuild is the pipeline of ``CONFIG`` under another name (``<name>-rebuild-<stamp>``): its own consumer group,
read from the earliest offset, and its own checkpoints (they are kept by pipeline name). Its owners publish to
the query router of the pipeline serving the view, standing by (``serve.rebuild_of``): queries are still answered
by the running pipeline. Once the rebuild has a complete checkpoint and its committed offsets are within
``max_lag`` records of the log ends, the router serves the view from the rebuild's owners (one switch: no query
sees no owner), and the pipeline that served it is stopped (a drain, as after Ctrl-C). The rebuild goes on
running in the process that started it: it is the view's pipeline from then on.

A read-your-writes query holds across the switch: a ``min_position`` the rebuild has not applied yet is waited
for by its owner. A ``latest`` answer can be up to ``max_lag`` records older just after the switch than the
answer just before it; a ``committed`` answer names the rebuild's checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from cluster.commands.lag import lag_samples
from cluster.control.ray_runtime import NAMESPACE, connect
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.runner import StopCondition, run_pipeline
from cluster.cqrs.router import SwitchRefused, router_name, served_as
from pipelines.config.kafka import KafkaSinkConfig, KafkaSourceConfig
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.secrets import resolve_checkpoint_key
from pipelines.errors import ConfigError
from pipelines.state.checkpoint_store import CheckpointStore, open_checkpoint_store

__all__ = ["Rebuilt", "Switchover", "rebuild_config", "rebuild_view", "served_by", "stop_pipeline"]

log = logging.getLogger(__name__)

_NAME_LIMIT = 63  # the pattern of a pipeline's name


def rebuild_config(config: PipelineConfig, view: str, stamp: str) -> PipelineConfig:
    """``config`` as the rebuild of ``view`` runs it: named ``<name>-rebuild-<stamp>``, reading every Kafka input
    from its earliest offset in its own consumer group until stopped, checkpointing under its own name, writing
    file sinks and dead letters to directories of its own (``<path>-rebuild-<stamp>``), and publishing to the
    router of the pipeline that serves the view. Raises :class:`ConfigError` for a config that cannot rebuild."""
    views = sorted(query.view for query in config.query_views.values())
    if view not in views:
        raise ConfigError(f"pipeline {config.name!r} serves no view {view!r}: its views are {views or 'none'} "
                          "(query.view of its keyed stages)")  # fmt: skip
    if not all(isinstance(spec.source, KafkaSourceConfig) for spec in config.all_inputs):
        types = sorted({spec.source.type for spec in config.all_inputs})
        raise ConfigError(f"a rebuild reads the view's events again from the log: every input must be a kafka "
                          f"source (this pipeline reads {types})")  # fmt: skip
    if config.checkpoint is None:
        raise ConfigError("checkpoint: a rebuild switches once its state is in a complete checkpoint; set "
                          "checkpoint.uri")  # fmt: skip
    suffix = f"-rebuild-{stamp}"
    group = f"{config.group_id}{suffix}"

    def replayed(source: Any) -> Any:
        return source.model_copy(update={"group_id": group, "start": "earliest", "start_timestamp_ms": None})

    def apart(output: Any) -> Any:  # a file sink or dead-letter directory of its own, beside the running one's
        path = getattr(output, "path", None)
        return output if path is None else output.model_copy(update={"path": f"{str(path).rstrip('/')}{suffix}"})

    # model_copy, not a dump and a parse: secrets (SecretStr) and derived fields stay as they are
    update: dict[str, Any] = {
        "name": f"{config.name[: _NAME_LIMIT - len(suffix)]}{suffix}",
        "serve": config.serve.model_copy(update={"rebuild_of": config.serve.rebuild_of or config.name}),
        "runtime": config.runtime.model_copy(update={"duration_s": None, "max_events": None}),  # until stopped
        "sinks": [apart(sink) for sink in config.sinks],
        "dead_letter": apart(config.dead_letter),
    }
    if config.inputs is None:
        update["source"] = replayed(config.source)
    else:
        update["inputs"] = {name: spec.model_copy(update={"source": replayed(spec.source)})
                            for name, spec in config.inputs.items()}  # fmt: skip
    return config.model_copy(update=update)


@dataclass(frozen=True)
class Rebuilt:
    """A rebuild's end: its run's summary, the pipeline it replaced (None: it never switched), and when."""

    summary: RunSummary
    previous: str | None
    switched_after_s: float | None


def rebuild_view(
    config: PipelineConfig,
    view: str,
    address: str | None,
    max_lag: int,
    report: Callable[[str], None],
    stop_when: StopCondition | None = None,
    stop_previous: bool = True,
    stamp: str | None = None,
) -> Rebuilt:
    """Rebuild ``view`` of the running pipeline ``config`` on the Ray cluster at ``address`` (or
    ``RAY_ADDRESS``), switch to it once caught up, and run it until Ctrl-C or ``stop_when``."""
    rebuild = rebuild_config(config, view, stamp or time.strftime("%Y%m%d%H%M%S", time.gmtime()))
    joined_already = ray.is_initialized()  # a driver that is connected (a test, a notebook) stays so
    connection = connect(address)
    try:
        if connection.embedded:
            raise ConfigError("a rebuild switches the views of a pipeline running on a Ray cluster: give --address "
                              "(or RAY_ADDRESS) of the cluster it runs on")  # fmt: skip
        router = rebuild.serve.rebuild_of or config.name
        serving = served_by(router)
        if ray.get(_router(router).served.remote()) != served_as(rebuild):
            raise ConfigError(f"the views of this config differ from those the query router of {router!r} serves "
                              "(a view, its key or its type, consistency, position or serve): a rebuild replaces a "
                              "view's projection, not what the view is; run the new view as a pipeline of its "
                              "own")  # fmt: skip
        report(f"view {view} is served by {serving.get(view) or 'no pipeline'}; rebuilding it in {rebuild.name} "
               f"(consumer group {rebuild.group_id}, from the earliest offsets)")  # fmt: skip
        topics = sorted({sink.topic for sink in rebuild.sinks if isinstance(sink, KafkaSinkConfig)})
        if topics:
            report(f"the rebuild writes its sinks from the start again: Kafka topics {topics} get every row once "
                   "more (a compacted changelog keyed by the view's key takes it; other readers see the rows "
                   "twice)")  # fmt: skip
        switchover = Switchover(rebuild, view, max_lag, report, stop_previous)
        summary = run_pipeline(rebuild, address, on_progress=switchover, stop_when=stop_when)
        return Rebuilt(summary, switchover.previous, switchover.switched_after_s)
    finally:
        if not joined_already:
            connection.close()


def served_by(router: str) -> dict[str, str | None]:
    """Each view of the router ``router`` (a pipeline's name) and the pipeline serving it; raises
    :class:`ConfigError` when no such router runs on the connected cluster."""
    return dict(ray.get(_router(router).serving.remote()))


def stop_pipeline(pipeline: str) -> int:
    """Ask the Supervisors of ``pipeline`` to stop (a drain: in-flight batches finish, a final checkpoint); return
    how many were asked. Its driver sees the run end and exits."""
    supervisor = re.compile(rf"{re.escape(pipeline)}-[0-9a-f]{{6}}(s[0-9]+)?-supervisor")  # cluster/control/runner.py
    names = [name for name in ray.util.list_named_actors() if supervisor.fullmatch(name)]
    for name in names:
        ray.get(ray.get_actor(name, namespace=NAMESPACE).stop.remote())
    return len(names)


@dataclass
class Caught:
    """How far the rebuild is: records between its committed offsets and the log ends, and its newest complete
    checkpoint (0: none yet)."""

    lag_records: int
    epoch: int


class Switchover:
    """Watches a rebuild's progress (as ``run_pipeline``'s ``on_progress``) and switches the view once the rebuild
    caught up (see the module docstring). ``report`` is told each step in words; ``stop_previous`` False leaves
    the pipeline that served the view running (it serves the view no more)."""

    def __init__(
        self,
        rebuild: PipelineConfig,
        view: str,
        max_lag: int,
        report: Callable[[str], None],
        stop_previous: bool = True,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert rebuild.serve.rebuild_of is not None  # made by rebuild_config
        self._rebuild = rebuild
        self._router = rebuild.serve.rebuild_of
        self._view = view
        self._max_lag = max_lag
        self._report = report
        self._stop_previous = stop_previous
        self._check_every_s = check_every_s
        self._clock = clock
        keyed = resolve_checkpoint_key(rebuild, os.environ)  # encrypted checkpoints: listing needs the key too
        self._store: CheckpointStore | None = open_checkpoint_store(keyed.checkpoint, rebuild.name)
        self._to_stop: str | None = None  # the pipeline switched from, until its Supervisor is asked to stop
        self._next_check_s = clock()
        self.previous: str | None = None  # the pipeline that served the view before the switch
        self.switched_after_s: float | None = None
        self.stopped = 0  # Supervisors of the previous pipeline asked to stop
        self._started_s = clock()

    def __call__(self, progress: RunProgress) -> None:
        if self._clock() < self._next_check_s or (self.switched_after_s is not None and self._to_stop is None):
            return
        self._next_check_s = self._clock() + self._check_every_s
        try:
            self._check(progress)
        except Exception as error:  # noqa: BLE001 - Kafka, Ray or the router failing here is tried at the next check
            self._report(f"the rebuild's check failed ({type(error).__name__}: {error}); trying again")

    def _check(self, progress: RunProgress) -> None:
        if self.switched_after_s is None:
            caught = self.caught()
            if caught.epoch == 0 or caught.lag_records > self._max_lag:
                self._report(f"rebuilding view {self._view} in {self._rebuild.name}: {progress.events_in} events "
                             f"read, {caught.lag_records} records behind the log ends at its last checkpoint "
                             f"(switches at {self._max_lag} or fewer)")  # fmt: skip
                return
            try:
                self.switch()
            except SwitchRefused as refused:  # its topology is recovering (its owners withdrawn): at the next check
                self._report(f"not switched yet: {refused}")
                return
        if self._to_stop is not None:
            self.stopped = stop_pipeline(self._to_stop)
            if self.stopped:  # none while the runner of that pipeline restarts its Supervisor: at the next check
                self._report(f"pipeline {self._to_stop} stops ({self.stopped} Supervisor(s) asked to drain)")
                self._to_stop = None

    def caught(self) -> Caught:
        samples = asyncio.run(lag_samples(self._rebuild, time.time()))
        lag = sum(max(0, p.end_offset - p.processed_offset) for p in samples.partitions)
        epoch = self._store.latest_complete_epoch() if self._store is not None else 0
        return Caught(lag, epoch)

    def switch(self) -> None:
        """Serve the view from the rebuild's owners, with the other views of the pipeline that served it which
        the rebuild has too, in one router call; then that pipeline is to stop."""
        previous, views = ray.get(_router(self._router).switch.remote(self._view, self._rebuild.name))
        self.previous, self.switched_after_s = previous, self._clock() - self._started_s
        self._report(f"views {', '.join(views)} are served by {self._rebuild.name} from now on (they were "
                     f"{previous or 'not served'}), {self.switched_after_s:.1f} s after the rebuild "
                     "started")  # fmt: skip
        if self._stop_previous and previous is not None and previous != self._rebuild.name:
            self._to_stop = previous


def _router(pipeline: str) -> Any:
    try:
        return ray.get_actor(router_name(pipeline), namespace=NAMESPACE)
    except ValueError:
        raise ConfigError(f"no query router of pipeline {pipeline!r} runs on this Ray cluster: run the pipeline "
                          "(eventray run CONFIG --address ...) before rebuilding its views") from None  # fmt: skip
