"""``eventray lag CONFIG [--watch]``: consumer lag per partition, from outside the running pipeline.

Kafka sources: the pipeline's committed offsets (its group id) against the log end offsets, as
``kafka-consumer-groups --describe`` shows them. Generator sources: the last checkpoint's offsets against the
generator's end offsets at this moment (the generator's log grows with wall time from the run's start).
Input rates need two samples: ``--watch`` refreshes the table every ``--interval-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from actors.kafka.admin import committed_offsets, end_offsets
from cluster.commands.run_config import load_run_config
from cluster.control.lag import LagSamples, LagState, PartitionSample, observe, render_lag_table
from pipelines.config.kafka import KafkaSourceConfig, resolve_kafka_secrets
from pipelines.config.pipeline import GeneratorSourceConfig, NamedInput, PipelineConfig, with_paths_resolved
from pipelines.config.secrets import resolve_checkpoint_key
from pipelines.errors import ConfigError
from pipelines.io.rate_profile import RateProfile
from pipelines.stages.topology import input_of, local_partition
from pipelines.state.checkpoint_store import CheckpointStore, open_checkpoint_store

__all__ = ["add_lag_command", "lag_samples"]

log = logging.getLogger(__name__)


async def lag_samples(config: PipelineConfig, now_s: float) -> LagSamples:
    """One sample of every partition's log end and processed offset, for every input."""
    partitions: list[PartitionSample] = []
    refusals: list[ConfigError] = []
    for spec in config.all_inputs:
        try:
            partitions += await _input_samples(config, spec, now_s)
        except ConfigError as refused:  # noqa: PERF203 - once per input: the others still have lag to show
            refusals.append(refused)
    if refusals and not partitions:
        raise refusals[0]
    for skipped in refusals:
        log.warning("%s", skipped)
    return LagSamples(partitions=tuple(partitions), actors=())


async def _input_samples(config: PipelineConfig, spec: NamedInput, now_s: float) -> list[PartitionSample]:
    source = spec.source
    if isinstance(source, KafkaSourceConfig):
        assert config.kafka is not None
        connection = resolve_kafka_secrets(config.kafka, os.environ)
        ends = await end_offsets(connection, source.topic)
        committed = await committed_offsets(connection, source.topic, config.group_id)
        return [PartitionSample(source.topic, p, end, committed.get(p) or 0) for p, end in sorted(ends.items())]
    if isinstance(source, GeneratorSourceConfig) and config.checkpoint is not None:
        checkpoint = _checkpoints(config).latest()
        if checkpoint is None:
            raise ConfigError(f"no checkpoint of {config.name!r} under {config.checkpoint.uri}: is it running?")
        elapsed_s = max(0.0, now_s - checkpoint.started_at_s)
        per_partition = (source.rate_per_s or 0.0) / source.partitions
        arrived = RateProfile(per_partition, source.bursts).arrived(elapsed_s) if per_partition else 0.0
        name = "generator" if len(config.all_inputs) == 1 else f"generator:{spec.name}"
        return [
            PartitionSample(name, local_partition(p), max(int(arrived), position), position)
            for p, position in sorted(checkpoint.positions.items())
            if input_of(p) == spec.index
        ]
    raise ConfigError(
        f"eventray lag reads Kafka sources, and generator sources with checkpoints; {spec.path or ''}source is "
        f"{source.type}"
    )


def _lag(args: argparse.Namespace) -> int:
    config = with_paths_resolved(load_run_config(args), Path.cwd())
    console = Console()
    state: LagState | None = None
    samples = asyncio.run(lag_samples(config, time.time()))
    observations, state = observe(samples, state, time.time())
    if not args.watch:
        console.print(render_lag_table(observations))
        return 0
    with Live(render_lag_table(observations), console=console, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(args.interval_s)
                samples = asyncio.run(lag_samples(config, time.time()))
                observations, state = observe(samples, state, time.time())
                live.update(render_lag_table(observations))
        except KeyboardInterrupt:
            return 0


def add_lag_command(commands: Any) -> None:
    lag = commands.add_parser("lag", help="consumer lag per partition (records, seconds, input rate)")
    lag.add_argument("config", help="pipeline config (YAML)")
    lag.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config field")
    lag.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    lag.add_argument("--interval-s", type=float, default=2.0, help="refresh interval with --watch")
    lag.set_defaults(func=_lag, max_events=None, duration_s=None)


def _checkpoints(config: PipelineConfig) -> CheckpointStore:
    """The run's checkpoint store, with its encryption key (if any) read from the environment."""
    resolved = resolve_checkpoint_key(config, os.environ)
    store = open_checkpoint_store(resolved.checkpoint, config.name)
    assert store is not None  # callers ask only for pipelines with checkpoints
    return store
