"""Replacing a dead Supervisor (cluster/control/runner.py): the limit the Supervisor applies to its actors,
checkpoint.max_recoveries within checkpoint.recovery_window_s and in a row without a checkpoint completed, read
from the run's real checkpoint store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ray.exceptions import ActorDiedError

from cluster.control.runner import restart_wait_s, supervisor_restarts
from cluster.control.supervisor import PipelineFailed
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.secrets import resolve_secrets
from pipelines.examples.orders import orders_pipeline
from pipelines.state.checkpoint_store import CheckpointStore
from tests.unit.test_checkpoint_store import checkpoint_of

DEATH = ActorDiedError()


def orders(tmp_path: Path, window_s: float | None = 600) -> PipelineConfig:
    config = orders_pipeline(checkpoint__uri=str(tmp_path / "checkpoints"), checkpoint__max_recoveries=3,
                             checkpoint__recovery_window_s=window_s)  # fmt: skip
    return resolve_secrets(config, os.environ)


def test_deaths_in_a_row_without_a_checkpoint_end_the_run_with_the_rule_named(tmp_path: Path) -> None:
    config = orders(tmp_path)
    policy = supervisor_restarts(config)

    waits = [restart_wait_s(policy, config, DEATH, now_s) for now_s in (0.0, 1_000.0, 2_000.0)]
    with pytest.raises(PipelineFailed, match=r"after 3 restarts in a row without a checkpoint completed") as failed:
        restart_wait_s(policy, config, DEATH, 3_000.0)

    assert waits == [0.0, 0.5, 1.0], "the first at once, then backing off"
    assert failed.value.__cause__ is DEATH
    assert "checkpoint.max_recoveries: 3" in str(failed.value) and "Operator action" in str(failed.value)


def test_deaths_within_the_window_end_the_run_even_with_checkpoints_between_them(tmp_path: Path) -> None:
    config = orders(tmp_path)
    policy = supervisor_restarts(config)
    store = CheckpointStore(str(tmp_path / "checkpoints"), config.name)

    for death in range(1, 4):
        store.commit(checkpoint_of(store, death))
        assert restart_wait_s(policy, config, DEATH, death * 100.0) == 0.0, "progress made: restarted at once"
    store.commit(checkpoint_of(store, 4))
    with pytest.raises(PipelineFailed, match=r"after 3 restarts within checkpoint.recovery_window_s \(600 s\)"):
        restart_wait_s(policy, config, DEATH, 400.0)


def test_deaths_spread_over_a_long_run_with_checkpoints_in_between_are_each_restarted(tmp_path: Path) -> None:
    """A run of days: a Supervisor death every 10 minutes, checkpoints completed in between, 3 allowed per 600 s."""
    config = orders(tmp_path)
    policy = supervisor_restarts(config)
    store = CheckpointStore(str(tmp_path / "checkpoints"), config.name)
    checkpoint_of(store, 1_000)  # an epoch begun, never completed: not progress

    waits = []
    for death in range(1, 11):
        store.commit(checkpoint_of(store, death))
        waits.append(restart_wait_s(policy, config, DEATH, death * 601.0))

    assert waits == [0.0] * 10


def test_without_a_window_the_limit_counts_the_whole_run(tmp_path: Path) -> None:
    config = orders(tmp_path, window_s=None)
    policy = supervisor_restarts(config)
    store = CheckpointStore(str(tmp_path / "checkpoints"), config.name)

    for death in range(1, 4):
        store.commit(checkpoint_of(store, death))
        assert restart_wait_s(policy, config, DEATH, death * 3_600.0) == 0.0
    store.commit(checkpoint_of(store, 4))
    with pytest.raises(PipelineFailed, match=r"after 3 restarts in the whole run"):
        restart_wait_s(policy, config, DEATH, 4 * 3_600.0)


def test_a_location_that_cannot_be_listed_counts_as_no_progress_not_as_a_new_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    config = orders(blocked)  # its checkpoints under a file: creating the location fails
    policy = supervisor_restarts(config)

    waits = [restart_wait_s(policy, config, DEATH, now_s) for now_s in (0.0, 1_000.0)]

    assert waits == [0.0, 0.5], "the deaths counted in a row: the backoff grows"


def test_what_is_not_a_supervisor_death_or_a_run_without_checkpoints_is_not_restarted(tmp_path: Path) -> None:
    config = orders(tmp_path)
    assert restart_wait_s(supervisor_restarts(config), config, ValueError("a bad config"), 0.0) is None
    without = config.model_copy(update={"checkpoint": None})
    assert supervisor_restarts(without) is None
    assert restart_wait_s(None, without, DEATH, 0.0) is None
