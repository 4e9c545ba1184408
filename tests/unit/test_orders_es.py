"""The orders example of event sourcing (configs/orders-es.yaml, pipelines.examples.accounts: Order and
order_commands): its command files are the generator's, and the pipeline run in process equals the sequential
reference (pipelines/verify/event_store_check.py)."""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import yaml

from pipelines.config.pipeline import load_config, parse_config
from pipelines.config.state import EventSourcedConfig
from pipelines.examples.accounts import ORDERS_ES_YAML, Order, order_commands
from pipelines.stages.plan import compile_pipeline
from pipelines.state.event_sourced import ACCEPTED, REJECTED
from pipelines.testing import run_stages
from pipelines.verify.event_store_check import CommandReply, StoredEvent, check_event_store, recompute_event_store

START_MS = 1_767_225_600_000
COMMANDS_DIR = ORDERS_ES_YAML.parent / "data" / "orders"
ORDER = "pipelines.examples.accounts:Order"


def stored_commands() -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for path in sorted(COMMANDS_DIR.glob("commands-*.jsonl"))
            for line in path.read_bytes().splitlines()]  # fmt: skip


def test_the_command_files_are_the_generators_split_by_order_as_its_header_says() -> None:
    commands = order_commands(100, 30, 300, seed=7, start_time_ms=START_MS, step_ms=250)
    files = sorted(COMMANDS_DIR.glob("commands-*.jsonl"))
    assert [path.name for path in files] == [f"commands-{part}.jsonl" for part in range(4)]
    for part, path in enumerate(files):
        written = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
        assert written == [c for c in commands if zlib.crc32(c["aggregate_id"].encode()) % 4 == part]


def test_order_commands_are_reproducible_and_start_each_order_with_a_place() -> None:
    commands = order_commands(20, 5, 120, seed=3, start_time_ms=START_MS)
    assert commands == order_commands(20, 5, 120, seed=3, start_time_ms=START_MS)
    assert len(commands) == 120 and len({c["command_id"] for c in commands}) < 120, "resends repeat an id"
    first_kinds = {c["aggregate_id"]: c["command_type"] for c in reversed(commands)}  # the first one wins
    assert set(first_kinds.values()) == {"Place"}
    assert all(c["customer_id"] is None for c in commands if c["command_type"] != "Place")
    assert {c["customer_id"] for c in commands if c["command_type"] == "Place"} - {None} <= {
        f"cust-{index:05d}" for index in range(5)
    }


def results_config(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ORDERS_ES_YAML.read_text(encoding="utf-8"))
    data["source"]["paths"] = [str(COMMANDS_DIR / "commands-*.jsonl")]
    data.update(sinks=[{"type": "jsonl", "path": str(tmp_path / "out")}],
                dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")}, tracing={"enabled": False})  # fmt: skip
    return data


def as_stored(rows: list[dict[str, Any]]) -> tuple[list[StoredEvent], list[CommandReply]]:
    stored = [StoredEvent.of_row(row) for row in rows if row["topic"] == "order-events"]
    answered = [CommandReply.of_row(row) for row in rows if row["topic"] == "order-replies"]
    return stored, answered


def test_the_orders_example_run_in_process_by_several_owners_equals_the_reference(tmp_path: Path) -> None:
    run = run_stages(parse_config(results_config(tmp_path)), senders=2, owners=3, batch_size=32)
    commands = [{**row, "_timestamp": row["issued_ms"]} for row in stored_commands()]
    expected = recompute_event_store(Order(), commands, EventSourcedConfig(aggregate=ORDER))
    report = check_event_store(*expected, *as_stored(run.results.rows()))
    assert report.failures() == [] and run.events_in == len(commands) == report.replies


def test_the_orders_example_places_pays_ships_cancels_rejects_and_leaves_orders_mid_way(tmp_path: Path) -> None:
    rows = run_stages(parse_config(results_config(tmp_path))).results.rows()
    events = [row for row in rows if row["topic"] == "order-events"]
    statuses = {event["aggregate_id"]: event["event_type"] for event in sorted(events, key=lambda e: e["version"])}
    assert set(Counter(statuses.values())) == {"Placed", "Paid", "Shipped", "Cancelled"}
    assert all(event["event_type"] == "Placed" for event in events if event["version"] == 1)
    assert all(msgspec.json.decode(event["data"])["customer_id"].startswith("cust-") for event in events)
    reasons = [row["reason"] for row in rows if row["topic"] == "order-replies" and row["status"] == REJECTED]
    assert any(reason.startswith("a Place needs a customer_id") for reason in reasons)
    assert any("expected version" in reason for reason in reasons)
    assert any(row["status"] == ACCEPTED and row["duplicate"] for row in rows if row["topic"] == "order-replies")


def test_the_orders_config_runs_order_and_routes_events_and_replies_by_topic() -> None:
    config = load_config(ORDERS_ES_YAML)
    keyed = config.keyed
    assert isinstance(keyed, EventSourcedConfig) and keyed.aggregate == ORDER
    assert (keyed.events_topic, keyed.replies_topic) == ("order-events", "order-replies")
    assert config.schema_ is not None and config.schema_.fields["customer_id"] == "string"
    assert compile_pipeline(config).result_columns[:2] == ("aggregate_id", "topic")
