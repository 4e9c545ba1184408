"""Running a pipeline from a driver process: the code behind ``eventray run`` and ``python -m cluster.examples.X``."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from actors.kafka.access import check_kafka_access
from cluster.control.handles import SupervisorHandle, actor_died, kill_named_actors
from cluster.control.ray_runtime import connect
from cluster.control.remote import remote_supervisor
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.supervisor import Supervisor
from cluster.kafka_dev import run_blocking
from pipelines.config.pipeline import PipelineConfig, with_paths_resolved
from pipelines.config.secrets import config_for_cluster, resolve_secrets
from pipelines.stages.plan import compile_pipeline
from pipelines.testing import FaultPlan

__all__ = ["run_pipeline"]

ProgressCallback = Callable[[RunProgress], None]
StopCondition = Callable[[RunProgress], bool]
log = logging.getLogger(__name__)


def run_pipeline(
    config: PipelineConfig,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
    poll_s: float = 0.5,
    stop_when: StopCondition | None = None,
    faults: FaultPlan = (),
) -> RunSummary:
    """Run ``config`` to its end on an embedded Ray (``address`` None) or on the cluster at ``address``.

    Ctrl-C (KeyboardInterrupt) stops reading, finishes in-flight batches, emits and flushes, and returns the
    summary with ``stopped_early``; a second Ctrl-C abandons the run. ``stop_when`` ends the run the same way
    (a drain: in-flight batches finish, a final checkpoint records where reading stopped) the first time it
    returns True for the progress polled every ``poll_s``: a run bounded by a condition rather than by its input,
    such as "after the faults planned for it" in the chaos suite. ``faults``: crashes a test plans
    (:mod:`pipelines.testing`).
    """
    compile_pipeline(config)  # a wrong config fails here, before Ray starts
    written = with_paths_resolved(config, Path.cwd())
    resolved = with_resolved_secrets(written)  # a missing secret too
    if resolved.kafka is not None:  # a TLS or SASL refusal fails here too, naming its cause
        run_blocking(check_kafka_access(resolved.kafka))  # also from a notebook, whose event loop is running
    config = config_for_cluster(written, resolved)  # runtime.secrets: environment keeps them out of Ray
    connection = connect(address)
    try:
        run_id = secrets.token_hex(3)
        restarts = 0
        while True:
            try:
                attempt_id = f"{run_id}s{restarts}" if restarts else run_id
                return _supervise(config, attempt_id, on_progress, poll_s, stop_when, faults)
            except Exception as error:  # noqa: PERF203 - one restart per Supervisor death, not a hot loop
                if not _restartable(config, error, restarts):
                    raise
                restarts += 1
                # its actors share its fate in Ray; this only makes sure none is still writing
                kill_named_actors(f"{config.name}-", run_id)
                log.warning("the Supervisor of %s died (%s); restarting it from its checkpoint", config.name, error)
    finally:
        if connection.embedded:
            connection.close()


def _supervise(
    config: PipelineConfig,
    run_id: str,
    on_progress: ProgressCallback | None,
    poll_s: float,
    stop_when: StopCondition | None,
    faults: FaultPlan,
) -> RunSummary:
    actor = remote_supervisor(Supervisor, f"{config.name}-{run_id}-supervisor").remote(config, run_id, None, faults)
    supervisor = SupervisorHandle(actor)
    supervisor.start()
    try:
        if _poll(supervisor, on_progress, poll_s, stop_when):
            supervisor.stop()
            _poll(supervisor, on_progress, poll_s, None)
    except KeyboardInterrupt:
        supervisor.stop()
        _poll(supervisor, on_progress, poll_s, None)
    try:
        return supervisor.result()  # type: ignore[no-any-return]
    finally:
        supervisor.shutdown()


def _restartable(config: PipelineConfig, error: Exception, restarts: int) -> bool:
    """A dead Supervisor (not a failed pipeline) is replaced while checkpoints allow a restore."""
    checkpoint = config.checkpoint
    return checkpoint is not None and actor_died(error) and restarts < checkpoint.max_recoveries


def with_resolved_secrets(config: PipelineConfig) -> PipelineConfig:
    """Bootstrap servers, SASL passwords and mask keys from the environment, read once here in the driver."""
    return resolve_secrets(config, os.environ)


def _poll(
    supervisor: SupervisorHandle, on_progress: ProgressCallback | None, poll_s: float, stop_when: StopCondition | None
) -> bool:
    """Wait for the run to end (False) or for ``stop_when`` to hold (True)."""
    while not supervisor.wait(poll_s):
        if on_progress is None and stop_when is None:
            continue
        progress = supervisor.progress()
        if on_progress is not None:
            on_progress(progress)
        if stop_when is not None and stop_when(progress):
            return True
    return False
