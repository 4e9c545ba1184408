"""The order views (configs/order-views.yaml, pipelines.examples.order_views): three chained process stages
(by order, by customer, by status) run in process by several senders and owners over order events with
redeliveries, each view compared with the reference recomputed from the events in plain Python."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import yaml

from pipelines.config.pipeline import PipelineConfig, load_config, parse_config
from pipelines.examples.order_views import (
    ORDER_CHANGES,
    ORDER_VIEWS_YAML,
    STATUS_COUNTS,
    STATUS_DELTAS,
    STATUSES,
    CustomerOrders,
    OrderStatus,
    order_events,
    order_views_on_kafka,
    order_views_reference,
)
from pipelines.stages.plan import compile_pipeline
from pipelines.state.process_function import KeyedProcess
from pipelines.testing import run_stages

START_MS = 1_767_225_600_000
PARTITIONS = 4


def test_the_config_loads_and_compiles_with_a_view_per_stage_each_fed_by_the_one_before() -> None:
    config = load_config(ORDER_VIEWS_YAML)
    compiled = compile_pipeline(config)
    assert {index: query.view for index, query in config.query_views.items()} == {
        0: "orders",
        1: "order_history",
        2: "dashboard",
    }
    assert [stage.keyed_stage.key for stage in config.keyed_stages] == ["aggregate_id", "customer_id", "status"]  # type: ignore[union-attr]
    assert [stage.output_schema for stage in compiled.stages] == [ORDER_CHANGES, STATUS_DELTAS, STATUS_COUNTS]
    assert [stage.input_schema for stage in compiled.stages[1:]] == [ORDER_CHANGES, STATUS_DELTAS]
    assert compiled.result_columns == ("status", "orders")
    position = config.query_views[0].position
    assert position is not None and (position.aggregate_column, position.version_column) == ("aggregate_id", "version")


def test_order_events_place_each_order_first_then_move_it_on_as_the_order_aggregate_writes() -> None:
    events = order_events(600, 250, 40, seed=3, start_time_ms=START_MS)
    assert events == order_events(600, 250, 40, seed=3, start_time_ms=START_MS)
    assert len(events) == 600 and len({e["command_id"] for e in events}) == 600
    by_order: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_order.setdefault(event["aggregate_id"], []).append(event)
    for order, history in by_order.items():
        assert [e["version"] for e in history] == list(range(1, len(history) + 1)), order
        kinds = [e["event_type"] for e in history]
        assert kinds in (["Placed"], ["Placed", "Paid"], ["Placed", "Paid", "Shipped"], ["Placed", "Cancelled"],
                         ["Placed", "Paid", "Cancelled"]), kinds  # fmt: skip
        datas = [msgspec.json.decode(e["data"]) for e in history]
        assert {(d["customer_id"], d["amount_cents"]) for d in datas} == {(datas[0]["customer_id"],
                                                                            datas[0]["amount_cents"])}  # fmt: skip
        assert all(d["at_ms"] == e["_timestamp"] for d, e in zip(datas, history, strict=True))
    last = Counter(history[-1]["event_type"] for history in by_order.values())
    assert set(last) == {"Placed", "Paid", "Shipped", "Cancelled"}, "some orders are left mid-way"


def test_redeliveries_are_copies_of_earlier_events_written_later() -> None:
    events = order_events(500, 200, 30, seed=4, start_time_ms=START_MS)
    again = order_events(500, 200, 30, seed=4, start_time_ms=START_MS, redelivered_fraction=0.2)
    assert len(again) > len(events) + 50
    firsts: dict[str, int] = {}
    for index, event in enumerate(again):
        firsts.setdefault(event["command_id"], index)
    assert [again[index] for index in sorted(firsts.values())] == events, "the events, in order, once each"
    newest: dict[str, int] = {}
    stale = 0
    for index, event in enumerate(again):
        stale += firsts[event["command_id"]] != index and newest[event["aggregate_id"]] > event["version"]
        newest[event["aggregate_id"]] = max(newest.get(event["aggregate_id"], 0), event["version"])
    assert stale > 0, "some copies come after a newer version of their order"


def envelope(order: str, version: int, kind: str, customer: str = "cust-1", amount: int = 900) -> dict[str, Any]:
    data = json.dumps({"customer_id": customer, "amount_cents": amount, "at_ms": version})
    return {"aggregate_id": order, "version": version, "event_type": kind, "schema_version": 1, "data": data,
            "command_id": f"c-{order}-{version}", "_timestamp": START_MS + version}  # fmt: skip


def test_the_reference_on_a_few_events_redelivered_and_of_a_kind_it_does_not_know() -> None:
    events = [envelope("o1", 1, "Placed"), envelope("o2", 1, "Placed", "cust-2", 50), envelope("o1", 2, "Paid"),
              envelope("o1", 1, "Placed"), envelope("o2", 2, "Cancelled", "cust-2", 50), envelope("o1", 3, "Shipped"),
              envelope("o1", 2, "Paid"), envelope("o3", 1, "Placed"), envelope("o3", 2, "Gifted")]  # fmt: skip

    orders, histories, dashboard = order_views_reference(events)

    assert orders == {
        "o1": {"status": "shipped", "customer_id": "cust-1", "amount_cents": 900, "version": 3},
        "o2": {"status": "cancelled", "customer_id": "cust-2", "amount_cents": 50, "version": 2},
        "o3": {"status": "placed", "customer_id": "cust-1", "amount_cents": 900, "version": 2},
    }
    assert histories == {
        "cust-1": [{"order_id": "o1", "status": "shipped", "amount_cents": 900, "version": 3},
                   {"order_id": "o3", "status": "placed", "amount_cents": 900, "version": 2}],
        "cust-2": [{"order_id": "o2", "status": "cancelled", "amount_cents": 50, "version": 2}],
    }  # fmt: skip
    assert dashboard == {"cancelled": 1, "paid": 0, "placed": 1, "shipped": 1}


def test_a_redelivered_or_older_event_changes_no_view_and_emits_nothing() -> None:
    orders = KeyedProcess("aggregate_id", OrderStatus())
    first = [envelope("o1", 1, "Placed"), envelope("o1", 2, "Paid")]
    emitted = orders.add(pa.RecordBatch.from_pylist(first)).output
    assert emitted is not None and emitted.schema == ORDER_CHANGES
    assert emitted.select(["status", "previous_status", "version"]).to_pylist() == [
        {"status": "placed", "previous_status": None, "version": 1},
        {"status": "paid", "previous_status": "placed", "version": 2},
    ]
    assert orders.add(pa.RecordBatch.from_pylist(first[::-1])).output is None
    assert orders.view(frozen=True).values(["o1"]) == [
        {"status": "paid", "customer_id": "cust-1", "amount_cents": 900, "version": 2}
    ]

    customers = KeyedProcess("customer_id", CustomerOrders())
    deltas = customers.add(emitted.to_batches()[0]).output
    assert deltas is not None and deltas.select(["status", "delta"]).to_pylist() == [
        {"status": "placed", "delta": 1},
        {"status": "placed", "delta": -1},
        {"status": "paid", "delta": 1},
    ]
    assert customers.add(emitted.slice(0, 1).to_batches()[0]).output is None, "version 1 is older than the one held"
    assert customers.view(frozen=True).values(["cust-1"]) == [
        [{"order_id": "o1", "status": "paid", "amount_cents": 900, "version": 2}]
    ]


def views_in_process(tmp_path: Path, events: list[dict[str, Any]]) -> PipelineConfig:
    """The order views reading ``events`` from files, an order's events in one of them (as a topic keyed by
    order id holds them), in their order."""
    paths = [tmp_path / f"events-{part}.jsonl" for part in range(PARTITIONS)]
    parts: list[list[str]] = [[] for _ in paths]
    for event in events:
        parts[zlib.crc32(event["aggregate_id"].encode()) % PARTITIONS].append(json.dumps(event) + "\n")
    for path, lines in zip(paths, parts, strict=True):
        path.write_text("".join(lines), encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(ORDER_VIEWS_YAML.read_text(encoding="utf-8"))
    data.pop("kafka")
    data.update(source={"type": "file", "paths": [str(path) for path in paths]}, tracing={"enabled": False},
                sinks=[{"type": "console"}], dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")})  # fmt: skip
    return parse_config(data)


@pytest.mark.parametrize(("senders", "owners", "batch_size"), [(1, 1, 4096), (2, 3, 50), (4, 2, 17)])
def test_the_views_run_in_process_equal_the_reference_recomputed_from_the_events(
    tmp_path: Path, senders: int, owners: int, batch_size: int
) -> None:
    events = order_events(2_000, 900, 60, seed=11, start_time_ms=START_MS, redelivered_fraction=0.1)
    orders, histories, dashboard = order_views_reference(events)

    run = run_stages(views_in_process(tmp_path, events), senders=senders, owners=owners, batch_size=batch_size)

    assert run.events_in == len(events) and run.dead_letters.num_rows == 0 and run.late.num_rows == 0
    assert run.view(0, sorted(orders)) == [orders[key] for key in sorted(orders)]
    assert run.view(1, sorted(histories)) == [histories[key] for key in sorted(histories)]
    assert run.view(2, list(STATUSES)) == [dashboard.get(status) for status in STATUSES]
    held = [sum(runner.operator.state_rows for runner in run.owners[stage]) for stage in range(3)]
    assert held == [len(orders), len(histories), len(dashboard)], "no key the reference lacks"
    assert sum(dashboard.values()) == len(orders), "every order placed is counted in one status"
    assert set(dashboard) == set(STATUSES) and min(dashboard.values()) > 0
    counts = {row["status"]: row["orders"] for row in run.results.rows()}  # the last count of each status
    assert counts == dashboard


def test_order_views_on_kafka_reads_the_topic_given_in_its_own_group(tmp_path: Path) -> None:
    data = order_views_on_kafka("views-1", "127.0.0.1:9092", "shop.events", tmp_path)
    config = parse_config(data)
    assert (data["source"]["topic"], data["source"]["group_id"], config.name) == ("shop.events", "views-1", "views-1")
    assert config.checkpoint is not None and config.checkpoint.uri == str(tmp_path / "checkpoints")
    compile_pipeline(config)
