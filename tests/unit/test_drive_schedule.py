"""The Supervisor's schedule of a running topology, tick by tick, without Ray (cluster/control/drive.py)."""

from __future__ import annotations

from typing import Any

from cluster.control.drive import DriveSchedule, Step, Tick
from pipelines.config.pipeline import parse_config
from pipelines.examples.orders import orders_pipeline


def tick(at_s: float, *, epoch: bool = False, autoscale: bool = False, stop: bool = False) -> Tick:
    return Tick(monotonic_s=at_s, elapsed_s=at_s, epoch_due=epoch, autoscale_due=autoscale, stop_requested=stop)


def kafka_orders(**runtime: Any) -> Any:
    data = orders_pipeline().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["source"] = {"type": "kafka", "topic": "orders", "partition_discovery_s": 30}
    data["kafka"] = {}
    data["runtime"].update(runtime)
    return parse_config(data)


def test_a_duration_freezes_once_and_then_no_autoscaling_or_discovery() -> None:
    schedule = DriveSchedule.of(kafka_orders(duration_s=60, max_events=None), monotonic_s=0.0)

    assert schedule.steps(tick(5.0, epoch=True, autoscale=True)) == [Step.CHECKPOINT, Step.AUTOSCALE]
    assert schedule.steps(tick(30.0)) == [Step.DISCOVER]
    assert schedule.steps(tick(45.0)) == []
    assert schedule.steps(tick(60.0, epoch=True, autoscale=True)) == [Step.DISCOVER, Step.CHECKPOINT, Step.FREEZE]
    assert schedule.steps(tick(90.0, epoch=True, autoscale=True)) == [Step.CHECKPOINT], "drains: epochs go on"


def test_a_stop_is_taken_once_and_ends_autoscaling_while_epochs_go_on() -> None:
    schedule = DriveSchedule.of(kafka_orders(duration_s=None, max_events=None), monotonic_s=0.0)

    assert schedule.steps(tick(1.0, autoscale=True)) == [Step.AUTOSCALE]
    assert schedule.steps(tick(2.0, stop=True, autoscale=True)) == [Step.STOP], "a run that is ending is not rescaled"
    assert schedule.steps(tick(3.0, stop=True, autoscale=True, epoch=True)) == [Step.CHECKPOINT]


def test_a_bounded_run_and_a_run_without_kafka_inputs_discover_nothing() -> None:
    bounded = DriveSchedule.of(kafka_orders(duration_s=None, max_events=1_000), monotonic_s=0.0)
    generated = DriveSchedule.of(orders_pipeline(runtime__duration_s=None), monotonic_s=0.0)

    for schedule in (bounded, generated):
        assert schedule.discovery_s is None
        assert schedule.steps(tick(3_600.0)) == []


def test_discovery_is_paced_by_the_clock_not_by_the_ticks() -> None:
    schedule = DriveSchedule.of(kafka_orders(duration_s=None, max_events=None), monotonic_s=100.0)

    taken = [at for at in range(100, 200) if Step.DISCOVER in schedule.steps(tick(float(at)))]

    assert taken == [130, 160, 190]
