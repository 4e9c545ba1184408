"""The saga stage as a keyed process function (pipelines/sagas/process.py): starts and replies in batches, the
one deadline as a processing-time timer, and a snapshot taken mid-saga that restores its wait."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.config.pipeline import parse_config
from pipelines.config.saga import SagaConfig
from pipelines.sagas.contract import saga_output_schema
from pipelines.sagas.process import SagaProcess
from pipelines.stages.keyed_stage import open_keyed_operator
from pipelines.state.process_function import KeyedProcess
from tests.unit.test_saga_machine import SAGA

CONFIG = SagaConfig(saga="tests.unit.test_saga_machine:SAGA", topics={"inventory": "t.inventory"})
SCHEMA = pa.schema([("saga_id", pa.string()), ("message_type", pa.string()), ("command_id", pa.string()),
                    ("reason", pa.string()), ("amount_cents", pa.int64()), ("_timestamp", pa.int64()),
                    ("_traceparent", pa.string())])  # fmt: skip


def batch(*rows: dict[str, Any]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], SCHEMA)


def start(saga_id: str, amount_cents: int = 100) -> dict[str, Any]:
    return {"saga_id": saga_id, "message_type": "OrderPlaced", "amount_cents": amount_cents, "_timestamp": 1}


def reply(saga_id: str, reply_type: str, command: str) -> dict[str, Any]:
    return {"saga_id": saga_id, "message_type": reply_type, "command_id": f"{saga_id}:{command}", "_timestamp": 2}


def operator() -> KeyedProcess:
    return KeyedProcess("saga_id", SagaProcess(CONFIG, SAGA), facts={"saga": CONFIG.saga})


def rows_of(table: pa.Table | None) -> list[dict[str, Any]]:
    return [] if table is None else table.to_pylist()


def test_starts_and_replies_of_several_sagas_in_one_batch_emit_their_commands_in_the_output_schema() -> None:
    saga = operator()
    saga.advance_processing_time(1_000)
    added = saga.add(batch(start("a"), start("b"), reply("a", "InventoryDone", "inventory:1"), start("a")))
    assert added.output is not None and added.output.schema == saga_output_schema("saga_id")
    commands = [(r["saga_id"], r["command_id"], r["topic"]) for r in rows_of(added.output) if r["kind"] == "command"]
    assert commands == [("a", "a:inventory:1", "t.inventory"), ("a", "a:payment:1", "payment"),
                        ("b", "b:inventory:1", "t.inventory")]  # fmt: skip
    assert sum(r["message_type"] == "SagaStarted" for r in rows_of(added.output)) == 2  # "a" started once


def test_a_deadline_fires_as_a_processing_time_timer_and_survives_a_restore() -> None:
    saga = operator()
    saga.advance_processing_time(1_000)
    saga.add(batch(start("a")))
    assert rows_of(saga.advance_processing_time(1_999)) == []
    state = saga.snapshot()

    restored = operator()
    restored.restore(state, watermark_ms=0)
    fired = rows_of(restored.advance_processing_time(5_000))  # restored late: the timeout fires at once
    assert [(r["message_type"], r["deadline_ms"], r["time_ms"]) for r in fired] == [("StepFailed", 2_000, 5_000)]
    retried = rows_of(restored.advance_processing_time(5_100))  # after the backoff
    assert [r["command_id"] for r in retried if r["kind"] == "command"] == ["a:inventory:2"]
    restored.add(batch(reply("a", "InventoryDone", "inventory:2")))
    assert restored.state_rows == 2  # the saga's value and its one timer (the payment's timeout)


def test_a_finished_saga_is_forgotten_after_its_retention_and_a_stale_timer_changes_nothing() -> None:
    saga = operator()
    saga.advance_processing_time(0)
    saga.add(batch(start("a"), reply("a", "InventoryFailed", "inventory:1")))
    assert saga.state_rows == 2  # aborted; its retention timer
    assert rows_of(saga.advance_processing_time(10_000)) == [] and saga.state_rows == 0


def test_the_saga_stage_is_built_from_a_pipeline_config_and_checked_before_it_runs() -> None:
    config = parse_config({
        "name": "sagas", "source": {"type": "file", "paths": ["in.jsonl"]},
        "schema": {"fields": {"saga_id": "string", "message_type": "string", "command_id": "string",
                              "amount_cents": "int64", "at_ms": "int64"}, "event_time_field": "at_ms"},
        "keyed": {"type": "saga", "saga": "tests.unit.test_saga_machine:SAGA", "events_topic": "ev"},
        "sinks": [{"type": "jsonl", "path": "out"}],
    })  # fmt: skip
    assert isinstance(config.keyed, SagaConfig)
    built = open_keyed_operator(config, carry_trace=False)
    assert isinstance(built, KeyedProcess) and built.output_schema == saga_output_schema("saga_id")
