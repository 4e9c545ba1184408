"""The saga stage as a keyed process function (pipelines/sagas/process.py): starts and replies in batches, the
one deadline as a processing-time timer, and a snapshot taken mid-saga that restores its wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipelines.config.pipeline import parse_config
from pipelines.config.saga import SagaConfig
from pipelines.errors import ConfigError
from pipelines.sagas.contract import saga_output_schema
from pipelines.sagas.definition import Command, Step
from pipelines.sagas.process import SagaProcess
from pipelines.stages.keyed_stage import open_keyed_operator
from pipelines.stages.plan import compile_pipeline
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


def saga_pipeline(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """A saga pipeline on Kafka (nothing runs: compiled only); ``changes`` replace top-level fields."""
    return {
        "name": "sagas", "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "inputs": {
            "starts": {"source": {"type": "kafka", "topic": "starts"},
                       "schema": {"fields": {"saga_id": "string", "message_type": "string", "amount_cents": "int64",
                                             "at_ms": "int64"}, "event_time_field": "at_ms"}},
            "replies": {"source": {"type": "kafka", "topic": "saga-replies"},
                        "schema": {"fields": {"saga_id": "string", "message_type": "string", "command_id": "string",
                                              "reason": "string", "at_ms": "int64"}, "event_time_field": "at_ms"}},
        },
        "keyed": {"type": "saga", "saga": "tests.unit.test_saga_machine:SAGA", "topics": {"inventory": "t.inventory"}},
        "sinks": [{"type": "kafka", "topic": "saga-events", "topic_column": "topic", "key_column": "saga_id",
                   "topics": ["saga-events", "saga-stuck", "t.inventory", "payment", "shipping"]}],
        "delivery": "exactly_once", "checkpoint": {"uri": str(tmp_path / "checkpoints")},
        **changes,
    }  # fmt: skip


def test_the_saga_stage_is_built_from_a_pipeline_config_and_checked_before_it_runs(tmp_path: Path) -> None:
    config = parse_config(saga_pipeline(tmp_path))
    assert isinstance(config.keyed, SagaConfig)
    compile_pipeline(config)
    built = open_keyed_operator(config, carry_trace=False)
    assert isinstance(built, KeyedProcess) and built.output_schema == saga_output_schema("saga_id")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"delivery": "at_least_once"}, "keyed \\(saga\\) needs delivery: exactly_once"),
        (
            {"sinks": [{"type": "kafka", "topic": "saga-events", "topic_column": "topic", "topics": ["saga-events"]}]},
            "sinks.0: a saga's Kafka sink must be keyed by the saga id",
        ),
    ],
)
def test_a_saga_pipeline_that_could_lose_or_reorder_commands_is_refused(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(saga_pipeline(tmp_path, **changes))


@pytest.mark.parametrize(
    ("keyed", "sink_topics", "message"),
    [
        ({"command_id_column": "answers"}, None, "keyed.command_id_column: unknown column 'answers'"),
        ({"reply_columns": ["payment_id"]}, None, "keyed.reply_columns: unknown column\\(s\\) \\['payment_id'\\]"),
        ({"topics": {"inventry": "t.inventory"}}, None, "keyed.topics: \\['inventry'\\] name no topic"),
        ({"events_topic": "payment"}, None, "is also a topic the saga sends commands to"),
        ({"replies_topic": "replies"}, None, "keyed.replies_topic: participants reply on 'replies', which no input"),
        ({}, ["saga-events", "t.inventory"], "sinks.0: .* \\(missing: \\['payment', 'saga-stuck', 'shipping'\\]\\)"),
    ],
)
def test_a_saga_stage_that_disagrees_with_its_definition_fails_at_compile_time_naming_the_field(
    tmp_path: Path, keyed: dict[str, Any], sink_topics: list[str] | None, message: str
) -> None:
    data = saga_pipeline(tmp_path)
    data["keyed"] = {**data["keyed"], **keyed}
    if sink_topics is not None:
        data["sinks"][0]["topics"] = sink_topics
    with pytest.raises(ConfigError, match=message):
        compile_pipeline(parse_config(data))


def test_a_definition_whose_compensation_goes_elsewhere_is_refused() -> None:
    with pytest.raises(ConfigError, match="send both to one topic"):
        Step("a", Command("t", "Do"), "Ok", "No", compensation=Command("u", "Undo"), compensated="Undone")
