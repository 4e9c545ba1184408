"""The faults of the fault benchmark (:mod:`benchmarks.faults`), each a :class:`Fault`: what it prepares before the
run, what it does once a checkpoint of the run is complete, and what it undoes after.

Network (through the loopback fault proxy every client connection takes):

- ``blackhole``: no byte moves for 10 s, connections stay open;
- ``reset``: every connection aborted, new ones reset for 2 s;
- ``delayed_end_txn``: every transaction commit (EndTxn) held 5 s, beyond the request timeout, until 3 were held;
- ``slow_sink_quota``: the broker's producer quota (``producer_byte_rate``) holds eventray's producers to
  64 KiB/s for the rest of the run (the input's producer is exempt): the sink becomes the bottleneck.

Broker: ``bounce_clean`` / ``bounce_hard`` stop it (SIGTERM / SIGKILL) for 10 s, ``_45s`` for 45 s, and start it
again on the same ports with its data.

Processes: ``sigstop_source`` / ``sigstop_aggregate`` stop (SIGSTOP) one actor process of that kind and leave it
stopped, as a hung process, until the Supervisor's watchdog kills it (``detected_s``: from the stop to its death;
``restored_s``: to the restored topology's first checkpoint).

Storage:

- ``storage_read_error``: the newest checkpoint's metadata unreadable (a directory in its place) for 1 s while a
  killed aggregate makes the Supervisor restore it: its reads are tried again, not skipped for an older epoch;
- ``disk_full``: a state file of a later epoch written to ``/dev/full`` (ENOSPC): the run stops naming the file;
  the space is freed and the pipeline run again, resuming from the last complete checkpoint;
- ``location_changed``: the marker topic holds an earlier checkpoint location's markers at epoch 1,000 (in the
  format before lineages and in another lineage) and aggregate-0 crashes before committing an early epoch (a
  reused epoch number): recovery must redo it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import ray

from benchmarks.measure import actor_processes
from cluster.kafka_dev import DevBrokerConfig, set_producer_quota, start_broker, stop_broker
from cluster.kafka_dev.fault_proxy import END_TXN_API_KEY, FaultProxy
from pipelines.config.pipeline import PipelineConfig
from pipelines.testing import CrashAt, FaultPlan
from tests.chaos.chaos_tools import checkpointed_progress, leave_markers_of_an_earlier_location

__all__ = ["FAULTS", "Fault", "FaultRun"]

OUTAGE_S = 10.0
LONG_OUTAGE_S = 45.0
RESET_S = 2.0
END_TXN_HELD_S, END_TXN_HELD = 5.0, 3
UNREADABLE_S = 1.0  # within the checkpoint store's read retries (0.25 + 0.5 + 1 s)
STOPPED_AT_MOST_S = 60.0  # a stopped process the watchdog has not killed by then is resumed, and the run fails
SINK_QUOTA_BYTES_PER_S = 64 * 1024
EXEMPT_CLIENT = "eventray-produce"  # the input's producer (cluster/commands/produce.py)


@dataclass
class FaultRun:
    """One run under a fault: what a fault acts on, and the figures it adds to the run's row."""

    proxy: FaultProxy
    broker: DevBrokerConfig
    config: PipelineConfig
    checkpoints: Path  # the checkpoint location (the pipeline writes under checkpoints/<name>)
    bootstrap: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def store_dir(self) -> Path:
        return self.checkpoints / self.config.name


def _nothing(_run: FaultRun) -> None:
    return None


def _no_crash(_run: FaultRun) -> FaultPlan:
    return ()


@dataclass(frozen=True)
class Fault:
    """``apply`` starts the fault once a checkpoint is complete and returns once it is over (or once the input may
    flow on); ``prepare`` runs before the pipeline and returns the crashes it plans; ``after_stop`` runs when the
    fault stopped the run (``stops_the_run``), before it is run again."""

    apply: Callable[[FaultRun], None]
    prepare: Callable[[FaultRun], FaultPlan] = _no_crash
    stops_the_run: bool = False
    after_stop: Callable[[FaultRun], None] = _nothing


def _blackhole(run: FaultRun) -> None:
    run.proxy.blackhole()
    time.sleep(OUTAGE_S)
    run.proxy.heal()


def _reset(run: FaultRun) -> None:
    run.proxy.reset()
    time.sleep(RESET_S)
    run.proxy.heal()


def _delayed_end_txn(run: FaultRun) -> None:
    run.proxy.hold_requests(END_TXN_API_KEY, END_TXN_HELD_S)
    run.proxy.heal_after_held_requests(END_TXN_HELD)


def _bounce(run: FaultRun, *, hard: bool, outage_s: float) -> None:
    stop_broker(run.broker.state_dir, hard=hard)
    time.sleep(outage_s)
    start_broker(run.broker)


