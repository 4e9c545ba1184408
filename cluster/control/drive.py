"""What the Supervisor does on each tick of a running topology, decided from plain state (no actor, no clock).

The Supervisor observes a :class:`Tick` (the clocks, whether an epoch or an autoscaler tick is due, whether a
stop was asked for) and carries out the :class:`Step` list :meth:`DriveSchedule.steps` returns, in order:

1. ``discover``: look for partitions added to Kafka inputs, every ``partition_discovery_s`` (the smallest of the
   Kafka inputs'), never in a bounded run (it reads the partitions it started with) nor after the freeze;
2. ``checkpoint``: run an epoch when one is due;
3. ``autoscale``: one policy tick when due, not once the sources are frozen or stopped (nor in the tick that
   freezes or stops them: a run that is ending is not rescaled);
4. ``freeze``: once, when the run has lasted ``runtime.duration_s``: sources stop reading new records and drain;
5. ``stop``: once, when a stop was asked for.

The Supervisor's tests drive it tick by tick with chosen clocks (tests/unit/test_drive_schedule.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pipelines.config.kafka import KafkaSourceConfig
from pipelines.config.pipeline import PipelineConfig

__all__ = ["DriveSchedule", "Step", "Tick"]


class Step(Enum):
    DISCOVER = "discover"
    CHECKPOINT = "checkpoint"
    AUTOSCALE = "autoscale"
    FREEZE = "freeze"
    STOP = "stop"


@dataclass(frozen=True)
class Tick:
    """What the Supervisor observed at one tick: its monotonic clock, the seconds since the run started, and
    whether an epoch, an autoscaler tick or a stop is due."""

    monotonic_s: float
    elapsed_s: float
    epoch_due: bool
    autoscale_due: bool
    stop_requested: bool


@dataclass
class DriveSchedule:
    """The running topology's schedule (see the module docstring); ``discovery_s`` None: no discovery."""

    duration_s: float | None
    discovery_s: float | None
    last_discovery_s: float
    frozen: bool = False
    stopped: bool = False

    @classmethod
    def of(cls, config: PipelineConfig, monotonic_s: float) -> DriveSchedule:
        """The schedule of ``config``'s run, its topology started at ``monotonic_s``."""
        bounded = config.runtime.max_events is not None  # a bounded run reads the partitions it started with
        discovering = [i.source.partition_discovery_s for i in config.all_inputs
                       if isinstance(i.source, KafkaSourceConfig)]  # fmt: skip
        discovery_s = min(discovering) if discovering and not bounded else None
        return cls(config.runtime.duration_s, discovery_s, monotonic_s)

    def steps(self, tick: Tick) -> list[Step]:
        """The steps of this tick, in order; the freeze and the stop are returned once each."""
        steps: list[Step] = []
        discovery_due = self.discovery_s is not None and tick.monotonic_s - self.last_discovery_s >= self.discovery_s
        if discovery_due and not self.frozen:
            self.last_discovery_s = tick.monotonic_s
            steps.append(Step.DISCOVER)
        if tick.epoch_due:
            steps.append(Step.CHECKPOINT)
        freeze = not self.frozen and self.duration_s is not None and tick.elapsed_s >= self.duration_s
        stop = tick.stop_requested and not self.stopped
        self.frozen, self.stopped = self.frozen or freeze, self.stopped or stop
        if tick.autoscale_due and not (self.frozen or self.stopped):  # no rescale of a run that is ending
            steps.append(Step.AUTOSCALE)
        steps += [Step.FREEZE] if freeze else []
        steps += [Step.STOP] if stop else []
        return steps
