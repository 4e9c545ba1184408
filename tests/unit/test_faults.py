"""Injected faults fire once per run: a topology restored from a checkpoint of their epoch or later runs
without them."""

from __future__ import annotations

from actors.faults import faults_after
from pipelines.config import PipelineConfig, parse_config
from pipelines.orders import orders_pipeline


def _with_faults(*epochs: int) -> PipelineConfig:
    data = orders_pipeline().model_dump(mode="json", by_alias=True)
    data["faults"] = [{"point": "before_commit", "slot": "aggregate-0", "epoch": epoch} for epoch in epochs]
    return parse_config(data)


def test_a_fresh_start_keeps_every_fault() -> None:
    config = _with_faults(4, 9)
    assert faults_after(config, None) is config


def test_a_restore_drops_the_faults_of_its_epoch_and_earlier() -> None:
    config = _with_faults(4, 9)
    assert [fault.epoch for fault in faults_after(config, 3).faults] == [4, 9]
    assert [fault.epoch for fault in faults_after(config, 4).faults] == [9]
    assert faults_after(config, 12).faults == []
