"""Running a pipeline from a driver process: the code behind ``eventray run`` and ``python -m cluster.examples.X``."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from actors.kafka.access import check_kafka_access
from cluster.control.handles import SupervisorHandle, actor_died, kill_named_actors
from cluster.control.ray_runtime import connect
from cluster.control.recovery_policy import Failure, RecoveryPolicy
from cluster.control.remote import remote_supervisor
from cluster.control.run_report import RunProgress, RunSummary
from cluster.control.supervisor import PipelineFailed, Supervisor
from cluster.kafka_dev import run_blocking
from pipelines.config.pipeline import PipelineConfig, with_paths_resolved
from pipelines.config.secrets import config_for_cluster, resolve_secrets
from pipelines.errors import FatalError
from pipelines.stages.plan import compile_pipeline
from pipelines.state.checkpoint_store import open_checkpoint_store
from pipelines.testing import FaultPlan

__all__ = ["restart_wait_s", "run_pipeline", "supervisor_restarts"]

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
        policy = supervisor_restarts(config)
        while True:
            try:
                attempt_id = f"{run_id}s{restarts}" if restarts else run_id
                return _supervise(config, attempt_id, on_progress, poll_s, stop_when, faults)
            except Exception as error:  # noqa: PERF203 - one restart per Supervisor death, not a hot loop
                wait_s = restart_wait_s(policy, resolved, error, time.monotonic())
                if wait_s is None:
                    raise
                restarts += 1
                # its actors share its fate in Ray; this only makes sure none is still writing
                kill_named_actors(f"{config.name}-", run_id)
                log.warning("the Supervisor of %s died (%s); restarting it from its checkpoint in %.1f s",
                            config.name, error, wait_s)  # fmt: skip
                try:
                    time.sleep(wait_s)
                except KeyboardInterrupt:
                    raise PipelineFailed(
                        f"pipeline {config.name!r} stopped by Ctrl-C before its dead Supervisor was restarted; the "
                        "last checkpoint is kept: run again to resume from it"
                    ) from error
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
    try:  # shut down however the run ends, an on_progress or stop_when that raised included
        try:
            if _poll(supervisor, on_progress, poll_s, stop_when):
                supervisor.stop()
                _poll(supervisor, on_progress, poll_s, None)
        except KeyboardInterrupt:
            supervisor.stop()
            _poll(supervisor, on_progress, poll_s, None)
        return supervisor.result()  # type: ignore[no-any-return]
    finally:
        supervisor.shutdown()


def supervisor_restarts(config: PipelineConfig) -> RecoveryPolicy | None:
    """The limit on replacing a dead Supervisor: the one the Supervisor applies to its actors' failures
    (checkpoint.max_recoveries within checkpoint.recovery_window_s, and as many without a checkpoint completed in
    between), so that a run of days survives Supervisor deaths spread over its life; None without checkpoints."""
    checkpoint = config.checkpoint
    if checkpoint is None:
        return None
    return RecoveryPolicy(checkpoint.max_recoveries, checkpoint.recovery_window_s)


def restart_wait_s(
    policy: RecoveryPolicy | None, resolved: PipelineConfig, error: Exception, now_s: float
) -> float | None:
    """How long to wait before replacing the Supervisor whose death ``error`` reports (the policy's backoff), or
    None when ``error`` is not a Supervisor's death, or the run has no checkpoints; raise :class:`PipelineFailed`
    when the policy's limit is reached. ``resolved``: the config with its secrets, whose checkpoint location is
    listed (nothing read) to see whether the dead Supervisor completed a checkpoint since the last death."""
    if policy is None or not actor_died(error):
        return None
    failure = Failure(recoverable=True, transient_kafka=False, actor_died=True,
                      epochs_completed=_completed_epochs(resolved, policy))  # fmt: skip
    verdict = policy.after(failure, now_s)
    if verdict.restore:
        return verdict.wait_s
    if policy.failed_in_a_row >= policy.max_recoveries:
        limit = f"{policy.failed_in_a_row} restarts in a row without a checkpoint completed"
    elif policy.window_s is None:
        limit = f"{policy.counted} restarts in the whole run (checkpoint.recovery_window_s: null)"
    else:
        limit = f"{policy.counted} restarts within checkpoint.recovery_window_s ({policy.window_s:g} s)"
    raise PipelineFailed(
        f"pipeline {resolved.name!r} failed: its Supervisor died again after {limit} (checkpoint.max_recoveries: "
        f"{policy.max_recoveries}); the last checkpoint is kept. Operator action: see why the Supervisor dies "
        "(`ray logs`, the head node's memory), then run again to resume from the checkpoint"
    ) from error


def _completed_epochs(resolved: PipelineConfig, policy: RecoveryPolicy) -> int:
    """The newest complete checkpoint's epoch; when the location cannot be listed, the count of the last death
    (no progress: a storage failure must not hide the Supervisor's death it is asked about)."""
    try:
        store = open_checkpoint_store(resolved.checkpoint, resolved.name)
        return store.latest_complete_epoch() if store is not None else 0
    except (OSError, FatalError) as error:
        log.warning("the checkpoints of %s cannot be listed (%s); counting no progress", resolved.name, error)
        return policy.completed_at_failure


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
