"""Injected faults (pipelines/testing.py) fire once per run: a topology restored from a checkpoint of their epoch
or later runs without them; and no pipeline config can hold one."""

from __future__ import annotations

import pytest

from pipelines.config.pipeline import parse_config
from pipelines.errors import ConfigError
from pipelines.examples.orders import orders_pipeline
from pipelines.testing import CrashAt, FaultPlan, faults_after


def _with_faults(*epochs: int) -> FaultPlan:
    return tuple(CrashAt("aggregate-0", epoch) for epoch in epochs)


def test_a_fresh_start_keeps_every_fault() -> None:
    faults = _with_faults(4, 9)
    assert faults_after(faults, None) is faults


def test_a_restore_drops_the_faults_of_its_epoch_and_earlier() -> None:
    faults = _with_faults(4, 9)
    assert [fault.epoch for fault in faults_after(faults, 3)] == [4, 9]
    assert [fault.epoch for fault in faults_after(faults, 4)] == [9]
    assert faults_after(faults, 12) == ()


def test_a_crash_names_a_slot_and_an_epoch_that_exist() -> None:
    with pytest.raises(ValueError, match="write source-<n> or aggregate-<n>"):
        CrashAt("aggregate", 1)
    with pytest.raises(ValueError, match="epochs count from 1"):
        CrashAt("source-0", 0)
    with pytest.raises(ValueError, match="the points are before_commit and regroup"):
        CrashAt("source-0", 1, point="after_commit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only an aggregate is regrouped"):
        CrashAt("source-0", 1, point="regroup")
    assert CrashAt("stage1-aggregate-2", 1, point="regroup").slot == "stage1-aggregate-2"


def test_a_pipeline_config_holds_no_faults() -> None:
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    data["faults"] = [{"point": "before_commit", "slot": "aggregate-0", "epoch": 1}]
    with pytest.raises(ConfigError, match="faults: unknown field"):
        parse_config(data)