def _sigstop(run: FaultRun, title: str) -> None:
    """``detected_s``: from the stop to Ray's actor table saying the actor is dead (the watchdog killed it, and
    its calls fail: the Supervisor's recovery starts); ``restored_s``: to the first complete checkpoint of the
    restored topology (processing again, its first epoch committed); ``gone_s``: to the process's end (Ray
    force-kills a process that cannot answer its kill a few seconds later). Each is polled every 0.1 s; a
    figure not seen within STOPPED_AT_MOST_S fails the run."""
    victim = random.Random(3).choice(actor_processes(title))
    incarnation = checkpointed_progress(run.checkpoints).incarnation
    checks: dict[str, Callable[[], bool]] = {
        "detected_s": lambda: _dead_in_ray(victim.pid),
        "restored_s": lambda: checkpointed_progress(run.checkpoints).incarnation != incarnation,
        "gone_s": lambda: _gone(victim),
    }
    stopped_at = time.monotonic()
    victim.suspend()
    while checks and time.monotonic() - stopped_at < STOPPED_AT_MOST_S:
        for figure, check in list(checks.items()):
            if check():
                run.figures[figure] = round(time.monotonic() - stopped_at, 2)
                del checks[figure]
        time.sleep(0.1)
    if checks:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.resume()
        raise RuntimeError(f"{title} stopped for {STOPPED_AT_MOST_S:.0f} s: not seen {', '.join(checks)}")


def _gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _dead_in_ray(pid: int) -> bool:
    """Whether Ray's actor table (the GCS; a developer API) has the actor of process ``pid`` dead."""
    table = ray._private.state.actors()  # noqa: SLF001
    return any(int(actor["Pid"]) == pid and actor["State"] == "DEAD" for actor in table.values())


def _unreadable_checkpoint(run: FaultRun) -> None:
    """The newest metadata becomes a symlink to itself (every open fails with ELOOP, where the file is known to
    exist) and back, each by an atomic rename, so no read ever finds it missing (that is an incomplete epoch)."""
    metadata = sorted(run.store_dir.glob("epoch-*/_checkpoint.json"))[-1]
    kept, looping = metadata.with_name("_checkpoint.json.kept"), metadata.with_name("_checkpoint.json.loop")
    os.link(metadata, kept)
    looping.symlink_to(metadata.name)
    looping.replace(metadata)  # metadata -> itself: a loop
    try:
        actor_processes("ray::AggregateActor")[0].kill()
        time.sleep(UNREADABLE_S)
    finally:
        kept.replace(metadata)
    run.figures["unreadable_epoch"] = int(metadata.parent.name.removeprefix("epoch-"))


def _full_disk_path(run: FaultRun) -> Path:
    return run.store_dir / f"epoch-{checkpointed_progress(run.checkpoints).epoch + 2:06d}" / "state-aggregate-0.arrow"


def _fill_disk(run: FaultRun) -> None:
    full = _full_disk_path(run)
    full.parent.mkdir(exist_ok=True)
    full.symlink_to("/dev/full")  # every write answers ENOSPC, as a full disk does
    run.figures["full_path"] = str(full)


def _free_disk(run: FaultRun) -> None:
    shutil.rmtree(Path(run.figures["full_path"]).parent)  # an incomplete epoch: no metadata names it


def _earlier_location(run: FaultRun) -> FaultPlan:
    asyncio.run(leave_markers_of_an_earlier_location(run.bootstrap, run.config.name, epoch=1_000))
    return (CrashAt("aggregate-0", epoch=3),)


def _sink_quota(run: FaultRun) -> None:
    """Every producer but the input's (each run has a broker of its own: nothing to lift afterwards)."""
    set_producer_quota(run.broker, 1 << 30, client_id=EXEMPT_CLIENT)
    set_producer_quota(run.broker, SINK_QUOTA_BYTES_PER_S)


FAULTS: dict[str, Fault] = {
    "none": Fault(_nothing),
    "blackhole": Fault(_blackhole),
    "reset": Fault(_reset),
    "delayed_end_txn": Fault(_delayed_end_txn),
    "slow_sink_quota": Fault(_sink_quota),
    "bounce_clean": Fault(partial(_bounce, hard=False, outage_s=OUTAGE_S)),
    "bounce_hard": Fault(partial(_bounce, hard=True, outage_s=OUTAGE_S)),
    "bounce_clean_45s": Fault(partial(_bounce, hard=False, outage_s=LONG_OUTAGE_S)),
    "bounce_hard_45s": Fault(partial(_bounce, hard=True, outage_s=LONG_OUTAGE_S)),
    "sigstop_source": Fault(partial(_sigstop, title="ray::SourceActor")),
    "sigstop_aggregate": Fault(partial(_sigstop, title="ray::AggregateActor")),
    "storage_read_error": Fault(_unreadable_checkpoint),
    "disk_full": Fault(_fill_disk, stops_the_run=True, after_stop=_free_disk),
    "location_changed": Fault(_nothing, prepare=_earlier_location),
}
