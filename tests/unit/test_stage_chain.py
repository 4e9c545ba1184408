"""The source stage and the keyed-stage runner as pure objects: no Ray, no actor, a manual clock.

The chain a pipeline runs (decode -> dead letters -> operators -> route by key group -> watermark valve ->
keyed operator -> emit) is driven here batch by batch, on the orders input and on dirty input written by hand,
and checked against an independent recomputation (:mod:`tests.reference`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipelines.config.kafka import CircuitBreakerConfig
from pipelines.config.pipeline import PipelineConfig
from pipelines.config.saga import SagaConfig
from pipelines.config.secrets import resolve_secrets
from pipelines.config.state import KeyedProcessConfig
from pipelines.errors import ConfigError, PipelineHalted
from pipelines.eventtime.clock import ManualClock
from pipelines.examples.orders import orders_pipeline
from pipelines.io.records import RawBatch
from pipelines.sagas.definition import Saga
from pipelines.stages.circuit_breaker import CircuitBreaker
from pipelines.stages.keyed_runner import KeyedStageRunner
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.source_stage import SourceStage
from pipelines.stages.topology import partition_limits
from pipelines.state.keygroups import key_group_of
from pipelines.state.process_function import ProcessContext
from pipelines.testing import CollectingSink, InProcessOwners, run_stages
from tests.reference import reference_orders
from tests.unit.test_saga_machine import step

START_TIME_MS = 1_767_225_600_000
EVENTS = 40_000


class Runners(InProcessOwners):
    """The runners as one sender's downstream, recording every send and checking that no watermark goes back."""

    def __init__(self, runners: list[KeyedStageRunner]) -> None:
        super().__init__(runners)
        self.sent: list[tuple[int, int, int, int | None]] = []  # (owner, sender, rows, watermark)

    async def send(
        self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> None:
        previous = next((w for o, s, _, w in reversed(self.sent) if (o, s) == (owner, sender) and w is not None), None)
        assert watermark_ms is None or previous is None or watermark_ms >= previous, "a watermark went back"
        self.sent.append((owner, sender, 0 if batch is None else batch.num_rows, watermark_ms))
        await super().send(owner, sender, batch, watermark_ms, trace_context)


def orders(tmp_path: Path, **overrides: Any) -> PipelineConfig:
    config = orders_pipeline(
        runtime__max_events=EVENTS,
        runtime__duration_s=None,
        source__rate_per_s=None,
        source__start_time_ms=START_TIME_MS,
        tracing__enabled=False,
        dead_letter__path=str(tmp_path / "dead"),
        sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
        **overrides,
    )
    return resolve_secrets(config, os.environ)


def owner_of_group(config: PipelineConfig, owners: int) -> list[int]:
    return [group % owners for group in range(config.runtime.max_key_groups)]


@pytest.mark.parametrize(("senders", "owners"), [(1, 1), (2, 3), (3, 4)])
def test_the_chain_equals_the_reference_for_any_number_of_senders_and_owners(
    tmp_path: Path, senders: int, owners: int
) -> None:
    config = orders(tmp_path, aggregate__window__size_ms=1_000)  # 40,000 events span a few seconds of event time
    run = run_stages(config, senders=senders, owners=owners, batch_size=500)
    results, dead, late = run.results, run.dead_letters, run.late

    source = config.source
    assert source is not None and source.type == "generator"
    expected, invalid = reference_orders(source, partition_limits(source.partitions, EVENTS), START_TIME_MS, 1_000)
    actual = {(r["customer_id"], r["window_start_ms"]): (r["orders"], r["revenue_cents"]) for r in results.rows()}
    assert actual == {key: (value["orders"], value["revenue_cents"]) for key, value in expected.items()}
    assert len(results.rows()) == len(expected), "each window is emitted once"
    assert len(dead.rows()) == invalid > 0
    assert late.rows() == []
    assert run.events_in == EVENTS
    assert run.closed_before_the_end > len(expected) // 4, "the watermark, not the end of input, closes windows"


def test_run_stages_refuses_what_it_cannot_read_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^source: a generator never ends; set runtime.max_events"):
        run_stages(orders(tmp_path).model_copy(update={"runtime": orders(tmp_path).runtime.model_copy(
            update={"max_events": None})}))  # fmt: skip


def raw_batch(payloads: list[str], partition: int = 0, first_offset: int = 0) -> RawBatch:
    count = len(payloads)
    return RawBatch(
        topic="orders",
        partition=partition,
        offsets=pa.array(range(first_offset, first_offset + count), pa.int64()),
        payloads=pa.array([p.encode() for p in payloads], pa.binary()),
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )


def order(customer: str, amount: object, time_ms: int, event_type: str = "OrderCreated") -> str:
    return json.dumps(
        {"event_id": f"e-{customer}-{time_ms}", "event_type": event_type, "event_time_ms": time_ms,
         "customer_id": customer, "amount_cents": amount, "email": "a@example.com"}
    )  # fmt: skip


def test_dirty_input_is_dead_lettered_once_with_its_reason_and_the_rest_reaches_the_owner_of_its_key(
    tmp_path: Path,
) -> None:
    config = orders(tmp_path)
    dead, late, results = CollectingSink(), CollectingSink(), CollectingSink()
    runners = Runners(
        [KeyedStageRunner(config, 1, sinks=[results], late_output=late, carry_trace=False) for _ in range(3)]
    )
    stage = SourceStage(compile_pipeline(config), dead_letter=dead, backlogs=lambda: {0: 5}, clock=ManualClock())
    stage.route_to(runners, {0: owner_of_group(config, 3)})
    stage.watermarks.opened(0)
    t = START_TIME_MS
    payloads = [
        order("c1", 100, t),
        "{not json",
        order("c2", "12x", t + 1),  # a mistyped amount
        order("c3", 300, t + 2, event_type="OrderShipped"),  # fails the schema's check
        json.dumps({"event_type": "OrderCreated", "customer_id": "c4"}),  # required fields missing
        order("c5", 500, t + 5_000),
        order("c1", 700, t + 3),
    ]

    handled = asyncio.run(stage.handle(raw_batch(payloads)))

    reasons = {letter["offset"]: letter["reason"] for letter in dead.rows()}
    assert sorted(reasons) == [1, 2, 3, 4] and len(dead.rows()) == 4
    assert reasons[1].startswith("undecodable JSON")
    assert "'amount_cents' must be int64" in reasons[2]
    assert reasons[3].startswith("check failed: event_type in")
    assert reasons[4] == "required field 'event_id' is missing or null"
    assert (handled.events_in, handled.events_out, handled.dead_lettered) == (7, 3, 4)
    routed = [(owner, rows) for owner, _, rows, _ in runners.sent if rows]
    by_customer: dict[int, int] = defaultdict(int)
    for customer, count in (("c1", 2), ("c5", 1)):
        by_customer[key_group_of(customer, config.runtime.max_key_groups) % 3] += count
    assert sorted(routed) == sorted(by_customer.items())
    disorder = config.aggregate.max_out_of_order_ms if config.aggregate else 0
    assert disorder > 0 and {watermark for _, _, _, watermark in runners.sent} == {t + 5_000 - disorder}


def test_the_circuit_breaker_halts_the_stage_and_names_the_place(tmp_path: Path) -> None:
    config = orders(tmp_path)
    breaker = CircuitBreaker(CircuitBreakerConfig(max_consecutive_invalid=5), "orders/source-0")
    dead = CollectingSink()
    stage = SourceStage(
        compile_pipeline(config), dead_letter=dead, sinks=[CollectingSink()], backlogs=lambda: {0: 0}, breaker=breaker
    )
    stage.watermarks.opened(0)

    with pytest.raises(PipelineHalted, match="orders/source-0: 6 invalid events in a row"):
        asyncio.run(stage.handle(raw_batch(["{"] * 6)))
    assert len(dead.rows()) == 6, "what tripped the breaker is dead-lettered first"


def test_an_idle_partition_stops_holding_the_watermark_once_the_clock_passes_its_timeout(tmp_path: Path) -> None:
    config = orders(tmp_path, aggregate__idle_timeout_ms=2_000)
    clock = ManualClock()
    backlogs = {0: 0, 1: 0}
    runners = Runners(
        [KeyedStageRunner(config, 1, sinks=[CollectingSink()], late_output=CollectingSink(), carry_trace=False)]
    )
    stage = SourceStage(compile_pipeline(config), dead_letter=CollectingSink(), backlogs=lambda: backlogs, clock=clock)
    stage.route_to(runners, {0: owner_of_group(config, 1)})
    stage.watermarks.opened(0)
    stage.watermarks.opened(1)
    asyncio.run(stage.handle(raw_batch([order("c1", 100, START_TIME_MS + 9_000)], partition=0)))
    first = runners.sent[-1][3]
    assert first is not None and first < 0, "partition 1 has no event yet: it holds the watermark"

    clock.advance(1.5)
    asyncio.run(stage.route_watermark())
    assert len(runners.sent) == 1, "before the timeout the watermark has not moved, so nothing is sent"
    backlogs[0] = 4  # partition 0 has more to read: it is never idle
    clock.advance(0.5)
    asyncio.run(stage.route_watermark())
    disorder = config.aggregate.max_out_of_order_ms if config.aggregate else 0
    assert len(runners.sent) == 2 and runners.sent[-1][3] == START_TIME_MS + 9_000 - disorder, "partition 1 is idle"


def test_late_rows_and_rows_without_event_time_go_to_the_late_output_with_their_reason(tmp_path: Path) -> None:
    config = orders(tmp_path)
    results, late = CollectingSink(), CollectingSink()
    runner = KeyedStageRunner(config, 2, sinks=[results], late_output=late, carry_trace=False)
    schema = compile_pipeline(config).stage_schema
    t = START_TIME_MS

    def batch(rows: list[tuple[str, int, int | None]]) -> pa.RecordBatch:
        columns: dict[str, list[Any]] = {name: [None] * len(rows) for name in schema.names}
        columns["customer_id"] = [customer for customer, _, _ in rows]
        columns["amount_cents"] = [amount for _, amount, _ in rows]
        columns["_timestamp"] = [at for _, _, at in rows]
        columns["_offset"] = list(range(len(rows)))
        columns["_partition"] = [0] * len(rows)
        return pa.RecordBatch.from_pydict(columns, schema=schema)

    runner.add(0, batch([("c1", 100, t + 1_000)]), t + 10_500)
    assert results.rows() == [], "the minimum over senders holds the window: sender 1 sent nothing yet"
    runner.add(1, batch([("c1", 50, t + 2_000)]), t + 10_200)
    assert [(r["orders"], r["revenue_cents"]) for r in results.rows()] == [(2, 150)]
    runner.add(1, batch([("c1", 7, t + 3_000), ("c2", 9, None)]), t + 10_300)

    letters = late.rows()
    assert [(letter["error_type"], json.loads(letter["payload"])["amount_cents"]) for letter in letters] == [
        ("late", 7),
        ("invalid", 9),
    ]
    assert "window had closed" in letters[0]["reason"] and letters[1]["reason"] == "event has no event time"
    assert runner.late_events == 1 and runner.events_in == 4


class RemindIn5s:
    """A process function for the test: a processing-time timer 5 s after each row's event time."""

    def process(self, key: Any, rows: pa.Table, ctx: ProcessContext) -> None:
        ctx.timers.register_processing_time_timer(rows.column("_timestamp")[0].as_py() + 5_000)

    def on_timer(self, key: Any, timer_ms: int, domain: str, ctx: ProcessContext) -> list[dict[str, Any]]:
        return [{"customer_id": key, "timer_ms": timer_ms, "domain": domain}]


def test_processing_time_timers_fire_when_the_injected_clock_passes_them(tmp_path: Path) -> None:
    keyed = KeyedProcessConfig(key="customer_id", function="tests.unit.test_stage_chain:RemindIn5s")
    config = orders(tmp_path).model_copy(update={"aggregate": None, "keyed": keyed})
    clock = ManualClock(START_TIME_MS)
    results = CollectingSink()
    runner = KeyedStageRunner(config, 1, sinks=[results], late_output=CollectingSink(), carry_trace=False, clock=clock)
    schema = compile_pipeline(config).stage_schema
    columns: dict[str, list[Any]] = {name: [None] for name in schema.names}
    columns.update(customer_id=["c1"], amount_cents=[100], _timestamp=[START_TIME_MS], _offset=[0], _partition=[0])
    runner.add(0, pa.RecordBatch.from_pydict(columns, schema=schema), START_TIME_MS)
    assert results.rows() == []

    clock.advance(4.9)
    runner.advance(0, START_TIME_MS)
    assert results.rows() == []
    clock.advance(0.2)
    runner.advance(0, START_TIME_MS)
    assert results.rows() == [{"customer_id": "c1", "timer_ms": START_TIME_MS + 5_000, "domain": "processing"}]


ORDER_CREATED_SAGA = Saga("created", "OrderCreated", (step("inventory"),))


def test_a_quiet_source_still_ticks_a_stage_with_processing_time_timers_so_a_timeout_fires(tmp_path: Path) -> None:
    """No more input after a saga's start: the source's idle loop (route_watermark) sends the same watermark once
    ``runtime.timer_tick_ms`` passed, and the saga's timeout fires on that tick."""
    keyed = SagaConfig(saga="tests.unit.test_stage_chain:ORDER_CREATED_SAGA", key="customer_id",
                       type_column="event_type", command_id_column="sku", reason_column="currency")  # fmt: skip
    config = orders(tmp_path, runtime__timer_tick_ms=500).model_copy(
        update={"aggregate": None, "keyed": keyed, "operators": []}
    )
    clock = ManualClock(START_TIME_MS)
    results = CollectingSink()
    runner = KeyedStageRunner(config, 1, sinks=[results], late_output=CollectingSink(), carry_trace=False, clock=clock)
    runners = Runners([runner])
    stage = SourceStage(compile_pipeline(config), dead_letter=CollectingSink(), backlogs=lambda: {0: 0}, clock=clock)
    stage.route_to(runners, {0: owner_of_group(config, 1)})
    stage.watermarks.opened(0)
    asyncio.run(stage.handle(raw_batch([order("c1", 100, START_TIME_MS)])))
    assert [row["message_type"] for row in results.rows()] == ["SagaStarted", "DoInventory"]

    clock.advance(0.3)
    asyncio.run(stage.route_watermark())
    sent = len(runners.sent)
    clock.advance(0.3)  # the same watermark, but a tick has passed since the owner heard from this source
    asyncio.run(stage.route_watermark())
    assert len(runners.sent) == sent + 1
    clock.advance(0.5)  # past the 1 s timeout
    asyncio.run(stage.route_watermark())
    failed = results.rows()[-1]
    assert (failed["message_type"], failed["deadline_ms"]) == ("StepFailed", START_TIME_MS + 1_000)
    assert failed["time_ms"] - failed["deadline_ms"] <= config.runtime.timer_tick_ms
